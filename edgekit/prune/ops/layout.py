"""Handlers of the layout ops: Concat, Split, Slice, Reshape / Flatten, Transpose, Squeeze,
Unsqueeze, Pad, Resize, Expand, DepthToSpace, SpaceToDepth, Gather, Shape.

They move the channel axis or cut it into pieces (segments); Reshape tries the known patterns
(channel shuffle, GroupNorm, attention heads) when it splits the channel axis.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from edgekit.graph.view import attr
from edgekit.prune.ops._base import annotate, const_value, merge_map, node_axes, pin_all, rank_of, tracked_input
from edgekit.prune.ops.attention import merged_heads, split_heads, unmerge
from edgekit.prune.ops.norm import group_norm_reshape
from edgekit.prune.ops.pointwise import h_elementwise


def h_concat(dg, node, anns):
    p = node.proto
    orank = rank_of(dg, p.output[0])
    ax = int(attr(p, "axis", 0))
    if orank is None:
        pin_all(dg, anns, f"{node.name}: Concat of unknown rank")
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
                    pin_all(dg, anns, f"{node.name}: Concat input {name} of unknown size")
                    return
                parts.append(np.full(int(s[ax]), -1, dtype=np.int64))
            dg.depend(name, node, parts[-1])
        annotate(dg, p.output[0], ax, np.concatenate(parts))
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


@tracked_input
def h_split(dg, node, anns, x):
    p = node.proto
    r = rank_of(dg, p.input[0])
    ax = int(attr(p, "axis", 0))
    if r is not None and ax < 0:
        ax += r
    if ax != x[0]:
        for o in p.output:
            annotate(dg, o, x[0], x[1])
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
        annotate(dg, o, ax, piece)
        off += s
    dg.rewrite("split", p, pieces)


@tracked_input
def h_slice(dg, node, anns, x):
    p = node.proto
    if any(a is not None for a in anns[1:]):
        pin_all(dg, anns, f"{node.name}: channels used as Slice bounds")
        return
    vals = [const_value(dg, p.input[i]) if len(p.input) > i and p.input[i] else None for i in range(1, 5)]
    starts, ends, axes, steps = vals
    r = rank_of(dg, p.input[0])
    if starts is None or ends is None or r is None:
        dg.pin(x[1], f"{node.name}: Slice bounds are not constant")
        return
    axes_l = [int(a) + (r if a < 0 else 0) for a in (axes.tolist() if axes is not None else range(len(starts)))]
    if x[0] not in axes_l:
        annotate(dg, p.output[0], x[0], x[1])
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
    annotate(dg, p.output[0], x[0], piece)


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
    annotate(dg, r2.output[0], a, out)
    return True


@tracked_input
def h_reshape(dg, node, anns, x):
    p = node.proto
    if len(anns) > 1 and anns[1] is not None:
        pin_all(dg, anns, f"{node.name}: channels used as a shape")
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
    m = merge_map(ishape, oshape, x[0])
    if m is None:
        if node.op_type == "Reshape" and _shuffle(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and group_norm_reshape(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and unmerge(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and split_heads(dg, node, x, ishape, oshape):
            return
        if node.op_type == "Reshape" and merged_heads(dg, node, x, ishape, oshape):
            return
        dg.pin(x[1], f"{node.name}: {node.op_type} splits the channel axis (e.g. into attention heads)")
        return
    b, outer, inner = m
    out = np.tile(np.repeat(x[1], inner), outer)
    if node.op_type == "Reshape":
        dg.rewrite("reshape", p, [x[1]], axis=b, mul=outer * inner, div=1)
    annotate(dg, p.output[0], b, out)


@tracked_input
def h_transpose(dg, node, anns, x):
    perm = attr(node.proto, "perm")
    if perm is None:
        r = rank_of(dg, node.proto.input[0])
        perm = list(range(r))[::-1]
    annotate(dg, node.proto.output[0], list(perm).index(x[0]), x[1])


@tracked_input
def h_squeeze(dg, node, anns, x):
    p = node.proto
    r = rank_of(dg, p.input[0])
    axes = node_axes(dg, p, r) if r is not None else None
    if axes is None:
        dg.pin(x[1], f"{node.name}: Squeeze axes unknown")
        return
    if not axes:
        axes = [i for i, d in enumerate(dg.shapes.get(p.input[0])) if d == 1]
    if x[0] in axes:
        dg.pin(x[1], f"{node.name}: Squeeze of the channel axis")
        return
    annotate(dg, p.output[0], x[0] - sum(1 for a in axes if a < x[0]), x[1])


@tracked_input
def h_unsqueeze(dg, node, anns, x):
    p = node.proto
    ro = rank_of(dg, p.output[0])
    axes = node_axes(dg, p, ro) if ro is not None else None
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
    annotate(dg, p.output[0], pos, x[1])


@tracked_input
def h_pad(dg, node, anns, x):
    p = node.proto
    r = rank_of(dg, p.input[0])
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
    annotate(dg, p.output[0], x[0], x[1])


@tracked_input
def h_resize(dg, node, anns, x):
    p = node.proto
    if len(p.input) > 3 and p.input[3]:
        sizes = const_value(dg, p.input[3])
        r = rank_of(dg, p.input[0])
        if sizes is None or r is None or len(sizes) != r or int(sizes[x[0]]) != len(x[1]):
            dg.pin(x[1], f"{node.name}: Resize with unknown sizes or sizes that change the channel axis")
            return
        dg.rewrite("reshape", p, [x[1]], axis=x[0], mul=1, div=1, slot=3)
        annotate(dg, p.output[0], x[0], x[1])
        return
    scales_name = p.input[2] if len(p.input) > 2 and p.input[2] else (p.input[1] if node.op_type == "Upsample" else "")
    sc = const_value(dg, scales_name) if scales_name else None
    if sc is None and node.op_type == "Upsample":
        sc = np.asarray(attr(p, "scales", []) or [])
    if sc is None or len(sc) <= x[0] or float(sc[x[0]]) != 1.0:
        dg.pin(x[1], f"{node.name}: Resize scales unknown or change the channel axis")
        return
    annotate(dg, p.output[0], x[0], x[1])


@tracked_input
def h_expand(dg, node, anns, x):
    """Expand broadcasts size-1 dims: the channel axis passes through (an explicit C entry in the
    target shape is rewritten)."""
    p = node.proto
    shape = const_value(dg, p.input[1])
    r, ro = rank_of(dg, p.input[0]), rank_of(dg, p.output[0])
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
    annotate(dg, p.output[0], oa, x[1])


@tracked_input
def h_depth_to_space(dg, node, anns, x):
    p = node.proto
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
    annotate(dg, p.output[0], 1, blocks[0])


@tracked_input
def h_space_to_depth(dg, node, anns, x):
    p = node.proto
    b = int(attr(p, "blocksize"))
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: SpaceToDepth on axis {x[0]}")
        return
    annotate(dg, p.output[0], 1, np.tile(x[1], b * b))


def h_gather(dg, node, anns):
    """Gather on another axis than the channels (ViT class token ``x[:, 0]``): channels pass through
    to the output axis that holds them; gathering channels themselves or by channels is refused."""
    p = node.proto
    x = anns[0]
    if len(anns) > 1 and anns[1] is not None:
        pin_all(dg, anns, f"{node.name}: channels used as Gather indices")
        return
    if x is None:
        return
    r, q = rank_of(dg, p.input[0]), rank_of(dg, p.input[1])
    if r is None or q is None:
        dg.pin(x[1], f"{node.name}: Gather of unknown rank")
        return
    g = int(attr(p, "axis", 0))
    if g < 0:
        g += r
    if g == x[0]:
        dg.pin(x[1], f"{node.name}: Gather along the channel axis")
        return
    annotate(dg, p.output[0], x[0] if x[0] < g else x[0] - 1 + q, x[1])


def h_shape(dg, node, anns):
    """Shape only reads sizes: shape arithmetic downstream follows the pruned sizes by itself."""
