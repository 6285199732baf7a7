"""The mapping of a graph-level pruning decision onto the module's ``state_dict``.

:func:`map_decision` relates every pruned stored tensor to its module tensor and turns the
decision into per-axis keep masks of ``state_dict`` entries (:class:`TorchMapping`), including the
BatchNorms the exporter folded into the layer before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from edgekit.errors import TorchMappingError
from edgekit.prune.apply import tensor_masks
from edgekit.prune.torch.export import owner, stored_name
from edgekit.prune.torch.relate import BIAS_OPS, Mapper, Rel


@dataclass
class TorchMapping:
    """Where every pruned ONNX tensor lives in the module, and the resulting cuts."""

    relations: Dict[str, List[Rel]] = field(default_factory=dict)   # ONNX tensor -> relations
    cuts: Dict[str, Dict[int, np.ndarray]] = field(default_factory=dict)  # sd key -> {axis: keep}
    folded_bn: Dict[str, str] = field(default_factory=dict)          # layer -> BN folded into it
    notes: List[str] = field(default_factory=list)


def map_decision(module, dg, keeps, example_input=None) -> TorchMapping:
    """Map the ONNX pruning decision ``keeps`` on ``dg`` (from :func:`~edgekit.prune.core.prune_with_graph`)
    to per-axis keep masks of ``module``'s state_dict entries. ``example_input`` lets folded
    BatchNorms be found (forward hooks); without it they are not cut."""
    masks = tensor_masks(dg, keeps)
    mp = Mapper(module, dg, example_input)
    node_of: Dict[str, object] = {}
    for node, tensor, _axis, _role, _atoms in dg.members:
        node_of.setdefault(tensor, node)
    out = TorchMapping()
    _relate_pruned(mp, dg, masks, node_of, out.relations)
    layer_out = _cut_related(mp, dg, masks, out)
    _add_layer_outputs(mp, out.cuts, layer_out)
    _find_folded_bns(mp, dg, node_of, out, example_input)
    # a BatchNorm reading a layer's output directly loses the same channels, folded or not (when it
    # is in the graph its own tensors were mapped above, to the same channels)
    followers = mp.followers() if (layer_out and example_input is not None) else {}
    for layer, keep in layer_out.items():
        bn = followers.get(layer)
        if bn is None:
            continue
        for k in (k for k in mp.sd if owner(k) == bn and mp.sd[k].ndim == 1):
            if mp.sd[k].shape[0] == len(keep):
                _cut(out.cuts, k, 0, keep)
    return out


def _cut(cuts: Dict[str, Dict[int, np.ndarray]], key: str, axis: int, keep: np.ndarray) -> None:
    """Record that ``key`` keeps ``keep`` along ``axis`` (intersected with an earlier cut)."""
    cur = cuts.setdefault(key, {})
    cur[axis] = keep if axis not in cur else (cur[axis] & keep)


def _relate_pruned(mp: Mapper, dg, masks, node_of: Dict[str, object], relations: Dict[str, List[Rel]]) -> None:
    """Fill ``relations`` for every pruned tensor, or raise naming all tensors that match nothing."""
    # layers' weights first: their folded biases follow them
    order = sorted(masks, key=lambda t: (getattr(node_of.get(t), "op_type", "") in BIAS_OPS
                                         and mp.slot(node_of.get(t), t) == 2, t))
    unmapped: List[str] = []
    for tensor in order:
        rel = mp.relate_all(tensor, node_of.get(tensor), relations)
        if not rel:
            node = node_of.get(tensor)
            shape = "x".join(str(d) for d in np.shape(dg.consts[tensor])) or "scalar"
            unmapped.append(f"{stored_name(dg, tensor)} ({shape}, read by {getattr(node, 'name', '?') or node.op_type})")
            continue
        relations[tensor] = rel
    if unmapped:
        names = sorted(set(unmapped))
        err = TorchMappingError(
            f"pruned ONNX tensor(s) with no counterpart in the module: {', '.join(names[:6])}"
            + (f" (+{len(names) - 6} more)" if len(names) > 6 else ""),
            hint="the tensor is computed in forward() or belongs to another model; protect the node that "
                 "reads it (protect=[...] / --protect) or prune the ONNX model instead of the module")
        err.tensors = names
        raise err


def _cut_related(mp: Mapper, dg, masks, out: TorchMapping) -> Dict[str, np.ndarray]:
    """Cut the module tensors behind every pruned ONNX tensor along the related axes; returns
    ``{layer: kept output channels}`` for the layers whose folded bias was pruned."""
    layer_out: Dict[str, np.ndarray] = {}
    for tensor, axes in masks.items():
        for rel in out.relations[tensor]:
            if rel.kind == "bias":
                layer_out.setdefault(rel.layer, axes[0])
                if rel.key is not None:
                    _cut(out.cuts, rel.key, 0, axes[0])
                continue
            if rel.kind == "const":
                out.notes.append(f"{stored_name(dg, tensor)}: a constant made by the exporter (one repeated value), "
                                 "no module tensor to cut")
                continue
            p = mp.sd[rel.key]
            for ax, keep in axes.items():
                pax = rel.perm[ax]
                if pax is None:
                    continue
                if p.shape[pax] != len(keep):
                    if p.shape[pax] == 1:
                        continue  # broadcast axis of the module tensor
                    raise TorchMappingError(f"pruned ONNX tensor {stored_name(dg, tensor)} axis {ax} ({len(keep)}) "
                                            f"does not line up with {rel.key} {tuple(p.shape)}")
                _cut(out.cuts, rel.key, pax, keep)
    return layer_out


def _add_layer_outputs(mp: Mapper, cuts, layer_out: Dict[str, np.ndarray]) -> None:
    """Add to ``layer_out`` the output channels each Conv / Linear loses by its weight's cut."""
    from torch import nn  # lazy: torch is optional

    for key, axes in list(cuts.items()):
        layer = owner(key)
        mod = mp.modules.get(layer)
        if key.endswith(".weight") and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            oax = 1 if isinstance(mod, nn.modules.conv._ConvTransposeNd) else 0
            if oax in axes:
                keep = axes[oax]
                if isinstance(mod, nn.modules.conv._ConvTransposeNd) and mod.groups > 1:
                    keep = layer_out.get(layer, keep)
                layer_out.setdefault(layer, keep)


def _find_folded_bns(mp: Mapper, dg, node_of: Dict[str, object], out: TorchMapping, example_input) -> None:
    """Which BatchNorms the exporter folded: the module has BN(layer(x)) but the graph has no
    BatchNormalization reading the layer's node."""
    layer_node: Dict[str, object] = {}
    for tensor, rels in out.relations.items():
        for rel in rels:
            if rel.key and rel.kind != "bias" and rel.key.endswith(".weight"):
                layer_node.setdefault(owner(rel.key), node_of.get(tensor))
    readers: Dict[str, List[str]] = {}
    for n in dg.model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    for layer, bn in (mp.followers() if example_input is not None else {}).items():
        node = layer_node.get(layer)
        if node is not None and "BatchNormalization" not in readers.get(node.output[0], ()):
            out.folded_bn[layer] = bn
