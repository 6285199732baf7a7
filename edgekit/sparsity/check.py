"""One entry point for the N:M checker: a PyTorch module, an ONNX model, or a file of either kind."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import InputError, ModelLoadError, require
from edgekit.sparsity.nm import nm_violations, validate_nm
from edgekit.sparsity.onnx_sparsity import check_nm_onnx
from edgekit.sparsity.report import LayerSparsity, SparsityReport
from edgekit.sparsity.torch_sparsity import check_nm_state_dict, check_nm_torch

_TORCH_KINDS = {"Conv1d", "Conv2d", "Conv3d", "Linear"}


def check_nm(model, n: int = 2, m: int = 4) -> SparsityReport:
    """Check a ``torch.nn.Module``, an ``onnx.ModelProto``, or a path (``.onnx``, TorchScript, or a
    ``.pt`` state_dict) for the N:M pattern in TensorRT's layout, per layer."""
    if hasattr(model, "graph") and hasattr(model, "opset_import"):
        return check_nm_onnx(model, n, m)
    if isinstance(model, (str, Path)):
        return check_nm_file(model, n, m)
    if hasattr(model, "named_modules"):
        if any(True for _ in model.named_modules() if getattr(_[1], "original_name", None)):
            return _check_scripted(model, n, m)
        return check_nm_torch(model, n, m)
    raise InputError(f"cannot check a {type(model).__name__}",
                     hint="pass a torch module, an ONNX ModelProto, or a path to .onnx / TorchScript / .pt")


def check_nm_file(path, n: int = 2, m: int = 4) -> SparsityReport:
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"no such file: {p}", hint="check the path")
    if p.suffix.lower() == ".onnx":
        return check_nm_onnx(str(p), n, m)
    torch = require("torch", "torch", "read PyTorch model files")
    try:
        scripted = torch.jit.load(str(p), map_location="cpu")
        return _check_scripted(scripted, n, m)
    except (RuntimeError, ValueError):
        pass
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled modules; anything else is not a torch file
        raise ModelLoadError(
            f"{p} is neither ONNX, TorchScript nor a weights-only torch checkpoint ({type(exc).__name__})",
            hint="save a TorchScript module (torch.jit.script/trace(...).save) or model.state_dict()",
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{p} holds a {type(obj).__name__}, not a state_dict",
                             hint="save model.state_dict() or a TorchScript module")
    return check_nm_state_dict(obj, n, m)


def _check_scripted(model, n: int, m: int) -> SparsityReport:
    """TorchScript modules keep their original class name and the conv ``groups`` constant."""
    validate_nm(n, m)
    report = SparsityReport(pattern=f"{n}:{m}")
    for name, mod in model.named_modules():
        kind = getattr(mod, "original_name", type(mod).__name__)
        if kind not in _TORCH_KINDS or not hasattr(mod, "weight") or mod.weight is None:
            continue
        w = mod.weight.detach().cpu().numpy()
        zf = float((w == 0).mean())
        groups_attr = int(getattr(mod, "groups", 1)) if kind != "Linear" else 1
        why = None
        if groups_attr != 1:
            why = f"grouped/depthwise conv (groups={groups_attr}): TensorRT's 2:4 kernels cover dense convs only"
        elif w.shape[1] % m:
            why = f"reduction dim {w.shape[1]} not a multiple of {m}"
        if why:
            report.layers.append(LayerSparsity(name, kind, tuple(w.shape), 1, "skipped", why, zero_fraction=zf,
                                               source="torchscript"))
            continue
        groups, bad = nm_violations(w != 0, n, m, axis=1)
        report.layers.append(LayerSparsity(name, kind, tuple(w.shape), 1, "ok" if bad == 0 else "violates",
                                           groups=groups, bad_groups=bad, zero_fraction=zf, source="torchscript"))
    return report
