"""Turn a build request (ONNX file, device profile, flags) into a validated :class:`BuildPlan`.

Everything that can be decided without TensorRT is decided here, so ``--dry-run`` and the real
build agree by construction: precision, sparsity, DLA, workspace, optimisation-profile shapes,
INT8 route (explicit QDQ, implicit with a cache, implicit with calibration data) and the timing
cache location. The device profile supplies defaults; an explicit flag overrides it, with a
warning when it contradicts what the board is good at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edgekit._resources import cache_root
from edgekit.devices import DeviceProfile, get_profile, max_opset_for_tensorrt, parse_version
from edgekit.errors import CalibrationError, InputError, ShapeError, UnsupportedError
from edgekit.graph.io import default_opset, load_model, model_input_specs, sha256_file
from edgekit.graph.shapes import parse_shape
from edgekit.trt.calibration_cache import check_cache_version
from edgekit.trt.trtexec import find_trtexec
from edgekit.trt.versions import dla_available, generation, version_tag

PRECISIONS = ("auto", "fp32", "fp16", "int8", "best")
BACKENDS = ("auto", "python", "trtexec")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class InputShapes:
    """One optimisation-profile entry: min/opt/max for a named input."""

    name: str
    min: Tuple[int, ...]
    opt: Tuple[int, ...]
    max: Tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class BuildPlan:
    """A validated build: what to build, for which board and TensorRT version, and how."""

    onnx_path: Path
    onnx_sha256: str
    output: Path
    device: str
    device_display: str
    sm: str
    trt_version: str
    generation: str
    jetpack: str
    l4t: str
    precision: str  # fp32 | fp16 | int8 | best | graph (TensorRT 11: precision comes from the model)
    fp16: bool
    int8: bool
    int8_mode: Optional[str]  # explicit-qdq | implicit-cache | implicit-calibrate | None
    sparse: bool
    dla_core: Optional[int]
    gpu_fallback: bool
    workspace_mib: int
    shapes: List[InputShapes]
    calib_cache: Optional[Path]
    calib_data: Optional[Path]
    timing_cache: Path
    backend: str  # python | trtexec (resolved from auto when possible; "auto" if neither is present)
    is_qdq: bool
    inputs: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    requested: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("onnx_path", "output", "calib_cache", "calib_data", "timing_cache"):
            d[key] = str(d[key]) if d[key] is not None else None
        return d


# ---- helpers ------------------------------------------------------------------------------------

default_cache_root = cache_root  # the one cache folder of edgekit._resources


def default_timing_cache(device: str, trt_version: str) -> Path:
    """Timing caches are valid for one GPU and one TensorRT version: keep one per pair."""
    return default_cache_root() / "timing" / f"{device}-trt{version_tag(trt_version)}.cache"


def parse_shape_specs(specs: Optional[Sequence[str]], flag: str) -> Dict[str, Tuple[int, ...]]:
    """['x:1x3x224x224', 'y:1x10'] or ['x:1x3x224x224,y:1x10'] -> {name: dims}."""
    out: Dict[str, Tuple[int, ...]] = {}
    for spec in specs or ():
        for item in _split_specs(spec):
            name, sep, dims = item.rpartition(":")
            if not sep or not name:
                raise ShapeError(f"{flag} {item!r} is not NAME:DIMS", hint=f"write {flag} input:1x3x224x224")
            name = name.strip().strip("'\"")
            if name in out:
                raise ShapeError(f"{flag} names input '{name}' twice")
            out[name] = tuple(parse_shape(dims))
    return out


def _split_specs(spec: str) -> List[str]:
    # commas separate entries (trtexec style); a comma inside dims ('1,3,224,224') is not supported here
    return [s for s in (p.strip() for p in spec.split(",")) if s]


def _is_qdq(model) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node) or any(
        n.op_type in QDQ_OPS for f in model.functions for n in f.node)


def _trtexec_available() -> bool:
    return find_trtexec(required=False) is not None


def _tensorrt_available() -> bool:
    # find_spec is not enough: the bindings wheel without libnvinfer is found but fails to import
    try:
        import tensorrt  # noqa: F401  # lazy: TensorRT is optional
    except Exception:
        return False
    return True


# ---- the planner --------------------------------------------------------------------------------

@dataclass
class _Precision:
    """The resolved precision of a build and the INT8 route with the calibration inputs it keeps."""

    precision: str  # fp32 | fp16 | int8 | best | graph
    fp16: bool
    int8: bool
    int8_mode: Optional[str]
    calib_cache: Optional[Path]
    calib_data: Optional[Path]


def plan_build(
    onnx_path,
    device: str,
    output=None,
    precision: str = "auto",
    sparse: Optional[bool] = None,
    dla_core: Optional[int] = None,
    gpu_fallback: bool = False,
    workspace_mib: Optional[int] = None,
    shapes: Optional[Sequence[str]] = None,
    min_shapes: Optional[Sequence[str]] = None,
    max_shapes: Optional[Sequence[str]] = None,
    calib_cache=None,
    calib_data=None,
    timing_cache=None,
    backend: str = "auto",
    trt_version: Optional[str] = None,
    force: bool = False,
    calib_flags: str = "--calib or --calib-cache",
) -> BuildPlan:
    """Validate a build request against the ONNX model and the device profile. ``calib_flags``:
    how the caller's own flags for INT8 scales read in its messages (``deploy`` has no --calib)."""
    warnings: List[str] = []
    prof: DeviceProfile = get_profile(device)
    _check_request(prof, precision, backend)
    onnx_path = Path(onnx_path)
    model = _load_onnx(onnx_path)
    digest = sha256_file(onnx_path)
    is_qdq = _is_qdq(model)
    specs = model_input_specs(model)
    version, gen, stack = _resolve_tensorrt(prof, trt_version, warnings)
    _check_opset(prof, version, default_opset(model), force, warnings)
    chosen = _resolve_precision(prof, precision, force, warnings,
                                qdq_needs_int8=is_qdq and not gen.strongly_typed_only)
    prec = _resolve_int8(prof, gen, version, chosen, precision != "auto", is_qdq, calib_cache, calib_data, warnings,
                         calib_flags)
    if prec.calib_cache is not None and prec.int8_mode == "implicit-cache":
        check_cache_version(prec.calib_cache, version)
    use_sparse = _resolve_sparsity(prof, sparse, prec, warnings)
    _check_dla(prof, dla_core, gpu_fallback, version, prec.precision, warnings)
    ws = _resolve_workspace(prof, workspace_mib)
    plan_shapes = _resolve_shapes(specs, shapes, min_shapes, max_shapes, warnings)
    resolved_backend = _resolve_backend(prof, backend, prec.int8_mode)
    out = _output_path(onnx_path, output, prof)
    tc = Path(timing_cache) if timing_cache else default_timing_cache(prof.name, version)
    return BuildPlan(
        onnx_path=onnx_path, onnx_sha256=digest, output=out, device=prof.name, device_display=prof.display_name,
        sm=prof.sm, trt_version=version, generation=gen.name, jetpack=stack.jetpack, l4t=stack.l4t,
        precision=prec.precision, fp16=prec.fp16, int8=prec.int8,
        int8_mode=prec.int8_mode if (prec.int8 or prec.precision == "graph") else None,
        sparse=use_sparse, dla_core=dla_core, gpu_fallback=bool(gpu_fallback), workspace_mib=ws,
        shapes=plan_shapes, calib_cache=prec.calib_cache, calib_data=prec.calib_data, timing_cache=tc,
        backend=resolved_backend, is_qdq=is_qdq, inputs=[s.to_dict() for s in specs], warnings=warnings,
        requested={"precision": precision, "sparse": sparse, "dla": dla_core, "gpu_fallback": gpu_fallback,
                   "workspace_mib": workspace_mib, "shapes": list(shapes or []), "min_shapes": list(min_shapes or []),
                   "max_shapes": list(max_shapes or []), "backend": backend, "trt_version": trt_version,
                   "force": force},
    )


