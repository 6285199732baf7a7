"""``estimate_cpu``: ONNX Runtime CPU latency on this machine, predicted rather than measured.

The model is turned into the kernels ORT runs (:mod:`edgekit.estimate.cpu_fuse`: its fusions and
layout reorders); each kernel costs a per-kernel overhead plus its work times this host's fitted
coefficients (:mod:`edgekit.estimate.cpu_calib`, calibrated once per host and thread count and
cached). Kernels run one after another on the intra-op thread pool (ORT's sequential executor),
so the latency is their sum plus a per-run overhead. The error band shipped in
``params/cpu_band.json`` was measured by ``bench/estimate_cpu.py`` against ``edgekit profile`` on
the built-in corpus; on another host it is an indication, not a guarantee.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional, Sequence

from edgekit.estimate.cpu_calib import Calibration, calibration
from edgekit.estimate.cpu_fuse import Kernel, featurize
from edgekit.estimate.result import ErrorBand, Estimate, LayerEstimate

BAND_FILE = os.path.join(os.path.dirname(__file__), "params", "cpu_band.json")

# cost class -> the op label a layer table shows
LABELS = {"conv3": "conv", "conv1": "conv1x1", "convg": "conv-grouped", "dwconv": "depthwise", "gemm": "gemm",
          "eltwise": "eltwise", "transc": "activation", "norm": "norm", "pool": "pool", "reduce": "reduce",
          "move": "data-movement", "view": "view", "unmodelled": "unmodelled"}
_COMPUTE = {"conv3.gmac", "conv1.gmac", "convg.gmac", "dwconv.gmac", "gemm.gmac", "transc.melem"}
_OVERHEAD = {"kernel", "view"}


def error_band(path: str = BAND_FILE) -> Optional[ErrorBand]:
    """The measured band of this estimator (None when the package ships none)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return ErrorBand(median_abs_pct=float(data["median_abs_pct"]), within_10_pct=float(data["within_10_pct"]),
                     within_25_pct=float(data["within_25_pct"]), n=int(data["n"]), method=str(data["method"]))


def _layer(k: Kernel, params: Dict[str, float]) -> LayerEstimate:
    parts = {"compute": 0.0, "memory": 0.0, "overhead": 0.0}
    for f, v in k.features.items():
        us = params.get(f, 0.0) * v
        parts["compute" if f in _COMPUTE else "overhead" if f in _OVERHEAD else "memory"] += us
    bound = "unmodelled" if k.cls == "unmodelled" else max(parts, key=lambda p: parts[p])
    op = LABELS.get(k.cls, k.cls)
    if k.cls == "unmodelled":
        op = f"unmodelled:{k.op_type}"
    return LayerEstimate(name=k.name, op=op, nodes=list(k.nodes) or [k.op_type], out_shape=list(k.out_shape),
                         macs=int(k.macs), bytes_moved=int(k.bytes_moved), us=float(sum(parts.values())), bound=bound)


def estimate_from(kernels: Sequence[Kernel], cal: Calibration, batch: int = 1) -> Estimate:
    """The estimate of already-featurized kernels under calibration ``cal``."""
    layers = [_layer(k, cal.params) for k in kernels]
    run_us = cal.params.get("run", 0.0)
    unmodelled = sorted({k.op_type for k in kernels if k.cls == "unmodelled"})
    notes = [f"ONNX Runtime CPU ({cal.key.get('onnxruntime')}), {cal.key.get('threads')} intra-op threads, "
             f"on {cal.key.get('cpu')}: calibrated {'from cache' if cal.from_cache else 'now'} "
             f"({cal.fit_median_abs_pct:.0f} % median fit error on the micro-benchmarks)",
             f"includes {run_us:.0f} us of per-run overhead"]
    if unmodelled:
        notes.append("costed by bytes moved only: " + ", ".join(unmodelled))
    band = error_band()
    if band is not None:
        notes.append(f"error band measured on {band.n} models of the built-in corpus on the machine named "
                     "in its method; this host may differ")
    latency = (sum(layer.us for layer in layers) + run_us) / 1000.0
    return Estimate(device="cpu", precision="fp32", batch=int(batch), latency_ms=latency, layers=layers,
                    error_band=band, unmodelled=unmodelled, notes=notes, params_version=cal.version)


def estimate_cpu(model, *, batch: int = 1, shapes: Optional[Dict[str, Sequence[int]]] = None,
                 cache_dir: Optional[os.PathLike] = None, recalibrate: bool = False,
                 progress: Optional[Callable[[int, int, str], None]] = None,
                 threads: Optional[int] = None) -> Estimate:
    """Estimated ONNX Runtime CPU latency of ``model`` (an ``onnx.ModelProto``) on this machine.

    ``batch`` fills a symbolic axis 0; ``shapes`` gives any input's full shape (required for other
    symbolic axes: :class:`~edgekit.errors.InputError` names the input otherwise). The first call on
    a host (or with ``recalibrate``) runs the ~15 s calibration, reporting ``progress(done, total,
    label)``; later calls reuse the cache. ``threads``: ORT intra-op threads (None: ORT's default,
    as ``edgekit profile`` uses)."""
    kernels = featurize(model, batch=batch, shapes=shapes, threads=threads)  # shape errors before any calibration
    cal = calibration(threads=threads, cache_dir=cache_dir, recalibrate=recalibrate, progress=progress)
    return estimate_from(kernels, cal, batch)
