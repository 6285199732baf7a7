"""Run a :class:`~edgekit.engine.plan.BuildPlan`: dry run, Python API build, or trtexec build.

Whatever builds the engine, the result is the same: the engine written atomically to
``plan.output``, the sidecar manifest ``OUT.engine.json``, the per-device/per-version timing cache
updated, and a report of which layers fell back from the DLA to the GPU and which layers were
eligible for / picked sparse kernels (both read from TensorRT's own log lines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from edgekit.engine.plan import BuildPlan
from edgekit.engine.python_api import build_with_python_api
from edgekit.errors import BuildError, DependencyMissingError
from edgekit.graph.io import atomic_output
from edgekit.trt.manifest import make_manifest, manifest_path, write_manifest
from edgekit.trt.trtexec import find_trtexec, format_command, run_trtexec, trtexec_command
from edgekit.trt.trtexec_log import parse_log
from edgekit.trt.versions import generation, version_tag


@dataclass
class BuildResult:
    plan: BuildPlan
    backend: str
    trt_version: str
    engine_path: Optional[Path] = None
    manifest_path: Optional[Path] = None
    dry_run: bool = False
    command: List[str] = field(default_factory=list)
    build_time_s: Optional[float] = None
    engine_bytes: Optional[int] = None
    dla_fallback: List[Dict[str, str]] = field(default_factory=list)
    dla_layers: List[str] = field(default_factory=list)
    sparsity_eligible: Optional[List[str]] = None
    sparsity_picked: Optional[List[str]] = None
    calibration_cache_written: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "backend": self.backend,
            "trt_version": self.trt_version,
            "engine": str(self.engine_path) if self.engine_path else None,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "engine_bytes": self.engine_bytes,
            "build_time_s": self.build_time_s,
            "trtexec_command": list(self.command),
            "trtexec_command_line": format_command(self.command) if self.command else None,
            "plan": self.plan.to_dict(),
            "builder_settings": builder_settings(self.plan),
            "dla": {"core": self.plan.dla_core, "gpu_fallback": self.plan.gpu_fallback,
                    "fell_back_to_gpu": list(self.dla_fallback), "dla_layers": list(self.dla_layers)},
            "sparsity": {"enabled": self.plan.sparse, "eligible": self.sparsity_eligible,
                         "picked": self.sparsity_picked},
            "calibration_cache_written": self.calibration_cache_written,
            "warnings": list(self.warnings),
        }


def builder_settings(plan: BuildPlan) -> Dict[str, object]:
    """The Python-API calls the build makes for ``plan.trt_version`` (shown by --dry-run)."""
    gen = generation(plan.trt_version)
    s: Dict[str, object] = {"generation": gen.name}
    s["create_network"] = "1 << EXPLICIT_BATCH" if gen.explicit_batch_flag else "0 (explicit batch is implicit)"
    if gen.strongly_typed_only:
        s["create_network"] = "0 (strongly typed by default)"
    ws = int(plan.workspace_mib) << 20
    s["workspace"] = (f"config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, {ws})" if gen.memory_pools
                      else f"config.max_workspace_size = {ws}")
    flags = []
    if gen.precision_flags:
        flags += (["FP16"] if plan.fp16 else []) + (["INT8"] if plan.int8 else [])
    if plan.sparse:
        flags.append("SPARSE_WEIGHTS")
    if plan.dla_core is not None and plan.gpu_fallback:
        flags.append("GPU_FALLBACK")
    s["builder_flags"] = flags
    s["precision"] = plan.precision
    s["int8"] = plan.int8_mode or "off"
    if plan.int8_mode in ("implicit-cache", "implicit-calibrate"):
        s["calibrator"] = "IInt8EntropyCalibrator2 (config.int8_calibrator)"
    if plan.dla_core is not None:
        s["device"] = f"DeviceType.DLA, DLA_core = {plan.dla_core}"
    s["optimization_profile"] = [sh.to_dict() for sh in plan.shapes]
    s["timing_cache"] = str(plan.timing_cache)
    s["execution"] = "execute_async_v3 + set_tensor_address" if gen.execute_v3 else "execute_async_v2 + bindings"
    return s


def dry_run(plan: BuildPlan) -> BuildResult:
    """What would run, without TensorRT: the trtexec line and the builder settings."""
    argv = trtexec_command(plan, trtexec="trtexec")
    backend = plan.backend if plan.backend != "auto" else "python"
    return BuildResult(plan=plan, backend=backend, trt_version=plan.trt_version, dry_run=True, command=argv,
                       warnings=list(plan.warnings))


def _apply_log(result: BuildResult, lines_text: str) -> None:
    log = parse_log(lines_text)
    result.dla_fallback = [f.to_dict() for f in log.dla_fallback]
    result.dla_layers = list(log.dla_layers)
    result.sparsity_eligible = log.sparsity_eligible
    result.sparsity_picked = log.sparsity_picked
    if result.plan.sparse and log.sparsity_eligible is None:
        result.warnings.append("TensorRT printed no (Sparsity) lines: no layer was eligible for sparse math "
                               "(weights are not 2:4, or the board has no sparse tensor cores)")


def _ensure_parent(path: Optional[Path]) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def build_engine(plan: BuildPlan, trt=None, cuda=None, timeout: Optional[float] = None) -> BuildResult:
    """Build the engine described by ``plan`` (Python API or trtexec per ``plan.backend``)."""
    backend = plan.backend
    if backend == "auto":
        raise DependencyMissingError("tensorrt", "build an engine",
                                     install="neither the TensorRT Python module nor trtexec was found; on a "
                                             "Jetson install JetPack (`sudo apt install nvidia-jetpack`), or use "
                                             "--dry-run to print the trtexec command")
    _ensure_parent(plan.timing_cache)
    result = BuildResult(plan=plan, backend=backend, trt_version=plan.trt_version, warnings=list(plan.warnings))
    if backend == "trtexec":
        exe = find_trtexec(required=True)
        with atomic_output(plan.output, suffix=".engine") as tmp:
            argv = trtexec_command(plan, trtexec=exe)
            argv = [f"--saveEngine={tmp}" if a.startswith("--saveEngine=") else a for a in argv]
            t0 = time.perf_counter()
            log = run_trtexec(argv, timeout=timeout)
            result.build_time_s = time.perf_counter() - t0
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise BuildError("trtexec reported success but wrote no engine", hint=format_command(argv))
        result.command = trtexec_command(plan, trtexec=exe)
        if log.trt_version:
            if version_tag(log.trt_version) != version_tag(plan.trt_version):
                result.warnings.append(f"trtexec is TensorRT {log.trt_version}, the plan targeted "
                                       f"{plan.trt_version}; the manifest records {log.trt_version}")
            result.trt_version = log.trt_version
        _apply_log(result, getattr(log, "raw", ""))
        gpu_name, gpu_sm = log.device_name or "", log.compute_capability or ""
    else:
        blob, lines, info = build_with_python_api(plan, trt=trt, cuda=cuda)
        with atomic_output(plan.output, suffix=".engine") as tmp:
            tmp.write_bytes(blob)
        if plan.timing_cache is not None and info.get("timing_cache_blob"):
            with atomic_output(plan.timing_cache) as tmp:
                tmp.write_bytes(info["timing_cache_blob"])
        result.trt_version = info["trt_version"]
        result.build_time_s = info["build_time_s"]
        result.warnings += info["warnings"]
        result.calibration_cache_written = info.get("calibration_cache_written")
        result.command = trtexec_command(plan, trtexec="trtexec")
        _apply_log(result, "\n".join(lines))
        gpu_name, gpu_sm = info.get("gpu_name", ""), info.get("gpu_sm", "")
    if gpu_sm and plan.sm and gpu_sm != plan.sm:
        result.warnings.append(f"built on a GPU with SM {gpu_sm} ({gpu_name or 'unknown'}) for profile {plan.device} "
                               f"(SM {plan.sm}): the engine runs only on SM {gpu_sm}; build on the board itself")
    result.engine_path = Path(plan.output)
    result.engine_bytes = result.engine_path.stat().st_size
    man = make_manifest(plan, trt_version=result.trt_version, gpu_name=gpu_name, gpu_sm=gpu_sm, builder=backend,
                        extra={"dla_fallback": result.dla_fallback,
                               "sparsity": {"eligible": result.sparsity_eligible, "picked": result.sparsity_picked}})
    try:
        result.manifest_path = write_manifest(plan.output, man)
    except BaseException:
        result.engine_path.unlink()
        raise
    assert result.manifest_path == manifest_path(plan.output)
    return result
