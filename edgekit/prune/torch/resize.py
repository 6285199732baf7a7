"""Applying a :class:`~edgekit.prune.torch.mapping.TorchMapping` to the ``nn.Module``.

:func:`apply_mapping` slices the state_dict, carries the criterion's weight updates (OBSPA
compensation) back into it, and gives a deep copy of the module the new shapes: parameters, the
layers' size attributes, and the ``heads`` / ``head_dim`` style attributes of attention modules
(whole heads removed, or the same dims in every head), so the module's own reshapes still work.
"""

from __future__ import annotations

import copy
import re
from typing import Dict, List, Optional

import numpy as np

from edgekit.errors import TorchMappingError
from edgekit.prune.torch.export import owner, stored_name
from edgekit.prune.torch.mapping import TorchMapping
from edgekit.prune.torch.relate import Mapper, Rel

_HEADS_ATTRS = ("heads", "num_heads", "n_heads", "num_attention_heads", "n_head")
_HEAD_DIM_ATTRS = ("head_dim", "dim_head", "head_size", "attention_head_size", "d_head")
_QKV_NAME = re.compile(r"^(q|k|v|qk|kv|qkv|query|key|value|to_q|to_k|to_v|to_kv|to_qkv|wq|wk|wv|wqkv|"
                       r"q_proj|k_proj|v_proj|qkv_proj|in_proj|c_attn)$")
_OUT_NAME = re.compile(r"^(proj|out|out_proj|o_proj|o|to_out|wo|c_proj|dense|output)$")


def apply_mapping(module, mapping: TorchMapping, dg=None, updates=None, new_biases=None, example_input=None):
    """A smaller deep copy of ``module`` and its state_dict, cut as ``mapping`` says."""
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    notes: List[str] = []
    if updates or new_biases:
        notes += _carry_updates(module, mapping, sd, updates, new_biases, dg, example_input)
        for k in set(sd) - set(module.state_dict()):  # a bias created for a layer: cut like its outputs
            keep = mapping.cuts.get(owner(k) + ".weight", {}).get(0)
            if keep is not None and len(keep) == sd[k].shape[0]:
                mapping.cuts[k] = {0: keep}
    new_sd = {}
    for k, v in sd.items():
        new_sd[k] = _sliced(v, mapping.cuts.get(k, {})).clone() if k in mapping.cuts else v
    small = copy.deepcopy(module)
    notes += _resize(small, new_sd, mapping.cuts)
    small.load_state_dict(new_sd)
    small.eval()
    mapping.notes.extend(notes)
    return small, new_sd


def _sliced(t, axes: Dict[int, np.ndarray]):
    import torch  # lazy: torch is optional

    for ax, keep in axes.items():
        t = t.index_select(ax, torch.as_tensor(np.nonzero(keep)[0], dtype=torch.long))
    return t


# ---- criterion updates --------------------------------------------------------------------------

