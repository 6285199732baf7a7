"""Latency statistics named and computed the way trtexec computes them: :class:`Summary` of one
metric and :class:`LatencyReport`, what every runner and the harness return.

trtexec sorts the per-query times and reports min, max, mean, median (mean of the two middle values
for an even count) and percentile(p) = sorted[max(n - 1 - floor((1 - p/100) * n), 0)], i.e. the
value below which at least p % of the queries fall, rounded towards the slower side. Throughput is
queries (times batch) over the host wall time of the timed region, not 1 / mean latency, so
host-side gaps between queries show up in it. The coefficient of variation (stddev / mean) is what
trtexec 8.4+ warns about ("GPU compute time is unstable") above 1 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

PERCENTILES = (90, 95, 99)
# trtexec warns above 1 % (8.4-10.x) and 2.5 % (11.x) for GPU compute. A CPU run shares its cores
# with the OS, so edgekit's default threshold for host measurements is looser; both are reported.
CV_WARN_PERCENT = 1.0


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """trtexec's percentile on an ascending sequence (see module docstring)."""
    n = len(sorted_values)
    if n == 0:
        return math.inf
    if not 0.0 <= p <= 100.0:
        raise ValueError("percentile must be in [0, 100]")
    # trtexec does this in float32; in float64 (1 - 0.9) * 100 is 9.999..., which would shift the index
    f32 = np.float32
    exclude = int((f32(1.0) - f32(p) / f32(100.0)) * f32(n))
    return float(sorted_values[max(n - 1 - exclude, 0)])


def median(sorted_values: Sequence[float]) -> float:
    n = len(sorted_values)
    if n == 0:
        return math.inf
    m = n // 2
    if n % 2:
        return float(sorted_values[m])
    return (float(sorted_values[m - 1]) + float(sorted_values[m])) / 2.0


@dataclass
class Summary:
    """min/max/mean/median/p90/p95/p99 (ms) of one metric, plus stddev and CV (%)."""

    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    stddev: float
    cv_percent: float
    count: int

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> "Summary":
        vals = sorted(float(v) for v in values_ms)
        n = len(vals)
        if n == 0:
            raise ValueError("no timings to summarise")
        mean = sum(vals) / n
        var = sum((v - mean) ** 2 for v in vals) / n
        sd = math.sqrt(var)
        return cls(
            min=vals[0], max=vals[-1], mean=mean, median=median(vals),
            p90=percentile(vals, 90), p95=percentile(vals, 95), p99=percentile(vals, 99),
            stddev=sd, cv_percent=(sd / mean * 100.0) if mean > 0 else 0.0, count=n,
        )

    def to_dict(self) -> Dict[str, float]:
        return {"min": self.min, "max": self.max, "mean": self.mean, "median": self.median,
                "p90": self.p90, "p95": self.p95, "p99": self.p99}


@dataclass
class LatencyReport:
    """The result of one harness run: what every backend returns, whatever measured it.

    ``to_dict`` gives the JSON contract: ``latency_ms.{min,max,mean,median,p90,p95,p99}``,
    ``throughput_qps``, ``backend``, ``device``, ``model``; backends that time device phases add
    ``gpu_compute_ms``, ``h2d_ms``, ``d2h_ms`` (same statistics), telemetry adds ``power_mw`` and
    ``energy_mj_per_inference``.
    """

    model: str
    backend: str
    device: str
    latency: Summary
    throughput_qps: float
    walltime_s: float
    iterations: int
    warmup_iterations: int
    batch: int = 1
    times_ms: List[float] = field(default_factory=list)
    phases: Dict[str, Summary] = field(default_factory=dict)  # gpu_compute_ms, h2d_ms, d2h_ms, enqueue_ms
    settings: Dict[str, object] = field(default_factory=dict)
    environment: Dict[str, object] = field(default_factory=dict)
    extra: Dict[str, object] = field(default_factory=dict)  # telemetry, per-layer profile, ...
    warnings: List[str] = field(default_factory=list)

    @classmethod
    def from_times(cls, model: str, backend: str, device: str, times_ms: Sequence[float], walltime_s: float,
                   warmup_iterations: int = 0, batch: int = 1, cv_warn_percent: float = CV_WARN_PERCENT,
                   **kwargs: object) -> "LatencyReport":
        summary = Summary.of(times_ms)
        n = len(times_ms)
        qps = batch * n / walltime_s if walltime_s > 0 else math.inf
        rep = cls(model=model, backend=backend, device=device, latency=summary, throughput_qps=qps,
                  walltime_s=walltime_s, iterations=n, warmup_iterations=warmup_iterations, batch=batch,
                  times_ms=[float(t) for t in times_ms], **kwargs)  # type: ignore[arg-type]
        if summary.cv_percent > cv_warn_percent:
            rep.warnings.append(
                f"latency is unstable: coefficient of variation {summary.cv_percent:.2f}% "
                f"(threshold {cv_warn_percent:g}%); lock clocks, close other programs, or run longer")
        return rep

    def to_dict(self, include_times: bool = True) -> Dict[str, object]:
        d: Dict[str, object] = {
            "model": self.model,
            "backend": self.backend,
            "device": self.device,
            "latency_ms": self.latency.to_dict(),
            "throughput_qps": self.throughput_qps,
            "cv_percent": self.latency.cv_percent,
            "stddev_ms": self.latency.stddev,
            "iterations": self.iterations,
            "warmup_iterations": self.warmup_iterations,
            "walltime_s": self.walltime_s,
            "batch": self.batch,
            "settings": self.settings,
            "environment": self.environment,
            "warnings": list(self.warnings),
        }
        for name, s in self.phases.items():
            d[name] = s.to_dict()
        d.update(self.extra)
        if include_times:
            d["times_ms"] = self.times_ms
        return d
