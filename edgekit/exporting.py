"""PyTorch -> ONNX export, checked numerically against PyTorch.

SPEC forms (tried in this order):
  * a built-in model name (``resnet50``, ``mobilenetv2``, ``vit-tiny``, ``yolo-tiny`` ...);
  * a TorchScript file (``model.pt`` / ``model.ts`` saved with ``torch.jit.save``);
  * ``package.module:factory``: a callable returning an ``nn.Module`` (the current directory is on
    the import path, so a local ``mymodels.py`` works).

The current exporter (``torch.onnx.export(dynamo=True)``) is tried first; when it fails, or cannot
produce the requested opset (it emits opset 18+; TensorRT 8.2 on TX2 parses at most 13), the
TorchScript exporter is used and the report says so. The result must pass ``onnx.checker``, full
shape inference, and a parity check against PyTorch on the same random inputs, or no file is written.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgekit import models
from edgekit._resources import data_dir
from edgekit.devices import get_profile, tomllib
from edgekit.errors import ExportError, InputError, ParityError, ShapeError, require
from edgekit.graph.io import save_model
from edgekit.runtime.onnxruntime import OnnxRuntimeRunner
from edgekit.runtime.verify import nonfinite_mismatch

DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18


@dataclass
class Recipe:
    """An exporter recipe (``exporters/<family>.toml``): input spec, I/O names, dynamic axes."""

    family: str
    input_names: List[str]
    output_names: List[str]
    input_shapes: List[List[int]]
    dynamic_axes: Dict[str, Dict[int, str]]
    preprocess: Dict[str, object] = field(default_factory=dict)
    postprocess: Dict[str, object] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, family: str) -> "Recipe":
        path = Path(family) if family.endswith(".toml") else data_dir("exporters") / f"{family}.toml"
        if not path.exists():
            raise InputError(f"no exporter recipe '{family}'", hint=f"recipes live in {path.parent}")
        raw = tomllib.loads(path.read_text())
        axes = {k: {int(a): str(n) for a, n in v.items()} for k, v in raw.get("dynamic_axes", {}).items()}
        return cls(family=raw["family"], input_names=list(raw["input_names"]), output_names=list(raw["output_names"]),
                   input_shapes=[list(s) for s in raw["input_shapes"]], dynamic_axes=axes,
                   preprocess=dict(raw.get("preprocess", {})), postprocess=dict(raw.get("postprocess", {})),
                   description=raw.get("description", ""))


@dataclass
class ExportReport:
    """What ``export`` wrote: exporter used, opset, shapes, parity errors, size and timing."""

    spec: str
    output: str
    exporter: str
    opset: int
    input_shapes: Dict[str, List[int]]
    dynamic_batch: bool
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    nodes: int
    params: int
    size_bytes: int
    seconds: float
    device: Optional[str] = None
    fallback_reason: Optional[str] = None
    recipe: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_spec(spec: str) -> Tuple[object, Optional[str]]:
    """Return (nn.Module in eval mode, recipe family or None)."""
    torch = require("torch", "torch", "export PyTorch models")
    key = spec.lower().replace("_", "-")
    if key in models.BUILTIN:
        return models.create(key), models.recipe_family(key)
    p = Path(spec)
    if p.suffix in (".pt", ".pth", ".ts", ".torchscript", ".jit") or (p.exists() and ":" not in spec):
        if not p.exists():
            raise InputError(f"no such file: {p}", hint="give a TorchScript file, module:factory or a built-in name")
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:
            raise InputError(f"{p} is not a TorchScript file ({type(exc).__name__})",
                             hint="save it with torch.jit.save(torch.jit.script(model), path); "
                                  "plain state_dict checkpoints need module:factory") from exc
        module.eval()
        return module, None
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:
            raise InputError(f"cannot import '{mod_name}' ({type(exc).__name__}: {exc})",
                             hint="SPEC is package.module:factory, importable from the current directory") from exc
        fn = getattr(mod, attr, None)
        if fn is None:
            raise InputError(f"'{mod_name}' has no attribute '{attr}'")
        try:
            module = fn() if callable(fn) and not isinstance(fn, torch.nn.Module) else fn
        except Exception as exc:
            raise InputError(f"{spec}() raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(module, torch.nn.Module):
            raise InputError(f"{spec} returned {type(module).__name__}, not a torch.nn.Module")
        module.eval()
        return module, getattr(mod, "EDGEKIT_RECIPE", None)
    hint = "built-in models: " + ", ".join(models.names())
    close = difflib.get_close_matches(key, list(models.BUILTIN), n=1)
    if close:
        hint = f"did you mean '{close[0]}'? " + hint
    raise InputError(f"cannot resolve model spec '{spec}'", hint=hint)


@contextlib.contextmanager
def _restore_level(logger, level):
    try:
        yield
    finally:
        logger.setLevel(level)


def _export_dynamo(module, args, path: Path, opset: int, names_in, names_out, dynamic_batch: bool) -> object:
    import torch  # lazy: torch is optional

    dyn = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dyn = tuple({0: batch} for _ in args)
    sink = io.StringIO()
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _restore_level(onnx_log, level):
        prog = torch.onnx.export(module, tuple(args), None, dynamo=True, opset_version=opset,
                                 input_names=list(names_in), output_names=list(names_out),
                                 dynamic_shapes=dyn, verbose=False, optimize=True)
    model = prog.model_proto
    got = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if got != opset:
        raise ExportError(f"the dynamo exporter produced opset {got}, not the requested {opset}")
    return model


def _export_torchscript(module, args, path: Path, opset: int, names_in, names_out, dynamic_batch: bool,
                        keep_bn: bool = False) -> object:
    import torch  # lazy: torch is optional

    axes = None
    if dynamic_batch:
        axes = {n: {0: "batch"} for n in list(names_in) + list(names_out)}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), buf, dynamo=False, opset_version=opset, input_names=list(names_in),
                          output_names=list(names_out), dynamic_axes=axes, do_constant_folding=True,
                          # PRESERVE keeps BatchNormalization nodes (with running statistics) instead of
                          # folding them into the convs: data-free pruning reads them; TensorRT refolds.
                          training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL)
    return onnx.load_from_string(buf.getvalue())


EXPORTERS: Dict[str, Callable[..., object]] = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}


def _count_outputs(module, args) -> int:
    import torch  # lazy: torch is optional

    with torch.no_grad():
        out = module(*args)
    if isinstance(out, (tuple, list)):
        return len(out)
    if isinstance(out, dict):
        return len(out)
    return 1


def _torch_outputs(module, args) -> List[np.ndarray]:
    import torch  # lazy: torch is optional

    with torch.no_grad():
        out = module(*args)
    if isinstance(out, dict):
        out = list(out.values())
    if not isinstance(out, (tuple, list)):
        out = [out]
    return [o.detach().cpu().numpy() for o in out]


def parity(module, model, inputs: Sequence[np.ndarray]) -> Tuple[float, float, List[np.ndarray]]:
    """Max abs and max relative error between PyTorch and ONNX Runtime on the same inputs."""
    import torch  # lazy: torch is optional

    ref = _torch_outputs(module, [torch.from_numpy(x) for x in inputs])
    with OnnxRuntimeRunner(model) as runner:
        names = [s.name for s in runner.input_specs()]
        got = list(runner.infer(dict(zip(names, inputs))).values())
    if len(ref) != len(got):
        raise ParityError(f"PyTorch returned {len(ref)} outputs but the ONNX model has {len(got)}")
    max_abs = 0.0
    max_rel = 0.0
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            raise ParityError(f"output shape differs: PyTorch {list(r.shape)} vs ONNX {list(g.shape)}")
        err, rel = _output_error(r, g)
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel)
    return max_abs, max_rel, got


def _output_error(ref: np.ndarray, got: np.ndarray) -> Tuple[float, float]:
    """(max abs, max relative) error of one output over its finite values; ``inf`` for both when
    NaN/Inf do not match (a NaN where PyTorch has a number, or an Inf of the other sign)."""
    r, g = ref.astype(np.float64), got.astype(np.float64)
    bad, both = nonfinite_mismatch(r, g)
    if bad:
        return float("inf"), float("inf")
    diff = np.abs(r[both] - g[both])
    err = float(diff.max(initial=0.0))
    scale = float(np.abs(r[both]).max(initial=0.0))
    return err, (err / scale if scale > 0 else 0.0)


def _check_tolerances(atol: float, rtol: float) -> None:
    for flag, v in (("--atol", atol), ("--rtol", rtol)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise InputError(f"{flag} must be a non-negative number, got {v}")


def export(spec: str, output: Path, input_shapes: Optional[Sequence[Sequence[int]]] = None,
           dynamic_batch: bool = False, opset: Optional[int] = None, device: Optional[str] = None,
           exporter: str = "auto", atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0, keep_bn: bool = False,
           progress: Optional[Callable[[str], None]] = None) -> ExportReport:
    """Export SPEC to ``output`` (atomically); raises on failure with no file left behind."""
    require("torch", "torch", "export PyTorch models")
    import torch  # lazy: torch is optional

    _check_tolerances(atol, rtol)
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    output = Path(output)
    opset, device = _target_opset(opset, device)

    step("loading model")
    module, family = resolve_spec(spec)
    recipe = Recipe.load(family) if family else None
    if input_shapes is None:
        if recipe is None:
            raise ShapeError(f"no input shape known for '{spec}'", hint="pass --input-shape 1x3x224x224")
        input_shapes = recipe.input_shapes
    shapes = [list(s) for s in input_shapes]
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    names_in, names_out = _io_names(module, inputs, shapes, recipe)
    order = _exporter_order(exporter, opset, keep_bn)
    model, used, errors = _run_exporters(order, module, [torch.from_numpy(x) for x in inputs], output, opset,
                                         names_in, names_out, dynamic_batch, keep_bn, step)
    fallback = errors[0] if errors else None
    notes: List[str] = []
    if fallback and exporter == "auto" and order[0] == "dynamo":
        notes.append(f"the dynamo exporter failed ({fallback}); used the TorchScript exporter")

    step("checking the ONNX model")
    try:
        onnx.checker.check_model(model)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"the exported model fails onnx.checker/shape inference: {str(exc).splitlines()[0][:300]}") from exc

    step("parity check against PyTorch")
    max_abs, max_rel = _check_parity(module, model, inputs, rng, shapes, dynamic_batch, atol, rtol)
    step("saving")
    save_model(model, output)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return ExportReport(spec=spec, output=str(output), exporter=used, opset=opset,
                        input_shapes=dict(zip(names_in, shapes)), dynamic_batch=dynamic_batch,
                        max_abs_error=max_abs, max_rel_error=max_rel, atol=atol, rtol=rtol,
                        nodes=len(model.graph.node), params=params, size_bytes=output.stat().st_size,
                        seconds=time.perf_counter() - t0, device=device, fallback_reason=fallback,
                        recipe=recipe.family if recipe else None, warnings=notes)


def _target_opset(opset: Optional[int], device: Optional[str]) -> Tuple[int, Optional[str]]:
    """``(opset, device profile name)``: the default is capped by what the device's TensorRT parser reads."""
    max_opset = None
    if device:
        prof = get_profile(device)
        max_opset = prof.max_onnx_opset
        device = prof.name
    if opset is None:
        opset = min(DEFAULT_OPSET, max_opset) if max_opset else DEFAULT_OPSET
    elif max_opset and opset > max_opset:
        raise InputError(f"opset {opset} is newer than {device}'s TensorRT parser accepts (max {max_opset})",
                         hint=f"use --opset {max_opset} or leave it out")
    if not 7 <= opset <= 25:
        raise InputError(f"opset {opset} is out of range", hint="use an opset between 7 and 25")
    return opset, device


