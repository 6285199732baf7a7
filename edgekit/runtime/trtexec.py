"""trtexec runner: time an engine by running NVIDIA's own ``trtexec`` binary.

This is the practical path on TX2 / JetPack 4 (Python 3.6, no usable TensorRT wheel for the rest
of edgekit) and a cross-check everywhere else: trtexec's numbers are the ones NVIDIA and forum
threads quote. ``benchmark()`` runs trtexec once with the harness settings (warm-up, duration,
iterations, shapes, CUDA graph, data transfers) and ``--exportTimes``; the per-query records are
summarised with edgekit's own trtexec-compatible statistics, so percentiles are available even
from trtexec versions that print only one (8.0-8.4). The console summary is the fallback when the
JSON is missing.

``infer()`` is possible too (``--loadInputs`` / ``--exportOutput``) but slow: one process per call.

Only the fake-``trtexec`` tests (a script replaying recorded logs) ran here; see docs/tensorrt.md.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from edgekit.devices import get_profile
from edgekit.errors import BuildError, InputError, ShapeError
from edgekit.graph.io import TensorSpec
from edgekit.runtime.base import Runner
from edgekit.stats import LatencyReport, Summary
from edgekit.trt.manifest import check_engine_compatible, read_manifest
from edgekit.trt.trtexec import benchmark_command, find_trtexec, format_command, run_trtexec
from edgekit.trt.trtexec_log import parse_export_profile, parse_export_times

_PHASES = (("gpu_compute_ms", "gpu_compute_time"), ("h2d_ms", "h2d_latency"), ("d2h_ms", "d2h_latency"),
           ("enqueue_ms", "enqueue_time"))


def _summary_from_stat(stat, cv: Optional[float] = None, count: int = 0) -> Summary:
    """A Summary from one printed statistics line. trtexec prints no standard deviation: with the
    CV it printed (``cv``, GPU compute when unstable) the spread is exact, otherwise stddev / CV
    are the largest any data with that min, mean and max can have (Bhatia-Davis bound)."""
    p = stat.percentiles
    if cv is not None:
        sd = cv * stat.mean / 100.0
    else:
        sd = math.sqrt(max(0.0, (stat.max - stat.mean) * (stat.mean - stat.min)))
        cv = sd / stat.mean * 100.0 if stat.mean > 0 else 0.0
    return Summary(min=stat.min, max=stat.max, mean=stat.mean, median=stat.median, p90=p.get(90.0),
                   p95=p.get(95.0), p99=p.get(99.0), stddev=sd, cv_percent=cv, count=count)


def report_from_log(log, model: str, device: str, batch: int = 1, settings: Optional[dict] = None) -> LatencyReport:
    """A LatencyReport from trtexec's printed summary (when no --exportTimes JSON is available).

    Percentiles trtexec did not print (p90/p95 before 8.5) are None, so the JSON says "unknown"
    rather than inventing a number; stddev / CV are upper bounds (see :func:`_summary_from_stat`)
    and the report says so; a throughput trtexec did not print comes from the query count and
    wall time, or from the mean latency.
    """
    if not log.has_summary or "latency" not in log.metrics:
        raise BuildError(f"trtexec printed no performance summary ({log.no_summary_reason})",
                         hint="rerun without --dumpProfile, or with --separateProfileRun")
    walltime = log.total_host_walltime_s or log.trace_seconds
    qps, qps_source = log.throughput_qps, "trtexec"
    if qps is None and log.trace_queries and walltime:
        qps, qps_source = log.trace_queries / walltime, "queries / walltime"
    elif qps is None:
        mean = log.metrics["latency"].mean
        qps, qps_source = (1000.0 / mean if mean > 0 else math.inf), "1000 / mean latency"
    n = log.trace_queries or (int(round(qps * walltime)) if walltime and math.isfinite(qps) else 0)
    rep = LatencyReport(model=model, backend="trtexec", device=device,
                        latency=_summary_from_stat(log.metrics["latency"], count=n),
                        throughput_qps=qps, walltime_s=walltime if walltime is not None else 0.0,
                        iterations=n, warmup_iterations=0, batch=batch, settings=dict(settings or {}))
    for key, metric in _PHASES:
        if metric in log.metrics:
            cv = log.gpu_compute_cv_percent if key == "gpu_compute_ms" else None
            rep.phases[key] = _summary_from_stat(log.metrics[metric], cv=cv, count=n)
    rep.warnings.extend(log.summary_warnings)
    rep.warnings.append("trtexec left no --exportTimes file: statistics from its printed summary; stddev and CV "
                        "are upper bounds from min/mean/max (trtexec prints no standard deviation)")
    rep.extra["latency_source"] = "trtexec console summary"
    rep.extra["spread"] = "upper bound (Bhatia-Davis: sqrt((max-mean)*(mean-min)))"
    rep.extra["throughput_source"] = qps_source
    return rep


def report_from_times(times, log, model: str, device: str, batch: int = 1,
                      settings: Optional[dict] = None) -> LatencyReport:
    """A LatencyReport recomputed from ``--exportTimes`` records (every percentile, any version)."""
    rep = LatencyReport.from_times(model, "trtexec", device, times.latency_ms, times.walltime_s, batch=batch,
                                   settings=dict(settings or {}))
    sums = times.summaries()
    for key, _ in _PHASES:
        if key in sums:
            rep.phases[key] = sums[key]
    if log is not None:
        rep.warnings.extend(log.summary_warnings)
    rep.extra["latency_source"] = "trtexec --exportTimes"
    return rep


class TrtexecRunner(Runner):
    name = "trtexec"

    def __init__(self, model, device: Optional[str] = None, trt_version: Optional[str] = None,
                 trtexec: Optional[str] = None, shapes: Optional[Mapping[str, Tuple[int, ...]]] = None,
                 dla_core: Optional[int] = None, check_manifest: bool = True, timeout: Optional[float] = None, **_: object):
        super().__init__()
        self.engine_path = Path(model)
        self.device = device
        self.trt_version = trt_version
        self.trtexec = trtexec
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self.dla_core = dla_core
        self.check_manifest = check_manifest
        self.timeout = timeout
        self.manifest: Optional[dict] = None
        self.last_log = None
        self._timing: Optional[Dict[str, float]] = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    def _activate(self) -> None:
        if not self.engine_path.exists():
            raise InputError(f"no such engine: {self.engine_path}", hint="build one with `edgekit build`")
        if self.engine_path.suffix.lower() == ".onnx":
            raise InputError(f"{self.engine_path} is an ONNX model, not a TensorRT engine",
                             hint="build it first: edgekit build MODEL.onnx --device NAME")
        self.exe = self.trtexec or find_trtexec(required=True)
        if self.check_manifest:
            self.manifest = check_engine_compatible(self.engine_path, trt_version=self.trt_version, device=self.device)
        else:
            self.manifest = read_manifest(self.engine_path)
        if self.trt_version is None:
            self.trt_version = (self.manifest or {}).get("tensorrt") or self._profile_version()
        if self.trt_version is None:
            raise InputError("cannot tell which TensorRT version trtexec is",
                             hint="pass --device (its profile names the version) or keep the engine's .json manifest")
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekit-trtexec-")

    def _profile_version(self) -> Optional[str]:
        if not self.device:
            return None
        return get_profile(self.device).software.tensorrt or None

    def _deactivate(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def workdir(self) -> Path:
        assert self._tmp is not None, "activate() first"
        return Path(self._tmp.name)

    def input_specs(self) -> List[TensorSpec]:
        inputs = (self.manifest or {}).get("inputs") or []
        return [TensorSpec(i["name"], i.get("dtype", "float32"), tuple(i.get("shape", ()))) for i in inputs]

    # ---- benchmark: what the harness calls ----
    def benchmark(self, warmup_ms: float = 200, duration_s: float = 3.0, iterations: int = 10, batch: int = 1,
                  shapes: Optional[Mapping[str, Tuple[int, ...]]] = None, cuda_graph: bool = False,
                  data_transfers: bool = True, profile_layers: bool = False, model_name: Optional[str] = None,
                  **_: object):
        """Run trtexec with the harness settings; return an :class:`edgekit.stats.LatencyReport`."""
        if not self.is_active:
            self.activate()
        use_shapes = dict(self.shapes)
        use_shapes.update({k: tuple(v) for k, v in (shapes or {}).items()})
        times_json = self.workdir / "times.json"
        profile_json = self.workdir / "profile.json" if profile_layers else None
        for p in (times_json, profile_json):
            if p is not None and p.exists():
                p.unlink()
        argv = benchmark_command(self.engine_path, self.trt_version, trtexec=self.exe, warmup_ms=int(warmup_ms),
                                 duration_s=duration_s, iterations=iterations, shapes=use_shapes or None,
                                 cuda_graph=cuda_graph, data_transfers=data_transfers, times_json=times_json,
                                 profile_json=profile_json, dla_core=self.dla_core)
        log = run_trtexec(argv, timeout=self.timeout)
        self.last_log = log
        settings = {"warmup_ms": warmup_ms, "duration_s": duration_s, "iterations": iterations, "batch": batch,
                    "shapes": {k: list(v) for k, v in use_shapes.items()}, "cuda_graph": cuda_graph,
                    "data_transfers": data_transfers, "trtexec_command": format_command(argv)}
        name = model_name or self.engine_path.name
        device = self.device or (self.manifest or {}).get("device") or ""
        if times_json.exists() and times_json.stat().st_size > 2:
            rep = report_from_times(parse_export_times(times_json), log, name, device, batch, settings)
        else:
            rep = report_from_log(log, name, device, batch, settings)
        rep.environment.update({"tensorrt": log.trt_version or self.trt_version, "gpu": log.device_name,
                                "compute_capability": log.compute_capability})
        rep.extra["trtexec"] = {"throughput_qps": log.throughput_qps,
                                "summary": {k: v.to_dict() for k, v in log.metrics.items()},
                                "total_host_walltime_s": log.total_host_walltime_s,
                                "total_gpu_compute_time_s": log.total_gpu_compute_time_s}
        if profile_json is not None and profile_json.exists():
            rep.extra["layers"] = parse_export_profile(profile_json).to_dict()
        self._timing = {k: rep.phases[k].median for k in ("h2d_ms", "gpu_compute_ms", "d2h_ms") if k in rep.phases}
        return rep

    def last_timing(self) -> Optional[Dict[str, float]]:
        return dict(self._timing) if self._timing else None

    # ---- one inference through files ----
    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.is_active:
            self.activate()
        specs = {s.name: s for s in self.input_specs()}
        if specs:
            missing = set(specs) - set(feeds)
            if missing:
                raise ShapeError(f"missing input(s) {sorted(missing)}")
        loads, shapes = [], []
        for name, arr in feeds.items():
            path = self.workdir / (f"in_{len(loads)}.bin")
            np.ascontiguousarray(arr).tofile(path)
            loads.append(f"{name}:{path}")
            shapes.append(f"{name}:" + "x".join(str(d) for d in arr.shape))
        out_json = self.workdir / "outputs.json"
        if out_json.exists():
            out_json.unlink()
        argv = [self.exe, f"--loadEngine={self.engine_path}", "--loadInputs=" + ",".join(loads),
                "--shapes=" + ",".join(shapes), "--warmUp=0", "--duration=0", "--iterations=1",
                f"--exportOutput={out_json}"]
        self.last_log = run_trtexec(argv, timeout=self.timeout)
        if not out_json.exists():
            raise BuildError("trtexec wrote no --exportOutput file", hint=" ".join(argv))
        return parse_export_output(out_json.read_text())

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name, "trtexec": getattr(self, "exe", self.trtexec), "tensorrt": self.trt_version,
                "engine": str(self.engine_path)}


def parse_export_output(text: str) -> Dict[str, np.ndarray]:
    """``--exportOutput`` JSON: ``[{"name": ..., "dimensions": "1x1000", "values": [...]}, ...]``."""
    data = json.loads(text)
    out = {}
    for item in data:
        dims = [int(d) for d in str(item.get("dimensions", "")).split("x") if d.strip()]
        vals = np.asarray(item.get("values", []), dtype=np.float32)
        out[str(item["name"])] = vals.reshape(dims) if dims else vals
    return out
