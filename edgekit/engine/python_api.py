"""Build an engine through the TensorRT Python API, one code path per API generation.

Written against the Python bindings of each release (``python/src/infer/pyCore.cpp`` on the
``release/8.2``, ``release/8.6``, ``release/10.x`` and ``main`` branches) and tested only against a
test double shaped after them (``tests/fakes/fake_tensorrt.py``): no TensorRT ran on edgekit's
development machines. See docs/tensorrt.md.

What differs per generation, and why the code paths are separate classes rather than ``if``s:

* 8.0-8.3: ``create_network`` needs the EXPLICIT_BATCH flag; the workspace is
  ``config.max_workspace_size`` (no memory pools before 8.4).
* 8.4-8.6: the same network flag; workspace through ``set_memory_pool_limit(MemoryPoolType.WORKSPACE)``.
* 10.x: networks are always explicit-batch (the flag is deprecated and ignored: pass none);
  ``max_workspace_size`` is gone; FP16/INT8 flags and the implicit calibrator still exist.
* 11.x: strongly typed only: no FP16/INT8 flags, no calibrator; the graph's types decide.

Enum members are always looked up by *name* on the imported module (``trt.BuilderFlag.FP16``):
TensorRT 11 renumbered them, so storing raw integers would silently select other flags.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

from edgekit.engine.calibration import load_calibration_batches, make_entropy_calibrator
from edgekit.errors import BuildError, InputError, UnsupportedError, require
from edgekit.trt.calibration_cache import check_cache_version
from edgekit.trt.versions import generation, version_tag


class CapturingLogger:
    """Factory for an ``ILogger`` subclass that keeps every message (for DLA/sparsity reports)."""

    @staticmethod
    def create(trt, min_severity: str = "INFO"):
        order = ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"]
        letters = {"INTERNAL_ERROR": "F", "ERROR": "E", "WARNING": "W", "INFO": "I", "VERBOSE": "V"}
        keep = set(order[: order.index(min_severity) + 1])

        class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.lines: List[str] = []

            def log(self, severity, msg) -> None:
                name = getattr(severity, "name", str(severity)).split(".")[-1]
                if name in keep:
                    self.lines.append(f"[{letters.get(name, 'I')}] [TRT] {msg}")

            def errors(self) -> List[str]:
                return [l.split("] ", 2)[-1] for l in self.lines if l.startswith(("[E]", "[F]"))]

        return _Logger()


# ---- per-generation code paths ------------------------------------------------------------------

class _Gen:
    """The 8.0-8.3 path; later generations override what changed."""

    def network_flags(self, trt) -> int:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)

    def set_workspace(self, config, trt, nbytes: int) -> None:
        config.max_workspace_size = nbytes

    def set_precision(self, config, trt, plan) -> None:
        if plan.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.int8:
            config.set_flag(trt.BuilderFlag.INT8)

    def attach_calibrator(self, config, trt, calibrator, profile=None) -> None:
        config.int8_calibrator = calibrator
        if profile is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)


class _Gen84(_Gen):
    def set_workspace(self, config, trt, nbytes: int) -> None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)


class _Gen10(_Gen84):
    def network_flags(self, trt) -> int:
        return 0  # explicit batch is the only mode; the flag is deprecated


class _Gen11(_Gen10):
    def set_precision(self, config, trt, plan) -> None:
        return None  # strongly typed: nothing to set

    def attach_calibrator(self, config, trt, calibrator, profile=None) -> None:
        raise UnsupportedError("TensorRT 11 has no implicit INT8 calibration", hint="build a QDQ model")


_PATHS = {"8.0-8.3": _Gen(), "8.4": _Gen84(), "8.5": _Gen84(), "8.6": _Gen84(), "10.x": _Gen10(), "11.x": _Gen11()}


def code_path(trt_version: str) -> _Gen:
    return _PATHS[generation(trt_version).name]


# ---- the build ----------------------------------------------------------------------------------

def _gpu_identity(cuda=None):
    try:
        if cuda is None:
            import pycuda.autoinit  # noqa: F401  # lazy: pycuda is optional
            import pycuda.driver as cuda  # lazy: pycuda is optional

        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except Exception:  # no pycuda, no GPU: the manifest says "" rather than guessing
        return "", ""


def build_with_python_api(plan, trt=None, cuda=None):
    """Build ``plan`` with the TensorRT Python API. Returns (serialized engine bytes, log lines, info)."""
    if trt is None:
        trt = require("tensorrt", "tensorrt", "build a TensorRT engine with the Python API")
    installed = str(getattr(trt, "__version__", plan.trt_version))
    warnings: List[str] = []
    if version_tag(installed) != version_tag(plan.trt_version):
        if plan.requested.get("trt_version"):
            raise InputError(f"--trt-version {plan.trt_version} asked, but TensorRT {installed} is installed",
                             hint="drop --trt-version to build for the installed TensorRT")
        warnings.append(f"profile {plan.device} expects TensorRT {plan.trt_version}, TensorRT {installed} is "
                        f"installed: building for {installed}")
        if plan.int8_mode == "implicit-cache" and plan.calib_cache is not None:
            check_cache_version(plan.calib_cache, installed)
    gen = generation(installed)
    path = code_path(installed)
    if gen.strongly_typed_only and (plan.fp16 or plan.int8):
        raise UnsupportedError(f"TensorRT {installed} is strongly typed: no FP16/INT8 builder flags",
                               hint=f"rebuild the plan with --trt-version {version_tag(installed)}")
    if plan.int8_mode and plan.int8_mode.startswith("implicit") and not gen.implicit_int8:
        raise UnsupportedError(f"TensorRT {installed} has no implicit INT8 calibration", hint="use a QDQ model")

    logger = CapturingLogger.create(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(path.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError("TensorRT's ONNX parser rejected the model:\n" + "\n".join(errs or logger.errors()),
                         hint="check the opset against the board's TensorRT (`edgekit devices show`)")
    config = builder.create_builder_config()
    path.set_workspace(config, trt, int(plan.workspace_mib) << 20)
    path.set_precision(config, trt, plan)
    if plan.sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if plan.dla_core is not None:
        available = int(getattr(builder, "num_DLA_cores", 0))
        if plan.dla_core >= available:
            raise UnsupportedError(f"DLA core {plan.dla_core} asked, TensorRT sees {available} DLA core(s) here")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.dla_core)
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = None
    if plan.shapes:
        profile = builder.create_optimization_profile()
        for s in plan.shapes:
            profile.set_shape(s.name, tuple(s.min), tuple(s.opt), tuple(s.max))
        config.add_optimization_profile(profile)
    calibrator = None
    if plan.int8 and plan.int8_mode in ("implicit-cache", "implicit-calibrate"):
        batches = []
        if plan.int8_mode == "implicit-calibrate":
            batch = int(plan.shapes[0].opt[0]) if plan.shapes else int(plan.inputs[0]["shape"][0] or 1)
            batches = load_calibration_batches(plan.calib_data, plan.inputs, batch)
        cache_path = plan.calib_cache or (Path(plan.output).with_suffix(".calib") if batches else None)
        calibrator = make_entropy_calibrator(trt, batches, cache_path, installed, cuda=cuda)
        path.attach_calibrator(config, trt, calibrator, profile)
    # detailed layer information for the engine inspector: called VERBOSE in 8.0, DETAILED from 8.2
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    detailed = getattr(verbosity, "DETAILED", None) or getattr(verbosity, "VERBOSE", None)
    if detailed is not None:
        config.profiling_verbosity = detailed
    timing_blob = b""
    if plan.timing_cache is not None and Path(plan.timing_cache).exists():
        timing_blob = Path(plan.timing_cache).read_bytes()
    timing = config.create_timing_cache(timing_blob)
    config.set_timing_cache(timing, False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    elapsed = time.perf_counter() - t0
    if serialized is None:
        raise BuildError("TensorRT could not build the engine:\n" + "\n".join(logger.errors()[-12:] or ["(no error text)"]),
                         hint="rerun with EDGEKIT_DEBUG=1; try --workspace larger, or --gpu-fallback with --dla")
    info = {"trt_version": installed, "build_time_s": elapsed, "warnings": warnings,
            "timing_cache_blob": bytes(config.get_timing_cache().serialize()),
            "calibration_cache_written": str(calibrator.cache_path) if calibrator is not None and
            getattr(calibrator, "cache_written", False) else None}
    gpu_name, gpu_sm = _gpu_identity(cuda)
    info["gpu_name"], info["gpu_sm"] = gpu_name, gpu_sm
    return bytes(serialized), list(logger.lines), info