def _io_names(module, inputs: List[np.ndarray], shapes: List[List[int]], recipe: Optional[Recipe]
              ) -> Tuple[List[str], List[str]]:
    """Input and output names: the recipe's when their counts fit, else input / output[_i]. Runs the
    module once to count its outputs (a ShapeError when it does not run on these inputs)."""
    import torch  # lazy: torch is optional

    try:
        n_out = _count_outputs(module, [torch.from_numpy(x) for x in inputs])
    except Exception as exc:
        raise ShapeError(f"the model does not run on input shape(s) {['x'.join(map(str, s)) for s in shapes]}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                         hint="pass --input-shape matching the model (one per input, e.g. 1x3x224x224)") from exc
    if recipe and len(recipe.input_names) == len(shapes):
        names_in = recipe.input_names
    else:
        names_in = ["input"] if len(shapes) == 1 else [f"input_{i}" for i in range(len(shapes))]
    if recipe and len(recipe.output_names) == n_out:
        names_out = recipe.output_names
    else:
        names_out = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    return names_in, names_out


def _exporter_order(exporter: str, opset: int, keep_bn: bool) -> List[str]:
    """The exporters to try, in order."""
    order = {"auto": ["dynamo", "torchscript"], "dynamo": ["dynamo"], "torchscript": ["torchscript"]}.get(exporter)
    if order is None:
        raise InputError(f"unknown exporter '{exporter}'", hint="use auto, dynamo or torchscript")
    if exporter == "auto" and opset < DYNAMO_MIN_OPSET:
        order = ["torchscript", "dynamo"]  # the dynamo exporter emits opset 18+: it cannot serve old parsers
    if keep_bn:
        if exporter == "dynamo":
            raise InputError("--keep-bn needs the TorchScript exporter (the dynamo exporter folds BatchNorm)",
                             hint="use --exporter torchscript or auto")
        order = ["torchscript"]
    return order


def _run_exporters(order: Sequence[str], module, targs, output: Path, opset: int, names_in, names_out,
                   dynamic_batch: bool, keep_bn: bool, step: Callable[[str], None]):
    """``(model, exporter used, first line of each earlier failure)`` from the first exporter that works."""
    errors: List[str] = []
    for name in order:
        step(f"exporting with the {name} exporter (opset {opset})")
        try:
            extra = {"keep_bn": True} if keep_bn else {}
            model = EXPORTERS[name](module, targs, output, opset, names_in, names_out, dynamic_batch, **extra)
            return model, name, errors
        except Exception as exc:  # exporter failures come in many types; keep the first line of each
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
    raise ExportError("export failed with every exporter: " + " | ".join(errors),
                      hint="set EDGEKIT_DEBUG=1 for the traceback; try --exporter torchscript or another --opset")


def _check_parity(module, model, inputs: List[np.ndarray], rng, shapes, dynamic_batch: bool, atol: float,
                  rtol: float) -> Tuple[float, float]:
    """Max abs / relative error against PyTorch (also at batch 2 for a dynamic batch); ParityError
    when both tolerances are exceeded."""
    max_abs, max_rel, _ = parity(module, model, inputs)
    if dynamic_batch and shapes and shapes[0][0] == 1:
        # also exercise a different batch size, the reason the axis is dynamic
        inputs2 = [rng.standard_normal([2] + s[1:]).astype(np.float32) for s in shapes]
        a2, r2, _ = parity(module, model, inputs2)
        max_abs, max_rel = max(max_abs, a2), max(max_rel, r2)
    if not np.isfinite(max_abs):
        raise ParityError("ONNX output has NaN/Inf where PyTorch's does not (or the other way round)",
                          hint="try the other exporter (--exporter); check the model for ops that overflow")
    if max_abs > atol and max_rel > rtol:
        raise ParityError(f"ONNX output differs from PyTorch: max abs error {max_abs:.3g} > {atol:g} and "
                          f"max relative error {max_rel:.3g} > {rtol:g}",
                          hint="try the other exporter (--exporter), or loosen --atol/--rtol if the model is "
                               "numerically sensitive")
    return max_abs, max_rel
