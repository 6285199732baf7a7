"""Operator handlers: ONE table keyed by ``op_type``.

A handler receives the dependency graph, the node and the annotation ``(axis, atoms)`` of each
input (None where an input carries no tracked channels). It marks members / unions / pins /
rewrites on the graph and sets the annotation of the node's outputs. An op that is not in
:data:`HANDLERS` is *not prunable through*: whatever channels reach it are pinned with the reason.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

Ann = Tuple[int, np.ndarray]


def attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


# ---- weight resolution ------------------------------------------------------------------------

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
            mm = _merge_map([int(d) for d in oshape], [int(d) for d in ishape], ax)
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
            cuts, why = _qparam_cuts(dg, prod, ax, rank)
            if why:
                return _refuse(dg, atoms, why)
            extra += [(prod, t, t_ax, "qparam", atoms) for t, t_ax in cuts]
        cur = prod.input[0]
    return _refuse(dg, atoms, f"{getattr(node, 'name', '')}: {name} is computed by too long a chain")


def _qparam_cuts(dg, q, ax: int, rank: int) -> Tuple[List[Tuple[str, int]], Optional[str]]:
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
        if _prod(shape) <= 1:
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


def const_value(dg, name: str) -> Optional[np.ndarray]:
    """Value of a constant or of folded shape arithmetic (see ``fold.py``)."""
    if not name:
        return None
    v = dg.consts.get(name)
    return v if v is not None else dg.known.get(name)


def _set(dg, name: str, axis: int, atoms: np.ndarray) -> None:
    dg.ann[name] = (int(axis), np.asarray(atoms, dtype=np.int64))


def _rank(dg, name: str) -> Optional[int]:
    s = dg.shapes.get(name)
    return None if s is None else len(s)


def _pin_all(dg, anns, reason: str) -> None:
    for a in anns:
        if a is not None:
            dg.pin(a[1], reason)


# ---- handlers ---------------------------------------------------------------------------------

def h_conv(dg, node, anns):
    p = node.proto
    w = const_value(dg, p.input[1]) if is_const(dg, p.input[1]) else None
    wshape = dg.shapes.get(p.input[1])
    x = anns[0]
    if w is None and wshape is None or not is_const(dg, p.input[1]):
        _pin_all(dg, anns, f"{node.name}: Conv weight is not a constant")
        return
    cout, cin_g = int(wshape[0]), int(wshape[1])
    g = int(attr(p, "group", 1))
    has_b = len(p.input) > 2 and p.input[2]
    if x is not None and x[0] != 1:
        dg.pin(x[1], f"{node.name}: channels reach Conv on axis {x[0]}, not 1")
        x = None
    if g == 1:
        if x is not None:
            weight(dg, p.input[1], 1, "in", x[1], p)
            dg.depend(p.input[0], node, x[1])
        out = dg.new_source(node, cout)
    elif cin_g == 1 and cout % g == 0:  # depthwise (channel multiplier cout // g)
        mult = cout // g
        if x is None:
            src = dg.new_source(node, g)
            dg.pin(src, f"{node.name}: depthwise conv whose input channels are not prunable")
            x = (1, src)
        out = np.repeat(x[1], mult)
        dg.depend(p.input[0], node, x[1])
        dg.rewrite("conv_group", p, [x[1]])
    else:  # grouped: prune the same slot in every group, the group count stays
        if x is not None:
            slots = x[1].reshape(g, cin_g)
            for k in range(1, g):
                dg.unite(slots[0], slots[k], f"{node.name}: grouped conv slot mixed with a fixed channel")
            weight(dg, p.input[1], 1, "in", slots[0], p)
            dg.depend(p.input[0], node, x[1])
        src = dg.new_source(node, cout // g)
        out = np.tile(src, g)
    weight(dg, p.input[1], 0, "out", out, p)
    if has_b:
        weight(dg, p.input[2], 0, "out", out, p)
    _set(dg, p.output[0], 1, out)


def h_conv_transpose(dg, node, anns):
    p = node.proto
    g = int(attr(p, "group", 1))
    wshape = dg.shapes.get(p.input[1])
    if g != 1 or wshape is None or not is_const(dg, p.input[1]):
        _pin_all(dg, anns, f"{node.name}: grouped or non-constant ConvTranspose")
        if wshape is None:
            return
    x = anns[0]
    if g == 1 and x is not None and x[0] == 1:
        weight(dg, p.input[1], 0, "in", x[1], p)
        dg.depend(p.input[0], node, x[1])
    elif x is not None:
        dg.pin(x[1], f"{node.name}: ConvTranspose input channels on axis {x[0]}")
    out = dg.new_source(node, int(wshape[1]) * g)
    if g != 1:
        dg.pin(out, f"{node.name}: grouped ConvTranspose")
    weight(dg, p.input[1], 1, "out", out, p)
    if len(p.input) > 2 and p.input[2]:
        weight(dg, p.input[2], 0, "out", out, p)
    _set(dg, p.output[0], 1, out)


def _linear_bias(dg, p, name, out, n):
    s = dg.shapes.get(name)
    if s is None:
        dg.pin(out, f"{p.name}: bias of unknown shape")
        return
    if len(s) >= 1 and s[-1] == n and _prod(s) == n:
        if not weight(dg, name, len(s) - 1, "out", out, p):
            dg.pin(out, f"{p.name}: bias is not a constant")
    elif _prod(s) != 1:
        dg.pin(out, f"{p.name}: bias of shape {s} does not follow the output features")


def h_gemm(dg, node, anns):
    p = node.proto
    ta, tb = int(attr(p, "transA", 0)), int(attr(p, "transB", 0))
    a, b = anns[0], anns[1] if len(anns) > 1 else None
    bshape = dg.shapes.get(p.input[1])
    if b is not None or bshape is None or not is_const(dg, p.input[1]):
        _pin_all(dg, anns, f"{node.name}: Gemm with a non-constant B")
        return
    if a is not None:
        if ta or a[0] != 1:
            dg.pin(a[1], f"{node.name}: Gemm input channels not on the reduced axis")
        else:
            weight(dg, p.input[1], 1 if tb else 0, "in", a[1], p)
            dg.depend(p.input[0], node, a[1])
    n = int(bshape[0] if tb else bshape[1])
    out = dg.new_source(node, n)
    weight(dg, p.input[1], 0 if tb else 1, "out", out, p)
    if len(p.input) > 2 and p.input[2]:
        if len(anns) > 2 and anns[2] is not None:
            dg.unite(anns[2][1], out, f"{node.name}: Gemm C")
        else:
            _linear_bias(dg, p, p.input[2], out, n)
    _set(dg, p.output[0], 1, out)


def h_matmul(dg, node, anns):
    p = node.proto
    a, b = anns[0], anns[1]
    bshape = dg.shapes.get(p.input[1])
    ashape = dg.shapes.get(p.input[0])
    if b is None and bshape is not None and len(bshape) == 2 and is_const(dg, p.input[1]):
        if a is not None:
            if ashape is None or a[0] != len(ashape) - 1:
                dg.pin(a[1], f"{node.name}: MatMul input channels not on the last axis")
            else:
                weight(dg, p.input[1], 0, "in", a[1], p)
                dg.depend(p.input[0], node, a[1])
        out = dg.new_source(node, int(bshape[1]))
        weight(dg, p.input[1], 1, "out", out, p)
        orank = _rank(dg, p.output[0])
        if orank is None:
            dg.pin(out, f"{node.name}: MatMul output rank unknown")
            return
        _set(dg, p.output[0], orank - 1, out)
        return
    # two activations (attention): q @ k^T contracts the head dims -> q and k dims are coupled and
    # the scores carry no channels; attn @ v passes v's head dims through
    ra, rb, ro = _rank(dg, p.input[0]), _rank(dg, p.input[1]), _rank(dg, p.output[0])
    if None not in (ra, rb, ro) and min(ra, rb) >= 2:
        if a is not None and b is not None and a[0] == ra - 1 and b[0] == rb - 2:
            dg.unite(a[1], b[1], f"{node.name}: MatMul contraction mixes channels with fixed ones")
            return
        if a is None and b is not None and b[0] == rb - 1 and not is_const(dg, p.input[1]):
            _set(dg, p.output[0], ro - 1, b[1])
            return
        # whole-head attention: channels (heads) on a broadcast batch axis of both operands, at the
        # same output position, pass through (q @ k^T and attn @ v act per head)
        oa = ro - (ra - a[0]) if a is not None else None
        ob = ro - (rb - b[0]) if b is not None else None
        if a is not None and a[0] < ra - 2 and (b is None or b[0] < rb - 2):
            sb = dg.shapes.get(p.input[1])
            if b is not None and oa == ob and len(a[1]) == len(b[1]):
                dg.unite(a[1], b[1], f"{node.name}: batched MatMul pairs heads with fixed ones")
                _set(dg, p.output[0], oa, a[1])
                return
            if b is None and sb is not None and oa - (ro - rb) >= 0 and sb[oa - (ro - rb)] == 1:
                _set(dg, p.output[0], oa, a[1])  # the other operand broadcasts over the heads
                return
        if a is None and b is not None and b[0] < rb - 2:
            sa = dg.shapes.get(p.input[0])
            if sa is not None and ob - (ro - ra) >= 0 and sa[ob - (ro - ra)] == 1:
                _set(dg, p.output[0], ob, b[1])
                return
    _pin_all(dg, anns, f"{node.name}: MatMul of two activations with channels on an axis it mixes")


def _channel_norm(dg, node, anns, op: str, params, role: str) -> None:
    """A per-channel normalisation on axis 1 whose parameters (``params`` input slots) follow the
    channels: BatchNormalization, InstanceNormalization."""
    p = node.proto
    x = anns[0]
    if x is None:
        return
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: {op} channels on axis {x[0]}")
        return
    for name in p.input[params]:
        if not weight(dg, name, 0, role, x[1], p):
            dg.pin(x[1], f"{node.name}: {op} parameter {name} is not a constant")
    if op == "BatchNormalization":
        dg.depend(p.input[0], node, x[1])
    _set(dg, p.output[0], 1, x[1])


def h_bn(dg, node, anns):
    _channel_norm(dg, node, anns, "BatchNormalization", slice(1, 5), "bn")


def h_instnorm(dg, node, anns):
    _channel_norm(dg, node, anns, "InstanceNormalization", slice(1, 3), "norm")


_LN_REFUSED = ("normalises over the channel axis (removing channels changes every output; allow_norm_approx / "
               "--prune-layernorm prunes through it approximately)")
_LN_NOTE = "approximate: LayerNorm statistics change"


def h_layernorm(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    r = _rank(dg, p.input[0])
    ax = int(attr(p, "axis", -1))
    if r is None:
        dg.pin(x[1], f"{node.name}: LayerNormalization of unknown rank")
        return
    if ax < 0:
        ax += r
    if x[0] >= ax:
        if not getattr(dg, "allow_norm_approx", False):
            dg.pin(x[1], f"{node.name}: LayerNormalization {_LN_REFUSED}")
            return
        # opt-in: slice gamma/beta on the channel axis; the mean/variance are then taken over the
        # kept channels only, so the outputs change: the group is reported as approximate
        for name in p.input[1:3]:
            if not name:
                continue
            s = dg.shapes.get(name)
            if s is None:
                dg.pin(x[1], f"{node.name}: LayerNormalization parameter of unknown shape")
                return
            pa = x[0] - (r - len(s))
            if pa < 0 or s[pa] == 1:
                continue  # broadcast over the channel axis
            if not weight(dg, name, pa, "norm", x[1], p):
                dg.pin(x[1], f"{node.name}: LayerNormalization parameter {name} is not a constant")
                return
        dg.approximate(x[1], _LN_NOTE)
    _set(dg, p.output[0], x[0], x[1])


def h_groupnorm(dg, node, anns):
    _pin_all(dg, anns, f"{node.name}: GroupNormalization (whole-group pruning not supported yet)")


def h_unary(dg, node, anns):
    x = anns[0]
    if x is None:
        return
    for o in node.proto.output[:1]:
        _set(dg, o, x[0], x[1])
    if node.op_type == "Dropout" and len(node.proto.output) > 1 and node.proto.output[1]:
        _set(dg, node.proto.output[1], x[0], x[1])


def h_qdq(dg, node, anns):
    """QuantizeLinear / DequantizeLinear on an activation: channels pass through, a per-channel scale
    / zero point along the channel axis loses the pruned entries with them (:func:`_qparam_cuts`)."""
    x = anns[0]
    if x is None:
        return
    p = node.proto
    cuts, why = _qparam_cuts(dg, p, x[0], _rank(dg, p.input[0]) or 0)
    if why:
        dg.pin(x[1], why)
        return
    for t, t_ax in cuts:
        if not weight(dg, t, t_ax, "qparam", x[1], p):
            return
    _set(dg, p.output[0], x[0], x[1])


def h_pool(dg, node, anns):
    x = anns[0]
    if x is None:
        return
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: pooling with channels on axis {x[0]}")
        return
    _set(dg, node.proto.output[0], 1, x[1])


def h_softmax(dg, node, anns):
    x = anns[0]
    if x is None:
        return
    r = _rank(dg, node.proto.input[0])
    ax = int(attr(node.proto, "axis", -1))
    if r is not None and ax < 0:
        ax += r
    if r is None or ax == x[0]:
        dg.pin(x[1], f"{node.name}: {node.op_type} over the channel axis")
        return
    _set(dg, node.proto.output[0], x[0], x[1])


def h_elementwise(dg, node, anns):
    """Broadcasting ops: tracked operands are united position by position; per-channel constants
    become members; an untracked activation of full channel size pins the channels."""
    p = node.proto
    tracked = [(i, a) for i, a in enumerate(anns) if a is not None]
    if not tracked:
        return
    orank = _rank(dg, p.output[0])
    if orank is None:
        _pin_all(dg, anns, f"{node.name}: output rank unknown")
        return
    out_ax, out_atoms = None, None
    first_slot = 1 if node.op_type == "Where" else 0
    for i, a in tracked:
        r = _rank(dg, p.input[i])
        if r is None:
            _pin_all(dg, anns, f"{node.name}: operand rank unknown")
            return
        oa = orank - (r - a[0])
        if out_ax is None:
            out_ax, out_atoms = oa, a[1]
        elif oa != out_ax or len(a[1]) != len(out_atoms):
            _pin_all(dg, anns, f"{node.name}: operands carry channels on different axes")
            return
        else:
            dg.unite(out_atoms, a[1], f"{node.name}: {node.op_type} mixes channels with fixed ones")
        dg.depend(p.input[i], node, a[1])
    c = len(out_atoms)
    for i, name in enumerate(p.input):
        if not name or anns[i] is not None:
            continue
        if node.op_type == "Where" and i == 0:
            pass
        s = dg.shapes.get(name)
        if s is None:
            dg.pin(out_atoms, f"{node.name}: operand {name} of unknown shape")
            continue
        d = out_ax - (orank - len(s))
        if d < 0 or s[d] == 1:
            continue
        if s[d] == c and is_const(dg, name):
            if not weight(dg, name, d, "elementwise", out_atoms, p):
                dg.pin(out_atoms, f"{node.name}: per-channel operand {name} not constant")
        else:
            dg.pin(out_atoms, f"{node.name}: {node.op_type} with an operand ({name}) whose channels "
                              "cannot be pruned")
    del first_slot
    _set(dg, p.output[0], out_ax, out_atoms)


def h_concat(dg, node, anns):
    p = node.proto
    orank = _rank(dg, p.output[0])
    ax = int(attr(p, "axis", 0))
    if orank is None:
        _pin_all(dg, anns, f"{node.name}: Concat of unknown rank")
        return
    if ax < 0:
        ax += orank
    tracked = [a for a in anns if a is not None]
    if not tracked:
        return
    if all(a[0] == ax for a in tracked):
        parts = []
        for i, name in enumerate(p.input):
            if anns[i] is not None:
                parts.append(anns[i][1])
            else:
                s = dg.shapes.get(name)
                if s is None or s[ax] is None:
                    _pin_all(dg, anns, f"{node.name}: Concat input {name} of unknown size")
                    return
                parts.append(np.full(int(s[ax]), -1, dtype=np.int64))
            dg.depend(name, node, parts[-1])
        _set(dg, p.output[0], ax, np.concatenate(parts))
        return
    # concatenation along another axis: the channel axis is shared by all inputs
    h_elementwise(dg, node, anns)


def _split_sizes(dg, p, total, n_out) -> Optional[List[int]]:
    sizes = attr(p, "split")
    if sizes is None and len(p.input) > 1 and p.input[1]:
        v = const_value(dg, p.input[1])
        if v is None:
            return None
        sizes = v.tolist()
    if sizes is None:
        if total % n_out == 0:
            sizes = [total // n_out] * n_out
        else:  # opset 18 num_outputs: last chunk smaller
            ch = -(-total // n_out)
            sizes = [ch] * (n_out - 1) + [total - ch * (n_out - 1)]
    return [int(s) for s in sizes]


def h_split(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    r = _rank(dg, p.input[0])
    ax = int(attr(p, "axis", 0))
    if r is not None and ax < 0:
        ax += r
    if ax != x[0]:
        for o in p.output:
            _set(dg, o, x[0], x[1])
        return
    sizes = _split_sizes(dg, p, len(x[1]), len(p.output))
    if sizes is None or sum(sizes) != len(x[1]):
        dg.pin(x[1], f"{node.name}: Split sizes are not constant")
        return
    pieces, off = [], 0
    for o, s in zip(p.output, sizes):
        piece = x[1][off:off + s]
        pieces.append(piece)
        dg.segment(piece)
        _set(dg, o, ax, piece)
        off += s
    dg.rewrite("split", p, pieces)


def h_slice(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    if any(a is not None for a in anns[1:]):
        _pin_all(dg, anns, f"{node.name}: channels used as Slice bounds")
        return
    vals = [const_value(dg, p.input[i]) if len(p.input) > i and p.input[i] else None for i in range(1, 5)]
    starts, ends, axes, steps = vals
    r = _rank(dg, p.input[0])
    if starts is None or ends is None or r is None:
        dg.pin(x[1], f"{node.name}: Slice bounds are not constant")
        return
    axes_l = [int(a) + (r if a < 0 else 0) for a in (axes.tolist() if axes is not None else range(len(starts)))]
    if x[0] not in axes_l:
        _set(dg, p.output[0], x[0], x[1])
        return
    k = axes_l.index(x[0])
    step = int(steps.tolist()[k]) if steps is not None else 1
    c = len(x[1])
    if step != 1:
        dg.pin(x[1], f"{node.name}: strided Slice on the channel axis")
        return
    s, e = int(starts.tolist()[k]), int(ends.tolist()[k])
    s = max(0, min(c, s + c if s < 0 else s))
    e = max(0, min(c, e + c if e < 0 else e))
    piece = x[1][s:e]
    dg.segment(piece)
    dg.rewrite("slice", p, [x[1]], k=k, start=s, end=e)
    _set(dg, p.output[0], x[0], piece)


def _merge_map(ishape, oshape, a):
    """For a reshape, find the output axis holding input axis ``a``; return (b, outer, inner) such
    that output positions on ``b`` are ``tile(repeat(atoms, inner), outer)``; None if ``a`` is split."""
    if any(d is None for d in ishape) or any(d is None for d in oshape):
        return None
    pre_o = 1
    for b, ob in enumerate(oshape):
        # find the contiguous input range [j0, j1) that forms output axis b
        pre_i = 1
        for j0 in range(len(ishape) + 1):
            if pre_i == pre_o:
                prod, j1 = 1, j0
                while j1 < len(ishape) and prod < ob:
                    prod *= ishape[j1]
                    j1 += 1
                if prod == ob and j0 <= a < j1:
                    # skip trailing/leading 1s ambiguity: require a's own dim inside the range
                    return b, _prod(ishape[j0:a]), _prod(ishape[a + 1:j1])
                break
            if j0 < len(ishape):
                pre_i *= ishape[j0]
        pre_o *= ob
    return None


def _shuffle(dg, node, x, ishape, oshape):
    """Reshape(N,C,H,W -> N,g,C/g,H,W) -> Transpose(swap 1,2) -> Reshape(-> N,C,H,W)."""
    p = node.proto
    a = x[0]
    if len(oshape) != len(ishape) + 1 or tuple(oshape[:a]) != tuple(ishape[:a]) or \
            oshape[a] * oshape[a + 1] != ishape[a] or tuple(oshape[a + 2:]) != tuple(ishape[a + 1:]):
        return False
    users = dg.users.get(p.output[0], [])
    if len(users) != 1 or users[0].op_type != "Transpose":
        return False
    t = users[0]
    perm = list(attr(t, "perm") or [])
    want = list(range(len(oshape)))
    want[a], want[a + 1] = want[a + 1], want[a]
    if perm != want:
        return False
    users2 = dg.users.get(t.output[0], [])
    if len(users2) != 1 or users2[0].op_type != "Reshape":
        return False
    r2 = users2[0]
    if tuple(dg.shapes.get(r2.output[0]) or ()) != tuple(ishape):
        return False
    g, cg = int(oshape[a]), int(oshape[a + 1])
    slots = x[1].reshape(g, cg)
    for k in range(1, g):
        dg.unite(slots[0], slots[k], f"{node.name}: channel shuffle slot mixed with fixed channels")
    out = slots.T.reshape(-1)
    dg.rewrite("reshape", p, [x[1]], axis=a + 1, mul=1, div=g)
    dg.rewrite("reshape", r2, [x[1]], axis=a, mul=1, div=1)
    dg.handled.update({t.name or id(t), r2.name or id(r2)})
    dg.ann[t.output[0]] = None
    _set(dg, r2.output[0], a, out)
    return True


def _group_norm(dg, node, x, ishape, oshape):
    """GroupNorm as exporters write it: Reshape [N, C, ...] -> [N, G, -1] -> InstanceNormalization
    (G channels) -> Reshape back. Whole groups are pruned: the C/G channels of a group are united."""
    p = node.proto
    if x[0] != 1 or len(oshape) != 3 or oshape[0] != ishape[0]:
        return False
    g = int(oshape[1])
    c = len(x[1])
    if g <= 0 or c % g or oshape[2] != (c // g) * _prod(ishape[2:]):
        return False
    users = dg.users.get(p.output[0], [])
    if len(users) != 1 or users[0].op_type != "InstanceNormalization":
        return False
    inorm = users[0]
    users2 = dg.users.get(inorm.output[0], [])
    if len(users2) != 1 or users2[0].op_type != "Reshape":
        return False
    back = users2[0]
    if tuple(dg.shapes.get(back.output[0]) or ()) != tuple(ishape) or const_value(dg, back.input[1]) is None:
        return False
    rows = x[1].reshape(g, c // g)
    for j in range(1, c // g):
        dg.unite(rows[:, 0], rows[:, j], f"{node.name}: GroupNorm group mixed with fixed channels")
    reps = rows[:, 0]
    for name in inorm.input[1:3]:
        if not weight(dg, name, 0, "norm", reps, inorm):
            dg.pin(x[1], f"{inorm.name}: GroupNorm parameters are not constant")
    dg.rewrite("reshape", p, [reps], axis=1, mul=1, div=1)
    dg.rewrite("reshape", back, [x[1]], axis=1, mul=1, div=1)
    dg.handled.update({inorm.name or id(inorm), back.name or id(back)})
    _set(dg, back.output[0], 1, x[1])
    return True


def _chunks_picked(dg, name: str, axis: int, depth: int = 0) -> bool:
    """True when every reader of ``name`` picks single entries of ``axis`` (Gather of a scalar index,
    or Split on it, after layout-only ops): a fused projection cut into q, k, v chunks
    (nn.MultiheadAttention's ``unflatten(-1, (3, E))``), not attention heads."""
    users = dg.users.get(name, [])
    if not users or depth > 8:
        return False
    for u in users:
        op = u.op_type
        if op == "Gather":
            idx = const_value(dg, u.input[1])
            r = _rank(dg, name)
            g = int(attr(u, "axis", 0))
            g = g + r if r is not None and g < 0 else g
            if u.input[0] != name or idx is None or idx.ndim != 0 or g != axis:
                return False
        elif op == "Split":
            r = _rank(dg, name)
            g = int(attr(u, "axis", 0))
            if r is None or (g + r if g < 0 else g) != axis:
                return False
        elif op == "Transpose":
            perm = attr(u, "perm")
            if perm is None or not _chunks_picked(dg, u.output[0], list(perm).index(axis), depth + 1):
                return False
        elif op in ("Squeeze", "Unsqueeze"):
            r = _rank(dg, u.input[0] if op == "Squeeze" else u.output[0])
            axes = _axes(dg, u, r) if r is not None else None
            if axes is None or (op == "Squeeze" and (not axes or axis in axes)):
                return False
            if op == "Squeeze":
                new = axis - sum(1 for a in axes if a < axis)
            else:
                rest = [o for o in range(r) if o not in axes]
                new = rest[axis]
            if not _chunks_picked(dg, u.output[0], new, depth + 1):
                return False
        else:
            return False
    return True


def _head_split_shapes(ishape, oshape, a):
    """``(k, omap)`` when a reshape splits axis ``a`` into k + 1 axes and keeps the others; ``omap``
    maps axes of the compact form to ``oshape``. Size-1 axes are ignored, so (L, 1, C) -> (L, H, C/H)
    (nn.MultiheadAttention merging a batch of 1 into the heads) counts as a split too."""
    for squeeze in (False, True):
        if squeeze:
            keep_i = [j for j, d in enumerate(ishape) if d != 1 or j == a]
            omap = [j for j, d in enumerate(oshape) if d != 1]
            i2, o2, a2 = [ishape[j] for j in keep_i], [oshape[j] for j in omap], keep_i.index(a)
        else:
            i2, o2, a2, omap = list(ishape), list(oshape), a, list(range(len(oshape)))
        k = len(o2) - len(i2)
        if k >= 1 and o2[:a2] == i2[:a2] and _prod(o2[a2:a2 + k + 1]) == i2[a2] and \
                o2[a2 + k + 1:] == i2[a2 + 1:]:
            return k, a2, o2, omap
    return None


def _split_heads(dg, node, x, ishape, oshape):
    """Reshape [..., C, ...] -> [..., g1, ..., gk, C/(g1..gk), ...]: attention heads (k = 1) or a fused
    Q/K/V projection split into [3, heads, head dim] (k = 2). ``attention == "heads"``: the channels
    of one head (the last-but-one split axis) stay together across the other split axes, so whole
    heads are removed and the head count in the target shrinks. ``"head-dims"``: the same slot of
    the last split axis is removed everywhere, heads keep equal sizes. A split whose outer axis is
    then indexed (q, k, v chunks of a fused projection) keeps the same slot of every chunk in both
    modes; the heads are split (and decided) by the Reshape that follows each chunk."""
    found = _head_split_shapes(ishape, oshape, x[0])
    if found is None:
        return False
    k, a2, o2, omap = found
    dims = [int(d) for d in o2[a2:a2 + k + 1]]
    pos = x[1].reshape(dims)
    keep_ax = k - 1 if getattr(dg, "attention", "head-dims") == "heads" else k
    if k == 1 and _chunks_picked(dg, node.proto.output[0], omap[a2]):
        keep_ax = k
    # rows: one per index on the kept split axis, holding every position with that index
    rows = np.moveaxis(pos, keep_ax, 0).reshape(dims[keep_ax], -1)
    for j in range(1, rows.shape[1]):
        dg.unite(rows[:, 0], rows[:, j], f"{node.name}: head slot mixed with fixed channels")
    chans = rows[:, 0]
    dg.segment(chans)
    b = omap[a2 + keep_ax]
    dg.rewrite("reshape", node.proto, [chans], axis=b, mul=1, div=1)
    _set(dg, node.proto.output[0], b, chans)
    return True


def _merged_heads(dg, node, x, ishape, oshape):
    """(..., B, C, ...) -> (..., B*g, C/g, ...): nn.MultiheadAttention's (L, N, E) -> (L, N*heads, head
    dim), the heads merged into the batch axis. Whole heads: the merged axis holds the kept heads
    once per batch entry (its target entry is B * kept); head dims: the last axis holds them."""
    a = x[0]
    if a < 1 or len(oshape) != len(ishape) or oshape[:a - 1] != ishape[:a - 1] or \
            oshape[a + 1:] != ishape[a + 1:] or oshape[a - 1] % ishape[a - 1]:
        return False
    batch, g = ishape[a - 1], oshape[a - 1] // ishape[a - 1]
    if g < 2 or g * oshape[a] != ishape[a]:
        return False
    pos = x[1].reshape(g, oshape[a])
    heads = getattr(dg, "attention", "head-dims") == "heads"
    rows = pos if heads else pos.T
    for j in range(1, rows.shape[1]):
        dg.unite(rows[:, 0], rows[:, j], f"{node.name}: head slot mixed with fixed channels")
    chans = rows[:, 0]
    dg.segment(chans)
    if heads:
        dg.rewrite("reshape", node.proto, [chans], axis=a - 1, mul=batch, div=1)
        _set(dg, node.proto.output[0], a - 1, np.tile(chans, batch))
    else:
        dg.rewrite("reshape", node.proto, [chans], axis=a, mul=1, div=1)
        _set(dg, node.proto.output[0], a, chans)
    return True


def _unmerge(dg, node, x, ishape, oshape):
    """(..., B*n, ...) -> (..., B, n, ...) where the axis repeats the same n channels for each of the B
    entries (heads merged into a batch, see :func:`_merged_heads`): the channels go to the inner axis."""
    a = x[0]
    if len(oshape) != len(ishape) + 1 or oshape[:a] != ishape[:a] or oshape[a + 2:] != ishape[a + 1:] or \
            oshape[a] * oshape[a + 1] != ishape[a] or oshape[a] < 2:
        return False
    pos = x[1].reshape(oshape[a], oshape[a + 1])
    if not (pos == pos[0]).all():
        return False
    dg.rewrite("reshape", node.proto, [pos[0]], axis=a + 1, mul=1, div=1)
    _set(dg, node.proto.output[0], a + 1, pos[0])
    return True


def h_reshape(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    if len(anns) > 1 and anns[1] is not None:
        _pin_all(dg, anns, f"{node.name}: channels used as a shape")
        return
    ishape, oshape = dg.shapes.get(p.input[0]), dg.shapes.get(p.output[0])
    if ishape and oshape and ishape[0] is None and oshape[0] is None and x[0] != 0:
        # a symbolic batch axis carried through unchanged
        ishape, oshape = (1,) + tuple(ishape[1:]), (1,) + tuple(oshape[1:])
    if ishape is None or oshape is None or None in ishape or None in oshape:
        dg.pin(x[1], f"{node.name}: {node.op_type} with a dynamic shape around the channel axis")
        return
    ishape, oshape = [int(d) for d in ishape], [int(d) for d in oshape]
    if node.op_type == "Reshape" and const_value(dg, p.input[1]) is None:
        dg.pin(x[1], f"{node.name}: Reshape target is not a constant")
        return
    m = _merge_map(ishape, oshape, x[0])
    if m is None:
        if node.op_type == "Reshape" and _shuffle(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and _group_norm(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and _unmerge(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and _split_heads(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and _merged_heads(dg, node, x, ishape, oshape):
            return
        dg.pin(x[1], f"{node.name}: {node.op_type} splits the channel axis (e.g. into attention heads)")
        return
    b, outer, inner = m
    out = np.tile(np.repeat(x[1], inner), outer)
    if node.op_type == "Reshape":
        dg.rewrite("reshape", p, [x[1]], axis=b, mul=outer * inner, div=1)
    _set(dg, p.output[0], b, out)


def h_transpose(dg, node, anns):
    x = anns[0]
    if x is None:
        return
    perm = attr(node.proto, "perm")
    if perm is None:
        r = _rank(dg, node.proto.input[0])
        perm = list(range(r))[::-1]
    _set(dg, node.proto.output[0], list(perm).index(x[0]), x[1])


def _axes(dg, p, r):
    ax = attr(p, "axes")
    if ax is None and len(p.input) > 1 and p.input[1]:
        v = const_value(dg, p.input[1])
        if v is None:
            return None
        ax = v.tolist()
    if ax is None:
        return []
    return [int(a) + (r if a < 0 else 0) for a in ax]


def h_squeeze(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    r = _rank(dg, p.input[0])
    axes = _axes(dg, p, r) if r is not None else None
    if axes is None:
        dg.pin(x[1], f"{node.name}: Squeeze axes unknown")
        return
    if not axes:
        axes = [i for i, d in enumerate(dg.shapes.get(p.input[0])) if d == 1]
    if x[0] in axes:
        dg.pin(x[1], f"{node.name}: Squeeze of the channel axis")
        return
    _set(dg, p.output[0], x[0] - sum(1 for a in axes if a < x[0]), x[1])


def h_unsqueeze(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    ro = _rank(dg, p.output[0])
    axes = _axes(dg, p, ro) if ro is not None else None
    if axes is None:
        dg.pin(x[1], f"{node.name}: Unsqueeze axes unknown")
        return
    pos, k = 0, 0
    for o in range(ro):
        if o in axes:
            continue
        if k == x[0]:
            pos = o
            break
        k += 1
    _set(dg, p.output[0], pos, x[1])


def h_reduce(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    r = _rank(dg, p.input[0])
    axes = _axes(dg, p, r) if r is not None else None
    if axes is None or (not axes and not attr(p, "noop_with_empty_axes", 0)):
        dg.pin(x[1], f"{node.name}: {node.op_type} over all axes")
        return
    if x[0] in axes:
        if node.op_type == "ReduceMean" and _decomposed_ln(dg, p, r):
            # a LayerNorm written as ops (tf2onnx, older exporters): the same rule as LayerNormalization;
            # gamma/beta are per-channel constants of the Mul/Add that follow
            if not getattr(dg, "allow_norm_approx", False):
                dg.pin(x[1], f"{node.name}: LayerNormalization (decomposed, ReduceMean over the channel axis) "
                             f"{_LN_REFUSED}")
            else:
                dg.approximate(x[1], _LN_NOTE)
            return  # the statistics carry no channels
        dg.pin(x[1], f"{node.name}: {node.op_type} over the channel axis")
        return
    keep = int(attr(p, "keepdims", 1))
    _set(dg, p.output[0], x[0] if keep else x[0] - sum(1 for a in axes if a < x[0]), x[1])


def _is_square(dg, n, d: str) -> bool:
    if n.op_type == "Mul":
        return list(n.input) == [d, d]
    if n.op_type == "Pow" and n.input[0] == d:
        e = const_value(dg, n.input[1])
        return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return False


def _decomposed_ln(dg, p, r) -> bool:
    """True when ReduceMean ``p`` is the mean or the variance of a LayerNorm written as ops:
    mu = ReduceMean(x); d = x - mu; var = ReduceMean(d * d or d ** 2), over the same axes."""
    axes = sorted(_axes(dg, p, r) or [])
    if not axes or not int(attr(p, "keepdims", 1)):
        return False

    def same(q) -> bool:
        return q is not None and q.op_type == "ReduceMean" and int(attr(q, "keepdims", 1)) and \
            sorted(_axes(dg, q, _rank(dg, q.input[0])) or []) == axes

    sq = dg.producer.get(p.input[0])  # p as the variance
    if sq is not None and sq.op_type in ("Mul", "Pow"):
        sub = dg.producer.get(sq.input[0])
        if sub is not None and sub.op_type == "Sub" and _is_square(dg, sq, sub.output[0]):
            mu = dg.producer.get(sub.input[1])
            if same(mu) and mu.input[0] == sub.input[0]:
                return True
    for sub in dg.users.get(p.output[0], []):  # p as the mean
        if sub.op_type != "Sub" or list(sub.input) != [p.input[0], p.output[0]]:
            continue
        for sq in dg.users.get(sub.output[0], []):
            if _is_square(dg, sq, sub.output[0]) and any(same(v) for v in dg.users.get(sq.output[0], [])):
                return True
    return False


def h_pad(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    r = _rank(dg, p.input[0])
    pads = attr(p, "pads")
    if pads is None and len(p.input) > 1:
        v = const_value(dg, p.input[1])
        pads = None if v is None else v.tolist()
    if pads is None or r is None:
        dg.pin(x[1], f"{node.name}: Pad amounts unknown")
        return
    axes = list(range(r))
    if len(p.input) > 3 and p.input[3]:
        v = const_value(dg, p.input[3])
        if v is None:
            dg.pin(x[1], f"{node.name}: Pad axes unknown")
            return
        axes = [int(a) + (r if a < 0 else 0) for a in v.tolist()]
    n = len(axes)
    for i, a in enumerate(axes):
        if a == x[0] and (pads[i] != 0 or pads[i + n] != 0):
            dg.pin(x[1], f"{node.name}: Pad adds channels")
            return
    _set(dg, p.output[0], x[0], x[1])


def h_resize(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    if len(p.input) > 3 and p.input[3]:
        sizes = const_value(dg, p.input[3])
        r = _rank(dg, p.input[0])
        if sizes is None or r is None or len(sizes) != r or int(sizes[x[0]]) != len(x[1]):
            dg.pin(x[1], f"{node.name}: Resize with unknown sizes or sizes that change the channel axis")
            return
        dg.rewrite("reshape", p, [x[1]], axis=x[0], mul=1, div=1, slot=3)
        _set(dg, p.output[0], x[0], x[1])
        return
    scales_name = p.input[2] if len(p.input) > 2 and p.input[2] else (p.input[1] if node.op_type == "Upsample" else "")
    sc = const_value(dg, scales_name) if scales_name else None
    if sc is None and node.op_type == "Upsample":
        sc = np.asarray(attr(p, "scales", []) or [])
    if sc is None or len(sc) <= x[0] or float(sc[x[0]]) != 1.0:
        dg.pin(x[1], f"{node.name}: Resize scales unknown or change the channel axis")
        return
    _set(dg, p.output[0], x[0], x[1])


def h_expand(dg, node, anns):
    """Expand broadcasts size-1 dims: the channel axis passes through (an explicit C entry in the
    target shape is rewritten)."""
    p = node.proto
    x = anns[0]
    if x is None:
        return
    shape = const_value(dg, p.input[1])
    r, ro = _rank(dg, p.input[0]), _rank(dg, p.output[0])
    if shape is None or r is None or ro is None:
        dg.pin(x[1], f"{node.name}: Expand target unknown")
        return
    oa = ro - (r - x[0])
    ent = int(shape[oa - (ro - len(shape))]) if oa - (ro - len(shape)) >= 0 else 1
    if ent not in (1, -1, len(x[1])):
        dg.pin(x[1], f"{node.name}: Expand changes the channel axis")
        return
    if ent == len(x[1]) and ent != 1:
        dg.rewrite("reshape", p, [x[1]], axis=oa - (ro - len(shape)), mul=1, div=1, slot=1)
    _set(dg, p.output[0], oa, x[1])


def h_depth_to_space(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    b = int(attr(p, "blocksize"))
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: DepthToSpace on axis {x[0]}")
        return
    c = len(x[1]) // (b * b)
    mode = attr(p, "mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    blocks = x[1].reshape(b * b, c) if mode == "DCR" else x[1].reshape(c, b * b).T
    for k in range(1, b * b):
        dg.unite(blocks[0], blocks[k], f"{node.name}: DepthToSpace block mixed with fixed channels")
    dg.segment(blocks[0])
    _set(dg, p.output[0], 1, blocks[0])


def h_space_to_depth(dg, node, anns):
    p = node.proto
    x = anns[0]
    if x is None:
        return
    b = int(attr(p, "blocksize"))
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: SpaceToDepth on axis {x[0]}")
        return
    _set(dg, p.output[0], 1, np.tile(x[1], b * b))


def h_gather(dg, node, anns):
    """Gather on another axis than the channels (ViT class token ``x[:, 0]``): channels pass through
    to the output axis that holds them; gathering channels themselves or by channels is refused."""
    p = node.proto
    x = anns[0]
    if len(anns) > 1 and anns[1] is not None:
        _pin_all(dg, anns, f"{node.name}: channels used as Gather indices")
        return
    if x is None:
        return
    r, q = _rank(dg, p.input[0]), _rank(dg, p.input[1])
    if r is None or q is None:
        dg.pin(x[1], f"{node.name}: Gather of unknown rank")
        return
    g = int(attr(p, "axis", 0))
    if g < 0:
        g += r
    if g == x[0]:
        dg.pin(x[1], f"{node.name}: Gather along the channel axis")
        return
    _set(dg, p.output[0], x[0] if x[0] < g else x[0] - 1 + q, x[1])


def h_shape(dg, node, anns):
    """Shape only reads sizes: shape arithmetic downstream follows the pruned sizes by itself."""


def h_output_free(dg, node, anns):
    """Ops that take tracked channels and emit nothing channel-shaped are handled per op above."""


UNARY = ("Relu", "LeakyRelu", "PRelu_", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Erf",
         "Softplus", "Softsign", "Elu", "Selu", "Celu", "Mish", "Exp", "Log", "Sqrt", "Neg", "Abs",
         "Identity", "Dropout", "Cast", "Floor", "Ceil", "Round", "Reciprocal", "Sign", "Clip",
         "ThresholdedRelu", "Sin", "Cos", "Not", "IsNaN", "IsInf")

HANDLERS: Dict[str, Callable] = {
    "Conv": h_conv,
    "ConvTranspose": h_conv_transpose,
    "Gemm": h_gemm,
    "MatMul": h_matmul,
    "BatchNormalization": h_bn,
    "QuantizeLinear": h_qdq,
    "DequantizeLinear": h_qdq,
    "InstanceNormalization": h_instnorm,
    "LayerNormalization": h_layernorm,
    "GroupNormalization": h_groupnorm,
    **{op: h_unary for op in UNARY if not op.endswith("_")},
    "CastLike": h_unary,  # channels follow input 0; input 1 only lends its element type
    **{op: h_elementwise for op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
                                    "PRelu", "Where", "Equal", "Less", "Greater", "And", "Or")},
    **{op: h_pool for op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool")},
    "Softmax": h_softmax,
    "LogSoftmax": h_softmax,
    "Concat": h_concat,
    "Split": h_split,
    "Slice": h_slice,
    "Reshape": h_reshape,
    "Flatten": h_reshape,
    "Transpose": h_transpose,
    "Squeeze": h_squeeze,
    "Unsqueeze": h_unsqueeze,
    **{op: h_reduce for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2",
                               "ReduceL1", "ReduceProd", "ReduceSumSquare", "ReduceLogSumExp")},
    "Pad": h_pad,
    "Resize": h_resize,
    "Upsample": h_resize,
    "DepthToSpace": h_depth_to_space,
    "Expand": h_expand,
    "SpaceToDepth": h_space_to_depth,
    "Shape": h_shape,
    "Gather": h_gather,
}