def _carry_updates(module, mapping: TorchMapping, sd, updates, new_biases, dg, example=None) -> List[str]:
    """Write criterion weight updates (full-size ONNX values) back into the full-size ``sd``."""
    import torch  # lazy: torch is optional

    notes: List[str] = []
    mp = Mapper(module, dg, example)

    def folded(layer: str, node) -> Optional[str]:
        bn = mp.followers().get(layer)
        if bn is None or node is None:
            return mapping.folded_bn.get(layer)
        reads = [n.op_type for n in dg.model.graph.node if node.output[0] in n.input]
        return None if "BatchNormalization" in reads else bn

    def add(key: str, delta) -> None:
        sd[key] = sd[key] + torch.as_tensor(np.asarray(delta), dtype=sd[key].dtype)

    for tensor, value in (updates or {}).items():
        node = next((n for n, t, *_ in dg.members if t == tensor), None)
        rels = mapping.relations.get(tensor)
        if rels is None:
            # updated but not cut (a consumer compensated without losing channels): map it now
            rels = mp.relate_all(tensor, node, mapping.relations) if tensor in dg.consts else None
            if not rels:
                raise TorchMappingError(f"updated ONNX tensor {stored_name(dg, tensor)} has no counterpart in the module")
            mapping.relations[tensor] = rels
        old = np.asarray(dg.consts[tensor], dtype=np.float64)
        for rel in rels:
            new = np.asarray(value, dtype=np.float64)
            if rel.kind == "bias":
                bn = folded(rel.layer, node)
                if bn is not None and f"{bn}.bias" in sd:
                    add(f"{bn}.bias", new - old)
                elif rel.key is not None:
                    add(rel.key, new - old)
                else:
                    raise TorchMappingError(f"updated folded bias {stored_name(dg, tensor)} has no BatchNorm or bias "
                                            f"in module {rel.layer}")
                continue
            if rel.kind == "named":
                raise TorchMappingError(f"updated ONNX tensor {stored_name(dg, tensor)} cannot be related to "
                                        f"{rel.key} by value", hint="use a criterion without weight updates")
            if rel.kind == "const":
                continue
            p = sd[rel.key]
            val = _module_value(rel, new, p.shape)
            sd[rel.key] = torch.as_tensor(np.ascontiguousarray(val), dtype=p.dtype).reshape(p.shape)
    for node_name, bias in (new_biases or {}).items():
        node = next((n for n in dg.model.graph.node if n.name == node_name), None)
        wrel = None
        if node is not None:
            wt = mp.weight_tensor(node)
            rels = mapping.relations.get(wt)
            if rels is None and wt in dg.consts:
                rels = mp.relate_all(wt, node, mapping.relations)
            wrel = next((r for r in rels or () if r.key is not None), None)
        if wrel is None:
            raise TorchMappingError(f"a bias added to {node_name} has no layer in the module")
        layer = owner(wrel.key)
        bn = folded(layer, node)
        b = np.asarray(bias, dtype=np.float64)
        after = mp.followers().get(layer)
        if bn is not None and f"{bn}.bias" in sd:
            add(f"{bn}.bias", b)                     # the graph's bias sits after the folded BN
        elif f"{layer}.bias" in sd:
            add(f"{layer}.bias", b)
        elif after is not None and f"{after}.running_mean" in sd:
            add(f"{after}.running_mean", -b)         # BN(Wx + b) == BN with its mean shifted by -b
        else:
            sd[f"{layer}.bias"] = torch.as_tensor(b, dtype=torch.float32)  # _resize creates the parameter
            notes.append(f"{layer}: bias added (criterion compensation)")
    return notes


def _module_value(rel: Rel, new: np.ndarray, shape) -> np.ndarray:
    """An updated ONNX value brought into the layout of the module tensor ``rel.key`` (of ``shape``):
    the folded scale divided out, axes permuted back, broadcast axes collapsed."""
    if rel.kind == "scaled":
        sc = np.where(rel.scale != 0, rel.scale, 1.0)
        new = np.moveaxis(np.moveaxis(new, rel.axis, -1) / sc, -1, rel.axis)
    if rel.kind == "reshape":
        axes_a = [i for i, t in enumerate(rel.perm) if t is not None]
        order = np.argsort([rel.perm[i] for i in axes_a])
        val = np.transpose(new.reshape([new.shape[i] for i in axes_a]), order).reshape(shape)
    else:
        val = np.transpose(new, np.argsort(rel.perm))
    if rel.kind == "bcast":
        for ax, d in enumerate(shape):
            if d == 1 and val.shape[ax] != 1:
                val = val.take([0], axis=ax)
    return val


# ---- new shapes ---------------------------------------------------------------------------------

def _resize(module, sd, cuts: Dict[str, Dict[int, np.ndarray]]) -> List[str]:
    """Give every layer the shapes of the pruned state_dict (parameters and size attributes)."""
    import torch  # lazy: torch is optional
    from torch import nn

    notes: List[str] = []
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
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(mod, "bias", 0) is None \
                and prefix + "bias" in sd:
            mod.bias = nn.Parameter(torch.empty_like(sd[prefix + "bias"]))
        _resize_attributes(name, mod, cuts)
        _resize_heads(name, mod, cuts, notes)
    return notes


