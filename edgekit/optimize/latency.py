"""How long a candidate takes on the target: measured with ONNX Runtime on this CPU (the harness
behind ``edgekit profile --device cpu``), or, for a board that is not here, estimated by the cost
model of :mod:`edgekit.estimate` and labelled so. The search compares candidates by the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from edgekit.bench.harness import HarnessSettings, timed_loop
from edgekit.runtime.onnxruntime import OnnxRuntimeRunner
from edgekit.stats import Summary

MEASURED = "measured"
ESTIMATED = "estimated"


@dataclass
class Timing:
    """One latency figure: the median (ms), how it was obtained, and its spread when measured."""

    median_ms: float
    kind: str                      # MEASURED | ESTIMATED
    p90_ms: Optional[float] = None
    cv_percent: Optional[float] = None
    count: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def measure_cpu(model, feeds: Dict[str, np.ndarray], duration_s: float = 0.5, threads: Optional[int] = 1,
                warmup_ms: float = 100.0, windows: int = 2) -> Timing:
    """Median latency of ``model`` (ModelProto) on ONNX Runtime CPU for ``feeds``, timed with the
    profile harness's loop (warm-up, then ``windows`` windows of ``duration_s / windows`` and at
    least 10 queries each). The lowest window median is kept: on a shared machine a burst of load
    from elsewhere lands in one window and would otherwise decide a candidate's fate."""
    settings = HarnessSettings(warmup_ms=warmup_ms, duration_s=duration_s / windows, iterations=10, threads=threads)
    best: Optional[Summary] = None
    with OnnxRuntimeRunner(model, threads=threads) as runner:
        raw = runner.run_raw
        for _ in range(windows):
            times, _, _, _ = timed_loop(lambda: raw(feeds), settings)
            s = Summary.of(times)
            best = s if best is None or s.median < best.median else best
    s = best
    return Timing(median_ms=s.median, kind=MEASURED, p90_ms=s.p90, cv_percent=s.cv_percent, count=s.count)


def estimate(model, device: str, precision: str, batch: int) -> Timing:
    """The cost model's latency for ``model`` on ``device`` at ``precision`` (never measured)."""
    from edgekit.estimate import estimate_latency  # lazy: the cost model loads its parameter file

    est = estimate_latency(model, device, precision, batch)
    return Timing(median_ms=float(est.latency_ms), kind=ESTIMATED)
