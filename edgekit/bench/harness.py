"""The latency harness: backend-agnostic, trtexec-compatible statistics.

The loop follows trtexec's rules: run for ``warmup_ms`` without recording, then record until BOTH at
least ``iterations`` queries and at least ``duration_s`` seconds have passed. Each query is timed on
the host with ``perf_counter`` around the runner's call and nothing else inside the timed region
(feeds are built beforehand), so the harness adds no measurable overhead (bench/profile_overhead.py
checks the median against a bare ``session.run`` loop). Runners that time themselves on the device
(trtexec) implement ``benchmark(...)`` and return a finished :class:`LatencyReport`; runners with
device-side timers (TensorRT + CUDA events) expose ``last_timing()``, which is summarised as the
``gpu_compute_ms`` / ``h2d_ms`` / ``d2h_ms`` phases.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from edgekit.bench.telemetry import TelemetrySampler
from edgekit.devices import get_profile
from edgekit.errors import InputError, ShapeError
from edgekit.graph.io import load_model
from edgekit.jetson import detect_board
from edgekit.runtime import runner_class
from edgekit.stats import LatencyReport, Summary

BACKEND_CHOICES = ("auto", "onnxruntime", "tensorrt", "trtexec")


@dataclass
class HarnessSettings:
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    iterations: int = 10
    batch: Optional[int] = None
    threads: Optional[int] = None
    input_path: Optional[str] = None
    seed: int = 0
    telemetry: Optional[bool] = None  # None = when tegrastats is available
    cv_warn_percent: float = 1.0
    profile_layers: bool = False      # per-layer times (TensorRT / trtexec backends) into extra["layers"]

    def validate(self) -> None:
        if self.warmup_ms < 0:
            raise InputError("--warmup-ms must be >= 0")
        if self.duration_s < 0:
            raise InputError("--duration-s must be >= 0")
        if self.iterations < 1:
            raise InputError("--iterations must be >= 1")
        if self.batch is not None and self.batch < 1:
            raise InputError("--batch must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise InputError("--threads must be >= 1")

    def to_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


def choose_backend(model: Path, backend: str, device_kind: str) -> str:
    """auto: an ONNX file runs on ONNX Runtime; an engine on TensorRT if its Python API imports, else trtexec."""
    if backend not in BACKEND_CHOICES:
        raise InputError(f"unknown backend '{backend}'", hint="choose one of: " + ", ".join(BACKEND_CHOICES))
    if backend != "auto":
        return backend
    env = os.environ.get("EDGEKIT_BACKEND")
    if env in BACKEND_CHOICES and env != "auto":
        return env
    if model.suffix in (".engine", ".plan", ".trt"):
        return "tensorrt" if importlib.util.find_spec("tensorrt") is not None else "trtexec"
    return "onnxruntime"


def make_feeds(specs, batch: Optional[int], input_path: Optional[str], seed: int = 0) -> Dict[str, np.ndarray]:
    """Inputs for every model input: from a .npy/.npz file, else seeded random data of the right dtype."""
    feeds: Dict[str, np.ndarray] = {}
    loaded: Dict[str, np.ndarray] = {}
    if input_path:
        p = Path(input_path)
        if not p.exists():
            raise InputError(f"no such input file: {p}")
        try:
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    loaded = {k: z[k] for k in z.files}
            elif p.suffix == ".npy":
                arr = np.load(p, allow_pickle=False)
                if len(specs) != 1:
                    raise InputError(f"the model has {len(specs)} inputs; give an .npz with one array per input name")
                loaded = {specs[0].name: arr}
            else:
                raise InputError(f"{p} is not a .npy or .npz file")
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read {p} as NumPy data: {exc}") from exc
        unknown = set(loaded) - {s.name for s in specs}
        if unknown:
            raise ShapeError(f"{p} has arrays {sorted(unknown)} that are not model inputs",
                             hint="model inputs: " + ", ".join(s.name for s in specs))
    rng = np.random.default_rng(seed)
    for spec in specs:
        if spec.name in loaded:
            arr = loaded[spec.name]
            if arr.dtype != np.dtype(spec.dtype):
                if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(np.dtype(spec.dtype), np.floating):
                    arr = arr.astype(spec.dtype)
                else:
                    raise ShapeError(f"input '{spec.name}' has dtype {arr.dtype}, the model wants {spec.dtype}")
            feeds[spec.name] = np.ascontiguousarray(arr)
            continue
        shape = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0:
                if i == 0 and batch is not None and batch != d:
                    raise ShapeError(f"input '{spec.name}' has a fixed batch of {d}; --batch {batch} does not fit",
                                     hint="re-export with --dynamic-batch, or drop --batch")
                shape.append(d)
            elif i == 0:
                shape.append(batch or 1)
            else:
                raise ShapeError(f"input '{spec.name}' has a dynamic dimension {i} ({d!r}) edgekit cannot guess",
                                 hint="pass --input with real data of the shape you want timed")
        dt = np.dtype(spec.dtype)
        if np.issubdtype(dt, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            feeds[spec.name] = np.zeros(shape, dtype=dt)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=dt)
    return feeds


def timed_loop(call: Callable[[], object], settings: HarnessSettings,
               progress: Optional[Callable[..., None]] = None,
               timing: Optional[Callable[[], Optional[Dict[str, float]]]] = None):
    """Warm up, then time ``call`` until iterations and duration are both reached.

    Returns (times_ms, walltime_s, warmup_iterations, phase_times) where phase_times maps a phase name
    to its per-iteration ms (only when ``timing`` is given).
    """
    perf = time.perf_counter
    warm_end = perf() + settings.warmup_ms / 1000.0
    warmups = 0
    while True:  # at least one warm-up query: first-run allocations never land in the statistics
        call()
        warmups += 1
        if perf() >= warm_end:
            break
    if timing is not None and timing() is None:
        timing = None  # host-timed runner: no device phases to collect
    times: List[float] = []
    phases: Dict[str, List[float]] = {}
    duration = settings.duration_s
    min_iters = settings.iterations
    next_report = 0.0
    append = times.append
    start = perf()
    while True:
        t0 = perf()
        call()
        t1 = perf()
        append((t1 - t0) * 1000.0)
        if timing is not None:
            for k, v in (timing() or {}).items():
                phases.setdefault(k, []).append(v)
        if len(times) >= min_iters and t1 - start >= duration:
            break
        if t1 >= next_report:
            elapsed = t1 - start
            if progress is not None:
                frac = min(elapsed / duration if duration > 0 else 1.0, len(times) / min_iters)
                progress(completed=100.0 * min(frac, 1.0))
            next_report = t1 + 0.05
    walltime = perf() - start
    return times, walltime, warmups, phases


def environment() -> Dict[str, object]:
    env: Dict[str, object] = {"host": platform.node(), "machine": platform.machine(),
                              "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        board = detect_board()
        env["board"] = board.to_dict() if board else None
    except Exception:  # detection is informative only; never fail a benchmark over it
        env["board"] = None
    return env


def profile_model(model: Path, device: str = "cpu", backend: str = "auto",
                  settings: Optional[HarnessSettings] = None,
                  progress: Optional[Callable[..., None]] = None) -> LatencyReport:
    """Benchmark one model on one backend and return the report (never prints)."""
    settings = settings or HarnessSettings()
    settings.validate()
    prof = get_profile(device)
    model = Path(model)
    if not model.exists():
        raise InputError(f"no such file: {model}")
    chosen = choose_backend(model, backend, prof.kind)
    warnings: List[str] = []
    env = environment()
    board = env.get("board") or {}
    if chosen == "onnxruntime":
        onnx_model = load_model(model)  # clear errors for non-ONNX / truncated files
        if prof.kind != "cpu" and (not board or board.get("profile") != prof.name):
            warnings.append(f"measured with ONNX Runtime on this host's CPU, not on a {prof.display_name}; "
                            f"use --backend tensorrt|trtexec on the board for {prof.name} numbers")
        runner = runner_class("onnxruntime")(onnx_model, threads=settings.threads)
    elif chosen == "tensorrt":
        runner = runner_class("tensorrt")(model, device=prof.name, profile_layers=settings.profile_layers)
    else:
        runner = runner_class("trtexec")(model, device=prof.name)

    tel = _maybe_telemetry(prof, settings)
    with runner:
        if tel is not None:
            tel.__enter__()  # tegrastats samples the board for the whole timed region, whoever times it
        try:
            if hasattr(runner, "benchmark"):
                # self-timing runner (trtexec): it runs its own warm-up/duration/iterations loop
                report = runner.benchmark(warmup_ms=settings.warmup_ms, duration_s=settings.duration_s,
                                          iterations=settings.iterations, batch=settings.batch or 1,
                                          profile_layers=settings.profile_layers)
            else:
                report = _host_timed(runner, chosen, prof.name, model, settings, progress)
                if settings.profile_layers and hasattr(runner, "layer_times"):
                    report.extra["layers"] = {"layers": [{"name": r["name"], "average_ms": r["mean_ms"]}
                                                         for r in runner.layer_times()]}
        finally:
            if tel is not None:
                tel.__exit__(None, None, None)
        report.environment.update(env)
        report.environment["runner"] = runner.describe()
    report.settings = settings.to_dict()
    report.warnings = warnings + report.warnings
    if tel is not None:
        summary = tel.summary(latency_ms=report.latency.mean, iterations=report.iterations,
                              walltime_s=report.walltime_s, batch=report.batch)
        report.extra["telemetry"] = summary
        if summary.get("available"):
            report.extra["power_mw"] = summary.get("power_mw")
            report.extra["energy_mj_per_inference"] = summary.get("energy_mj_per_inference")
        report.warnings.extend(summary.get("warnings", []))
    return report


def _host_timed(runner, backend: str, device: str, model: Path, settings: HarnessSettings,
                progress: Optional[Callable[..., None]]) -> LatencyReport:
    feeds = make_feeds(runner.input_specs(), settings.batch, settings.input_path, settings.seed)
    if hasattr(runner, "check_feeds"):
        runner.check_feeds(feeds)
    if hasattr(runner, "run_raw"):
        raw = runner.run_raw

        def call() -> object:
            return raw(feeds)
    else:
        infer = runner.infer

        def call() -> object:
            return infer(feeds)

    times, wall, warmups, phases = timed_loop(call, settings, progress, runner.last_timing)
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    return LatencyReport.from_times(
        model=str(model), backend=backend, device=device, times_ms=times, walltime_s=wall,
        warmup_iterations=warmups, batch=int(batch), cv_warn_percent=settings.cv_warn_percent,
        phases={k: Summary.of(v) for k, v in phases.items()})


def _maybe_telemetry(prof, settings: HarnessSettings):
    """A tegrastats sampler on Jetson boards (when tegrastats exists), else None."""
    if settings.telemetry is False:
        return None
    if settings.telemetry is None and (prof.kind != "jetson" or shutil.which("tegrastats") is None):
        return None
    return TelemetrySampler(interval_ms=100)


def compare(reports: Sequence[LatencyReport]) -> List[Dict[str, object]]:
    """Side-by-side rows with ratios to the first model (speedup = first median / this median)."""
    base = reports[0]
    rows = []
    for r in reports:
        rows.append({
            "model": r.model, "backend": r.backend,
            "median_ms": r.latency.median, "mean_ms": r.latency.mean, "p99_ms": r.latency.p99,
            "throughput_qps": r.throughput_qps,
            "speedup_vs_first": base.latency.median / r.latency.median if r.latency.median > 0 else None,
            "throughput_ratio_vs_first": r.throughput_qps / base.throughput_qps if base.throughput_qps > 0 else None,
        })
    return rows