def _check_request(prof: DeviceProfile, precision: str, backend: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'", hint="choose one of: " + ", ".join(PRECISIONS))
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'", hint="choose one of: " + ", ".join(BACKENDS))
    if prof.kind == "cpu":
        raise UnsupportedError(f"device '{prof.name}' has no TensorRT", hint="pick a Jetson or GPU profile; "
                               "on the CPU, `edgekit profile --backend onnxruntime` runs the ONNX directly")


def _load_onnx(onnx_path: Path):
    """The model's graph (weights stay on disk: the plan needs only nodes and inputs)."""
    if onnx_path.suffix.lower() != ".onnx":
        raise InputError(f"{onnx_path} is not an .onnx file", hint="edgekit build takes an ONNX model "
                         "(export one with `edgekit export`)")
    return load_model(onnx_path, load_external_data=False)


def _resolve_tensorrt(prof: DeviceProfile, trt_version: Optional[str], warnings: List[str]):
    """(version, generation, software stack): ``--trt-version`` or the profile's, and the JetPack
    stack of the profile that ships that TensorRT (warns when none does)."""
    version = trt_version or prof.software.tensorrt
    if not version:
        raise InputError(f"profile '{prof.name}' names no TensorRT version", hint="pass --trt-version X.Y")
    gen = generation(version)
    known = [prof.software.tensorrt] + [s.tensorrt for s in prof.supported_stacks]
    stack = prof.software
    match = [s for s in (prof.software,) + tuple(prof.supported_stacks)
             if parse_version(s.tensorrt)[:2] == parse_version(version)[:2]]
    if trt_version and not match:
        warnings.append(f"TensorRT {trt_version} is not a release {prof.display_name} ships with "
                        f"(known: {', '.join(k for k in known if k)}); building anyway")
    elif match:
        stack = match[0]
    return version, gen, stack


def _check_opset(prof: DeviceProfile, version: str, opset: int, force: bool, warnings: List[str]) -> None:
    """Refuse (or, with ``force``, warn about) a model newer than the TensorRT parser's opset."""
    same_release = parse_version(version)[:2] == parse_version(prof.software.tensorrt)[:2]
    cap = prof.max_onnx_opset if (same_release and prof.max_onnx_opset) else max_opset_for_tensorrt(version)
    if opset <= cap:
        return
    msg = f"the model is ONNX opset {opset}, TensorRT {version} on {prof.name} parses opset {cap} at most"
    if not force:
        raise UnsupportedError(msg, hint=f"re-export it for the board (`edgekit export ... --device {prof.name}` "
                               f"writes opset {cap}), or add --force to try anyway")
    warnings.append(msg + " (--force): its parser may reject the model")


def _resolve_precision(prof: DeviceProfile, precision: str, force: bool, warnings: List[str],
                       qdq_needs_int8: bool = False) -> str:
    """The precision asked for (or the profile default), refusing INT8 where the board has no fast
    INT8 unless ``force``; warns when an explicit choice overrides what the board is good at.

    ``qdq_needs_int8``: the model has Q/DQ nodes and TensorRT (8.x-10.x) builds those only with
    INT8 enabled, so the default becomes INT8 and an explicit FP16/FP32 is refused."""
    explicit_precision = precision != "auto"
    chosen = prof.default_precision if precision == "auto" else precision
    from_qdq = qdq_needs_int8 and chosen not in ("int8", "best")
    if from_qdq and explicit_precision:
        raise UnsupportedError(f"--precision {precision}: the model has Q/DQ nodes, which TensorRT builds only "
                               "with INT8 enabled", hint="leave --precision out (or use int8), or build the float "
                               "model (the one before `edgekit quantize`)")
    if from_qdq:
        chosen = "int8"
    if chosen == "int8" and not prof.fast_int8:
        why = (f"{prof.display_name} ({prof.sm_tag}) has no fast INT8 path: TensorRT's INT8 kernels are "
               "slower than FP16 there")
        if from_qdq and not force:
            raise UnsupportedError(f"INT8 refused on {prof.name}, and the model's Q/DQ nodes need it: {why}",
                                   hint="build the float model (the one before `edgekit quantize`) for FP16, "
                                        "or add --force to build INT8 anyway")
        if not explicit_precision and not from_qdq:
            chosen = "fp16"
        elif not force:
            raise UnsupportedError(f"INT8 refused on {prof.name}: {why}",
                                   hint="use --precision fp16 (the profile default), or add --force to build INT8 anyway")
        else:
            warnings.append(f"building INT8 although {why} (--force)")
    if explicit_precision and precision != prof.default_precision and not (precision == "int8" and force):
        if precision in ("fp32",) and prof.fast_fp16:
            warnings.append(f"--precision fp32 overrides the {prof.name} default ({prof.default_precision}); "
                            "FP32 engines are several times slower on this board")
        elif precision == "fp16" and prof.default_precision == "int8":
            warnings.append(f"--precision fp16 overrides the {prof.name} default (int8)")
        elif precision == "fp16" and not prof.fast_fp16:
            warnings.append(f"{prof.name} has no fast FP16; --precision fp16 may not speed anything up")
    return chosen


def _resolve_int8(prof: DeviceProfile, gen, version: str, chosen: str, explicit: bool, is_qdq: bool,
                  calib_cache, calib_data, warnings: List[str], calib_flags: str) -> _Precision:
    """Builder precision flags and the INT8 route: explicit QDQ, an existing calibration cache, or
    calibration data (which writes the cache when ``--calib-cache`` names a missing file)."""
    calib_cache_p = Path(calib_cache) if calib_cache else None
    calib_data_p = Path(calib_data) if calib_data else None
    if calib_data_p is not None and not calib_data_p.exists():
        raise InputError(f"--calib {calib_data_p} does not exist")
    cache_to_write = False
    if calib_cache_p is not None and not calib_cache_p.exists():
        if calib_data_p is None:
            raise InputError(f"--calib-cache {calib_cache_p} does not exist",
                             hint="pass --calib DATA as well to calibrate and write the cache there")
        cache_to_write = True  # calibrate from --calib and write the cache to this path
    if gen.strongly_typed_only:
        return _graph_precision(version, chosen, explicit, is_qdq, calib_cache_p, calib_data_p, warnings)
    prec = _Precision(chosen, chosen in ("fp16", "int8", "best"), chosen in ("int8", "best"), None,
                      calib_cache_p, calib_data_p)
    if prec.int8:
        _int8_route(prof, prec, explicit, is_qdq, cache_to_write, warnings, calib_flags)
        if prec.int8_mode and prec.int8_mode.startswith("implicit") and gen.since >= (10, 0):
            warnings.append("implicit INT8 calibration is deprecated since TensorRT 10.1; "
                            "a QDQ model (explicit quantization) is the path forward")
    elif calib_cache_p or calib_data_p:
        warnings.append(f"calibration input ignored: precision is {chosen}")
        prec.calib_cache = prec.calib_data = None
    return prec


def _graph_precision(version: str, chosen: str, explicit: bool, is_qdq: bool, calib_cache_p: Optional[Path],
                     calib_data_p: Optional[Path], warnings: List[str]) -> _Precision:
    """TensorRT 11: no FP16/INT8 builder flags, no calibrator. The graph's types decide."""
    if calib_cache_p or calib_data_p:
        raise UnsupportedError(f"TensorRT {version} has no implicit INT8 calibration (removed in 11.0)",
                               hint="quantize to a QDQ model first (`edgekit quantize`) and build that")
    if chosen in ("int8", "best") and explicit and not is_qdq:
        raise UnsupportedError(f"--precision {chosen} needs a QDQ model on TensorRT {version} (strongly typed)",
                               hint="quantize with `edgekit quantize` to get Q/DQ nodes")
    if chosen != "fp32" and explicit:
        warnings.append(f"TensorRT {version} is strongly typed: precision comes from the graph "
                        f"({'Q/DQ nodes' if is_qdq else 'tensor types'}), not from --precision {chosen}")
    return _Precision("graph", False, False, "explicit-qdq" if is_qdq else None, calib_cache_p, calib_data_p)


def _int8_route(prof: DeviceProfile, prec: _Precision, explicit: bool, is_qdq: bool, cache_to_write: bool,
                warnings: List[str], calib_flags: str) -> None:
    """Pick how INT8 gets its scales (in place on ``prec``); with none available, fall back to FP16
    (or refuse when INT8 was asked for explicitly)."""
    if is_qdq:
        prec.int8_mode = "explicit-qdq"
        if prec.calib_cache or prec.calib_data:
            warnings.append("the model has Q/DQ nodes: its scales are used and the calibration "
                            "cache/data is ignored (explicit quantization)")
            prec.calib_cache = prec.calib_data = None
    elif prec.calib_cache is not None and not cache_to_write:
        prec.int8_mode = "implicit-cache"
        if prec.calib_data is not None:
            warnings.append(f"--calib-cache {prec.calib_cache} exists: its scales are reused and --calib is "
                            "not read (delete the cache to recalibrate)")
            prec.calib_data = None
    elif prec.calib_data is not None:
        prec.int8_mode = "implicit-calibrate"
    elif prec.precision == "best":
        # trtexec --best without calibration would use placeholder INT8 scales: never do that
        prec.int8, prec.precision = False, "fp16"
        warnings.append("--precision best without Q/DQ nodes or calibration: INT8 left off, FP16 used")
    elif explicit:
        raise CalibrationError("INT8 needs a QDQ model, a calibration cache or calibration data; none was given",
                               hint=f"run `edgekit quantize` first, or pass {calib_flags}")
    else:
        prec.int8, prec.precision = False, "fp16"
        warnings.append(f"{prof.name} defaults to INT8, but the model has no Q/DQ nodes and no "
                        f"calibration was given: building FP16 (pass {calib_flags} for INT8)")


def _resolve_sparsity(prof: DeviceProfile, sparse: Optional[bool], prec: _Precision, warnings: List[str]) -> bool:
    if sparse is None:
        return prof.sparse_tensor_cores and (prec.fp16 or prec.int8 or prec.precision == "graph")
    use_sparse = bool(sparse)
    if use_sparse and not prof.sparse_tensor_cores:
        warnings.append(f"--sparse on {prof.name}: {prof.arch} has no sparse tensor cores; "
                        "TensorRT will find no sparse kernels to pick")
    if use_sparse and prec.precision == "fp32":
        warnings.append("--sparse with FP32: TensorRT's sparse kernels need FP16 or INT8")
    return use_sparse


def _check_dla(prof: DeviceProfile, dla_core: Optional[int], gpu_fallback: bool, version: str, precision: str,
               warnings: List[str]) -> None:
    if gpu_fallback and dla_core is None:
        raise InputError("--gpu-fallback only applies with --dla N")
    if dla_core is None:
        return
    if prof.dla_cores == 0:
        raise UnsupportedError(f"{prof.display_name} has no DLA cores", hint="drop --dla")
    if dla_core < 0 or dla_core >= prof.dla_cores:
        raise InputError(f"--dla {dla_core} is out of range: {prof.display_name} has {prof.dla_cores} DLA "
                         f"core(s) (0..{prof.dla_cores - 1})")
    if not dla_available(version):
        raise UnsupportedError(f"TensorRT {version} has no DLA support (dropped after 10.7, back in 11.4)",
                               hint="use --trt-version of a JetPack that supports DLA, or drop --dla")
    if precision == "fp32":
        raise UnsupportedError("the DLA runs FP16 or INT8 only", hint="use --precision fp16 or int8 with --dla")
    if not gpu_fallback:
        warnings.append("--dla without --gpu-fallback: the build fails if any layer cannot run on the DLA")


def _resolve_workspace(prof: DeviceProfile, workspace_mib: Optional[int]) -> int:
    ws = int(workspace_mib) if workspace_mib is not None else int(prof.workspace_mib or 1024)
    if ws <= 0:
        raise InputError(f"--workspace must be a positive number of MiB, got {workspace_mib}")
    if prof.memory_gb and ws > prof.memory_gb * 1024:
        raise InputError(f"--workspace {ws} MiB exceeds {prof.display_name}'s {prof.memory_gb:g} GB of memory")
    return ws


def _resolve_backend(prof: DeviceProfile, backend: str, int8_mode: Optional[str]) -> str:
    """auto: the profile's preferred builder if present, else the Python API, else trtexec."""
    resolved = backend
    if backend == "auto":
        if prof.preferred_backend == "trtexec" and _trtexec_available():
            resolved = "trtexec"
        elif _tensorrt_available():
            resolved = "python"
        elif _trtexec_available():
            resolved = "trtexec"
        else:
            resolved = "trtexec" if prof.preferred_backend == "trtexec" else "auto"
    if resolved == "trtexec" and int8_mode == "implicit-calibrate":
        raise UnsupportedError("trtexec cannot calibrate from data files", hint="use --backend python, or "
                               "calibrate once to a cache and pass --calib-cache")
    return resolved


def _output_path(onnx_path: Path, output, prof: DeviceProfile) -> Path:
    out = Path(output) if output else onnx_path.with_name(f"{onnx_path.stem}.{prof.name}.engine")
    if out.resolve() == onnx_path.resolve():
        raise InputError("the output would overwrite the input model", hint="pass -o OUT.engine")
    if out.suffix.lower() == ".onnx":
        raise InputError(f"output {out} ends in .onnx; an engine is not an ONNX model", hint="use -o OUT.engine")
    return out


def _resolve_shapes(specs, shapes, min_shapes, max_shapes, warnings: Optional[List[str]] = None) -> List[InputShapes]:
    by_name = {s.name: s for s in specs}
    opt = parse_shape_specs(shapes, "--shapes")
    mins = parse_shape_specs(min_shapes, "--min-shapes")
    maxs = parse_shape_specs(max_shapes, "--max-shapes")
    for flag, table in (("--shapes", opt), ("--min-shapes", mins), ("--max-shapes", maxs)):
        for name in table:
            if name not in by_name:
                raise ShapeError(f"{flag} names '{name}', which is not an input of the model",
                                 hint="model inputs: " + ", ".join(f"{s.name}{list(s.shape)}" for s in specs))
    for name in set(mins) | set(maxs):
        if name not in opt:
            raise ShapeError(f"--min-shapes/--max-shapes for '{name}' need --shapes {name}:... (the optimum) too")
    result: List[InputShapes] = []
    for spec in specs:
        if spec.name not in opt:
            only_batch_dynamic = len(spec.shape) > 1 and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0) \
                and all(isinstance(d, int) and d > 0 for d in spec.shape[1:])
            if only_batch_dynamic:
                # what trtexec does too: a dynamic batch axis with no shapes given is built for batch 1
                fixed = [1] + [int(d) for d in spec.shape[1:]]
                if warnings is not None:
                    warnings.append(f"input '{spec.name}' has a dynamic batch axis and no --shapes: building for "
                                    f"batch 1 ({'x'.join(map(str, fixed))}); pass --shapes/--min-shapes/--max-shapes "
                                    "for a batch range")
                result.append(InputShapes(spec.name, tuple(fixed), tuple(fixed), tuple(fixed)))
                continue
            if not spec.is_static:
                raise ShapeError(f"input '{spec.name}' has dynamic dimensions {list(spec.shape)}",
                                 hint=f"pass --shapes {spec.name}:" + "x".join(
                                     str(d) if isinstance(d, int) and d > 0 else "1" for d in spec.shape))
            continue
        o = opt[spec.name]
        lo = mins.get(spec.name, o)
        hi = maxs.get(spec.name, o)
        if not (len(lo) == len(o) == len(hi) == len(spec.shape)):
            raise ShapeError(f"shapes for '{spec.name}' must have rank {len(spec.shape)} (model: {list(spec.shape)})")
        for i, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0 and (lo[i] != d or o[i] != d or hi[i] != d):
                raise ShapeError(f"input '{spec.name}' dimension {i} is fixed to {d} in the model; "
                                 f"shapes give {lo[i]}/{o[i]}/{hi[i]}")
        if any(a > b for a, b in zip(lo, o)) or any(a > b for a, b in zip(o, hi)):
            raise ShapeError(f"shapes for '{spec.name}' must satisfy min <= opt <= max in every dimension: "
                             f"min {'x'.join(map(str, lo))}, opt {'x'.join(map(str, o))}, max {'x'.join(map(str, hi))}")
        result.append(InputShapes(spec.name, lo, o, hi))
    return result