def _resize_attributes(name: str, mod, cuts: Dict[str, Dict[int, np.ndarray]]) -> None:
    """Set a layer's size attributes (channels, features, groups) from its resized tensors."""
    from torch import nn  # lazy: torch is optional

    prefix = f"{name}." if name else ""
    if isinstance(mod, nn.modules.conv._ConvNd) and getattr(mod, "weight", None) is not None:
        w = mod.weight
        transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd)
        oax = 1 if transposed else 0
        old_out = mod.out_channels
        g = mod.groups
        if g > 1:
            keep = cuts.get(prefix + "weight", {}).get(0)
            if keep is None:
                keep = np.ones(w.shape[0], dtype=bool)
            if not transposed and mod.in_channels == g:     # depthwise: groups follow the channels
                mod.groups = w.shape[0] // (old_out // g)
            elif len(keep) % g == 0:                       # whole groups removed, or the same per group
                per = keep.reshape(g, -1)
                rows = per.any(1)
                if (per.all(1) | ~rows).all() and not rows.all():
                    mod.groups = int(rows.sum())
        if transposed:
            mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
        else:
            mod.out_channels, mod.in_channels = w.shape[oax], w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        src = mod.weight if mod.weight is not None else mod.running_mean
        if src is not None:
            mod.num_features = src.shape[0]
    elif isinstance(mod, nn.LayerNorm):
        if mod.weight is not None:
            mod.normalized_shape = tuple(mod.weight.shape)
    elif isinstance(mod, nn.GroupNorm) and mod.weight is not None:
        old = mod.num_channels
        mod.num_channels = mod.weight.shape[0]
        mod.num_groups = max(1, mod.num_groups * mod.num_channels // old)
    elif isinstance(mod, nn.MultiheadAttention):
        if prefix + "in_proj_weight" in cuts or prefix + "out_proj.weight" in cuts:
            raise TorchMappingError(f"{name}: nn.MultiheadAttention cannot hold pruned projections "
                                    "(its inner width must equal embed_dim)",
                                    hint="write attention with separate Linear layers (like "
                                         "edgekit.models.vit), or --protect it")


def _resize_heads(name: str, mod, cuts, notes: List[str]) -> None:
    """Update ``heads`` / ``head_dim`` style attributes from the pruned q/k/v projections."""
    from torch import nn  # lazy: torch is optional

    h_attr = next((a for a in _HEADS_ATTRS if isinstance(getattr(mod, a, None), int)
                   and not isinstance(getattr(mod, a), bool)), None)
    d_attr = next((a for a in _HEAD_DIM_ATTRS if isinstance(getattr(mod, a, None), int)), None)
    if h_attr is None or d_attr is None or isinstance(mod, nn.MultiheadAttention):
        return
    heads, hd = getattr(mod, h_attr), getattr(mod, d_attr)
    keep = _head_keep(name, mod, cuts, heads * hd)
    if keep is None:
        return
    per = keep.reshape(heads, hd)
    counts = per.sum(1)
    if ((counts == 0) | (counts == hd)).all():
        new_heads, new_hd = int((counts == hd).sum()), hd
    elif (counts == counts[0]).all():
        new_heads, new_hd = heads, int(counts[0])
    else:
        raise TorchMappingError(f"{name}: the pruned attention keeps a different number of dims per head "
                                f"({sorted(set(counts.tolist()))}), which {type(mod).__name__} cannot express",
                                hint="prune with --attention heads or head-dims")
    if (new_heads, new_hd) == (heads, hd):
        return
    setattr(mod, h_attr, new_heads)
    setattr(mod, d_attr, new_hd)
    for extra in ("all_head_size", "inner_dim"):
        if isinstance(getattr(mod, extra, None), int) and getattr(mod, extra) == heads * hd:
            setattr(mod, extra, new_heads * new_hd)
    notes.append(f"{name}: {h_attr} {heads}->{new_heads}, {d_attr} {hd}->{new_hd}")


def _head_keep(name: str, mod, cuts, inner: int) -> Optional[np.ndarray]:
    """The keep mask over the ``inner`` (heads x head_dim) axis of one projection, or None.

    The head-structured axes are the q/k/v (or fused qkv) projections' outputs and the output
    projection's inputs; other cuts of those layers (the residual width) say nothing about heads.
    """
    from torch import nn  # lazy: torch is optional

    prefix = f"{name}." if name else ""
    linears = [(c, ch) for c, ch in mod.named_children() if isinstance(ch, nn.Linear)]
    for cname, child in linears:
        low = cname.lower()
        if _QKV_NAME.match(low):
            ax = 0
        elif _OUT_NAME.match(low):
            ax = 1
        else:
            continue
        k = cuts.get(f"{prefix}{cname}.weight", {}).get(ax)
        if k is not None and len(k) % inner == 0:
            return k.reshape(len(k) // inner, inner)[0]   # fused qkv: one row per projection
    if not any(_QKV_NAME.match(c.lower()) or _OUT_NAME.match(c.lower()) for c, _ in linears):
        for cname, child in linears[:-1]:                  # unknown names: the last Linear projects out
            k = cuts.get(f"{prefix}{cname}.weight", {}).get(0)
            if k is not None and len(k) % inner == 0:
                return k.reshape(len(k) // inner, inner)[0]
    return None
