"""Handlers of the ops that own weights and create channels: Conv, ConvTranspose, Gemm, MatMul.

Each starts a new source of output channels, cuts its weight (and bias) along them and along the
input channels that reach it; MatMul of two activations (attention) couples or passes the
channels of its operands instead.
"""

from __future__ import annotations

import numpy as np

from edgekit.graph.view import attr
from edgekit.prune.ops._base import annotate, const_value, numel, pin_all, rank_of
from edgekit.prune.ops.weights import is_const, weight


def h_conv(dg, node, anns):
    p = node.proto
    w = const_value(dg, p.input[1]) if is_const(dg, p.input[1]) else None
    wshape = dg.shapes.get(p.input[1])
    x = anns[0]
    if w is None and wshape is None or not is_const(dg, p.input[1]):
        pin_all(dg, anns, f"{node.name}: Conv weight is not a constant")
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
    annotate(dg, p.output[0], 1, out)


def h_conv_transpose(dg, node, anns):
    p = node.proto
    g = int(attr(p, "group", 1))
    wshape = dg.shapes.get(p.input[1])
    if g != 1 or wshape is None or not is_const(dg, p.input[1]):
        pin_all(dg, anns, f"{node.name}: grouped or non-constant ConvTranspose")
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
    annotate(dg, p.output[0], 1, out)


def _linear_bias(dg, p, name, out, n):
    s = dg.shapes.get(name)
    if s is None:
        dg.pin(out, f"{p.name}: bias of unknown shape")
        return
    if len(s) >= 1 and s[-1] == n and numel(s) == n:
        if not weight(dg, name, len(s) - 1, "out", out, p):
            dg.pin(out, f"{p.name}: bias is not a constant")
    elif numel(s) != 1:
        dg.pin(out, f"{p.name}: bias of shape {s} does not follow the output features")


def h_gemm(dg, node, anns):
    p = node.proto
    ta, tb = int(attr(p, "transA", 0)), int(attr(p, "transB", 0))
    a, b = anns[0], anns[1] if len(anns) > 1 else None
    bshape = dg.shapes.get(p.input[1])
    if b is not None or bshape is None or not is_const(dg, p.input[1]):
        pin_all(dg, anns, f"{node.name}: Gemm with a non-constant B")
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
    annotate(dg, p.output[0], 1, out)


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
        orank = rank_of(dg, p.output[0])
        if orank is None:
            dg.pin(out, f"{node.name}: MatMul output rank unknown")
            return
        annotate(dg, p.output[0], orank - 1, out)
        return
    # two activations (attention): q @ k^T contracts the head dims -> q and k dims are coupled and
    # the scores carry no channels; attn @ v passes v's head dims through
    ra, rb, ro = rank_of(dg, p.input[0]), rank_of(dg, p.input[1]), rank_of(dg, p.output[0])
    if None not in (ra, rb, ro) and min(ra, rb) >= 2:
        if a is not None and b is not None and a[0] == ra - 1 and b[0] == rb - 2:
            dg.unite(a[1], b[1], f"{node.name}: MatMul contraction mixes channels with fixed ones")
            return
        if a is None and b is not None and b[0] == rb - 1 and not is_const(dg, p.input[1]):
            annotate(dg, p.output[0], ro - 1, b[1])
            return
        # whole-head attention: channels (heads) on a broadcast batch axis of both operands, at the
        # same output position, pass through (q @ k^T and attn @ v act per head)
        oa = ro - (ra - a[0]) if a is not None else None
        ob = ro - (rb - b[0]) if b is not None else None
        if a is not None and a[0] < ra - 2 and (b is None or b[0] < rb - 2):
            sb = dg.shapes.get(p.input[1])
            if b is not None and oa == ob and len(a[1]) == len(b[1]):
                dg.unite(a[1], b[1], f"{node.name}: batched MatMul pairs heads with fixed ones")
                annotate(dg, p.output[0], oa, a[1])
                return
            if b is None and sb is not None and oa - (ro - rb) >= 0 and sb[oa - (ro - rb)] == 1:
                annotate(dg, p.output[0], oa, a[1])  # the other operand broadcasts over the heads
                return
        if a is None and b is not None and b[0] < rb - 2:
            sa = dg.shapes.get(p.input[0])
            if sa is not None and ob - (ro - ra) >= 0 and sa[ob - (ro - ra)] == 1:
                annotate(dg, p.output[0], ob, b[1])
                return
    pin_all(dg, anns, f"{node.name}: MatMul of two activations with channels on an axis it mixes")
