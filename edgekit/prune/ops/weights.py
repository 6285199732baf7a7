"""Weight resolution: from the tensor an op reads to the stored constant that gets cut.

:func:`weight` walks back from a consumer's input through layout, cast and Q/DQ nodes to the
initializer behind it, marks it as a member of the channels' group (a private copy when several
layers share it) and records what the nodes on the way need: reshape-target rewrites and the
per-channel quantisation parameters cut along.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from edgekit.graph.view import attr
from edgekit.prune.ops._base import const_value, merge_map, numel


# QuantizeLinear -> DequantizeLinear on a float constant is how QAT / TensorRT-style QDQ exports
# (edgekit quantize, pytorch-quantization, ModelOpt) carry a weight; ONNX Runtime's QDQ format stores
# the int8 weight and keeps only the DequantizeLinear.
_WEIGHT_PATH = ("Identity", "Cast", "CastLike", "Transpose", "QuantizeLinear", "DequantizeLinear", "Dropout",
                "Reshape", "Expand")


def _mark_path(dg, extra) -> None:
    """What the walk from a consumer to its stored weight collected: target rewrites of the
    Reshape / Expand nodes on the way, and members (Q/DQ scales) cut with the channels."""
    for e in extra:
        if e[0] == "__rewrite__":
            dg.rewrite("reshape", e[1], [e[3]], axis=e[2], mul=1, div=1)
        else:
            dg.member(*e)


def weight(dg, name: str, axis: int, role: str, atoms: np.ndarray, node) -> bool:
    """Mark the stored tensor behind ``name`` (through Identity/Cast/Transpose/DequantizeLinear).

    Returns False when ``name`` is not a constant, or is one that cannot be cut along ``axis``
    (then nothing is marked and ``atoms`` are pinned with the reason).
    """
    extra = []
    cur, ax = name, axis
    direct = True
    for _ in range(8):
        if cur in dg.consts:
            owner = dg.claims.setdefault(cur, id(node))
            if owner == id(node) and direct and node is not None and name in list(node.input):
                use = dg.claim_use.setdefault(cur, (node, []))
                for i, v in enumerate(node.input):
                    if v == name and i not in use[1]:
                        use[1].append(i)
            if owner != id(node) and direct and node is not None and name in list(node.input):
                # a tensor shared by several layers (exporters de-duplicate equal initializers):
                # this layer gets a private copy so each layer is cut by its own channels
                slots = [i for i, v in enumerate(node.input) if v == name]
                virt = f"{cur}::{node.name or id(node)}:{slots[0]}"
                dg.consts[virt] = dg.consts[cur]
                dg.private[virt] = (node, slots)
                cur = virt
            dg.member(node, cur, ax, role, atoms)
            dg.aliases.setdefault(cur, set()).add(name)
            _mark_path(dg, extra)
            return True
        prod = dg.producer.get(cur)
        if prod is None or prod.op_type not in _WEIGHT_PATH:
            return _refuse(dg, atoms, f"{getattr(node, 'name', '')}: {name} is not a constant")
        if prod.op_type not in ("Identity", "Dropout"):
            direct = False
        if prod.op_type == "Reshape":
            # a reshaped constant (tf2onnx: HWCM depthwise kernel -> [C*M, 1, kh, kw]): follow the axis
            # when it maps one-to-one, and let the rewrite fix the target shape
            ishape, oshape = dg.shapes.get(prod.input[0]), dg.shapes.get(prod.output[0])
            if not ishape or not oshape or None in ishape or None in oshape or const_value(dg, prod.input[1]) is None:
                return _refuse(dg, atoms, f"{prod.name}: reshaped weight {name} of unknown shape")
            mm = merge_map([int(d) for d in oshape], [int(d) for d in ishape], ax)
            if mm is None or mm[1] != 1 or mm[2] != 1:
                return _refuse(dg, atoms, f"{prod.name}: the reshape of weight {name} mixes its channels")
            extra.append(("__rewrite__", prod, ax, atoms))
            ax = mm[0]
        elif prod.op_type == "Expand":
            # a broadcast constant (ViT class token expanded to the batch): the channel axis maps to
            # the same trailing axis of the input; an explicit channel entry in the target is rewritten
            ishape, oshape = dg.shapes.get(prod.input[0]), dg.shapes.get(prod.output[0])
            tgt = const_value(dg, prod.input[1])
            if ishape is None or not oshape or tgt is None or None in oshape:
                return _refuse(dg, atoms, f"{prod.name}: expanded weight {name} of unknown shape")
            iax = ax - (len(oshape) - len(ishape))
            tax = ax - (len(oshape) - len(tgt))
            if tax >= 0 and int(tgt[tax]) not in (1, -1):
                extra.append(("__rewrite__", prod, tax, atoms))
            if iax < 0 or (ishape[iax] == 1 and oshape[ax] != 1):
                # one value for every channel (a scalar or a size-1 axis broadcast over them, as the
                # dynamo exporter writes a zero bias): nothing stored to cut, the broadcast target
                # follows the cut (or follows by itself when it is computed from a pruned shape)
                _mark_path(dg, extra)
                return True
            if ishape[iax] != oshape[ax] or ishape[iax] is None:
                return _refuse(dg, atoms, f"{prod.name}: weight {name} is broadcast along its channels")
            ax = iax
        elif prod.op_type == "Transpose":
            perm = attr(prod, "perm")
            if perm is None:
                rank = len(dg.shapes.get(prod.input[0], ()))
                perm = list(range(rank))[::-1]
            ax = int(perm[ax])
        elif prod.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for slot in (1, 2):
                if len(prod.input) > slot and prod.input[slot] and prod.input[slot] not in dg.consts:
                    return _refuse(dg, atoms, f"{prod.name}: quantisation parameter {prod.input[slot]} "
                                              "is not a constant")
            rank = len(dg.shapes.get(prod.input[0]) or dg.shapes.get(prod.output[0]) or ())
            cuts, why = qparam_cuts(dg, prod, ax, rank)
            if why:
                return _refuse(dg, atoms, why)
            extra += [(prod, t, t_ax, "qparam", atoms) for t, t_ax in cuts]
        cur = prod.input[0]
    return _refuse(dg, atoms, f"{getattr(node, 'name', '')}: {name} is computed by too long a chain")


def qparam_cuts(dg, q, ax: int, rank: int) -> Tuple[List[Tuple[str, int]], Optional[str]]:
    """How the scale / zero point of QuantizeLinear / DequantizeLinear ``q`` follow channels cut along
    axis ``ax`` of its input (of rank ``rank``): ``(cuts, why)``. ``cuts``: ``(tensor, its axis)`` to cut
    with the channels: none per tensor, axis 0 of a 1-D per-channel one along ``ax``, axis ``ax`` of a
    blocked one (opset 21 ``block_size``, the input's rank) blocked along another axis. ``why``: the
    reason they cannot follow (None: they can)."""
    qax = int(attr(q, "axis", 1))
    if qax < 0:
        qax += rank
    blocked = int(attr(q, "block_size", 0) or 0) > 0
    cuts = []
    for slot in (1, 2):
        if len(q.input) <= slot or not q.input[slot]:
            continue
        name = q.input[slot]
        shape = dg.shapes.get(name)
        if shape is None and name in dg.consts:
            shape = dg.consts[name].shape
        if shape is None:
            return [], f"{q.name or q.op_type}: quantisation parameter {name} of unknown shape"
        if numel(shape) <= 1:
            continue
        if blocked:
            if qax == ax or len(shape) != rank:
                return [], f"{q.name or q.op_type}: cutting channels along the blocked axis would split quantisation blocks"
            cuts.append((name, ax))
        elif qax == ax:
            cuts.append((name, 0))
    return cuts, None


def _refuse(dg, atoms, reason: str) -> bool:
    """A weight that cannot follow the channels: its channels stay (``weight`` returns False)."""
    dg.pin(atoms, reason.lstrip(": "))
    return False


def is_const(dg, name: str) -> bool:
    cur = name
    for _ in range(8):
        if cur in dg.consts:
            return True
        prod = dg.producer.get(cur)
        if prod is None or prod.op_type not in _WEIGHT_PATH:
            return False
        cur = prod.input[0]
    return False
