"""Map a graph-level pruning decision back to a PyTorch ``nn.Module`` ("before training / fine-tuning").

The module is exported to ONNX in a way that keeps parameter names on the initializers (no BN
folding, no constant folding, so a Linear's weight stays ``fc.weight`` behind a ``Transpose``),
pruned with :func:`edgekit.prune.prune`, and every pruned initializer is mapped back to its
``state_dict`` entry. The dynamo exporter names initializers by the parameter's qualified name
too (sometimes with ``.`` replaced by ``_`` or a ``p_`` / ``b_`` prefix): both are matched.

Result: a pruned ``state_dict`` and a smaller copy of the module (Conv/Linear/BatchNorm sizes
updated), ready to fine-tune and re-export. Module code that hard-codes channel counts (e.g. a
``reshape(b, 64, -1)``) cannot follow; the result is checked against the pruned ONNX model.
"""

from __future__ import annotations

import copy
import io
import re
import warnings
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from edgekit.errors import ParityError, UnsupportedError


def _norm(name: str) -> str:
    n = re.sub(r"[^0-9A-Za-z]+", "_", name)
    for pre in ("p_", "b_", "c_"):
        if n.startswith(pre):
            n = n[len(pre):]
    return n


def _export(module, example, exporter: str):
    import onnx
    import torch

    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            prog = torch.onnx.export(module, (example,), dynamo=True, opset_version=18, verbose=False,
                                     optimize=False)
            return prog.model_proto
        f = io.BytesIO()
        torch.onnx.export(module, (example,), f, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                          input_names=["input"])
        return onnx.load_from_string(f.getvalue())


@dataclass
class TorchPruneResult:
    module: object                 # the smaller nn.Module (eval mode)
    state_dict: Dict[str, object]  # pruned shapes
    report: object                 # PruneReport
    onnx_model: object             # the pruned ONNX model (reference)
    mapped: List[str]              # state_dict keys that were cut
    max_abs_diff: float            # pruned module vs pruned ONNX on the example input


def prune_module(module, example_input, exporter: str = "legacy", check: bool = True, **prune_kwargs
                 ) -> TorchPruneResult:
    """Prune ``module`` with the graph-level pruner and return a smaller module + state_dict."""
    import torch

    from edgekit.prune.apply import tensor_masks
    from edgekit.prune.core import prune_with_graph

    model = _export(module, example_input, exporter)
    pruned_onnx, report, dg = prune_with_graph(model, **prune_kwargs)
    masks = tensor_masks(dg, report.keeps)
    sd = module.state_dict()
    by_norm = {_norm(k): k for k in sd}
    cuts: Dict[str, Dict[int, np.ndarray]] = {}
    unmapped = []
    for tensor, axes in masks.items():
        names = sorted(dg.aliases.get(tensor, ())) or [tensor.split("::")[0]]
        keys = set()
        for nm in names:
            key = nm if nm in sd else by_norm.get(_norm(nm))
            if key is not None:
                keys.add(key)
        if not keys:
            unmapped.append(names[0])
            continue
        for key in keys:
            cur = cuts.setdefault(key, {})
            for ax, k in axes.items():
                cur[ax] = k if ax not in cur else cur[ax] & k
    if unmapped:
        raise UnsupportedError(
            f"pruned ONNX tensors with no matching module parameter: {', '.join(sorted(set(unmapped))[:5])}",
            hint="the exporter renamed or folded these weights; prune the ONNX model instead")
    new_sd = {}
    for k, v in sd.items():
        t = v
        for ax, keep in cuts.get(k, {}).items():
            t = t.index_select(ax, torch.as_tensor(np.nonzero(keep)[0], dtype=torch.long))
        new_sd[k] = t.clone()
    small = copy.deepcopy(module)
    _resize(small, new_sd)
    small.load_state_dict(new_sd)
    small.eval()
    diff = 0.0
    if check:
        from edgekit.graph.verify import run

        with torch.no_grad():
            got = small(example_input).detach().numpy()
        ref = run(pruned_onnx, {pruned_onnx.graph.input[0].name: example_input.detach().numpy()})[0]
        diff = float(np.abs(got - ref).max())
        if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
            raise ParityError(f"the pruned module differs from the pruned ONNX model by {diff:.3g}",
                              hint="the module's forward probably hard-codes channel counts")
    return TorchPruneResult(small, new_sd, report, pruned_onnx, sorted(cuts), diff)


def _resize(module, sd) -> None:
    """Give every layer the shapes of the pruned state_dict (parameters and size attributes)."""
    import torch
    from torch import nn

    for name, mod in module.named_modules():
        prefix = f"{name}." if name else ""
        for pname, p in list(mod.named_parameters(recurse=False)):
            new = sd[prefix + pname]
            if tuple(new.shape) != tuple(p.shape):
                setattr(mod, pname, nn.Parameter(torch.empty_like(new), requires_grad=p.requires_grad))
        for bname, b in list(mod.named_buffers(recurse=False)):
            key = prefix + bname
            if key in sd and b is not None and tuple(sd[key].shape) != tuple(b.shape):
                mod._buffers[bname] = torch.empty_like(sd[key])
        if isinstance(mod, nn.modules.conv._ConvNd) and hasattr(mod, "weight"):
            w = mod.weight
            old_out, old_groups = mod.out_channels, mod.groups
            if old_groups > 1 and isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) \
                    and mod.in_channels == old_groups:  # depthwise: the group count follows the channels
                mult = old_out // old_groups
                mod.groups = w.shape[0] // mult
            if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
            else:
                mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
        elif isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            mod.num_features = mod.weight.shape[0] if mod.weight is not None else mod.running_mean.shape[0]
