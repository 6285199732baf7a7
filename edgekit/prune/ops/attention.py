"""Reshapes around attention heads: splitting the channels into heads, heads merged into the batch
axis and back, and fused q/k/v projections cut into chunks.

``dg.attention`` decides how heads couple channels: ``"heads"`` removes whole heads,
``"head-dims"`` removes the same slot of every head. Each function returns False when the
reshape is not its pattern (then the next one is tried).
"""

from __future__ import annotations

import numpy as np

from edgekit.graph.view import attr
from edgekit.prune.ops._base import annotate, const_value, node_axes, numel, rank_of


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
            r = rank_of(dg, name)
            g = int(attr(u, "axis", 0))
            g = g + r if r is not None and g < 0 else g
            if u.input[0] != name or idx is None or idx.ndim != 0 or g != axis:
                return False
        elif op == "Split":
            r = rank_of(dg, name)
            g = int(attr(u, "axis", 0))
            if r is None or (g + r if g < 0 else g) != axis:
                return False
        elif op == "Transpose":
            perm = attr(u, "perm")
            if perm is None or not _chunks_picked(dg, u.output[0], list(perm).index(axis), depth + 1):
                return False
        elif op in ("Squeeze", "Unsqueeze"):
            r = rank_of(dg, u.input[0] if op == "Squeeze" else u.output[0])
            axes = node_axes(dg, u, r) if r is not None else None
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
        if k >= 1 and o2[:a2] == i2[:a2] and numel(o2[a2:a2 + k + 1]) == i2[a2] and \
                o2[a2 + k + 1:] == i2[a2 + 1:]:
            return k, a2, o2, omap
    return None


def split_heads(dg, node, x, ishape, oshape):
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
    keep_ax = k - 1 if dg.attention == "heads" else k
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
    annotate(dg, node.proto.output[0], b, chans)
    return True


def merged_heads(dg, node, x, ishape, oshape):
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
    heads = dg.attention == "heads"
    rows = pos if heads else pos.T
    for j in range(1, rows.shape[1]):
        dg.unite(rows[:, 0], rows[:, j], f"{node.name}: head slot mixed with fixed channels")
    chans = rows[:, 0]
    dg.segment(chans)
    if heads:
        dg.rewrite("reshape", node.proto, [chans], axis=a - 1, mul=batch, div=1)
        annotate(dg, node.proto.output[0], a - 1, np.tile(chans, batch))
    else:
        dg.rewrite("reshape", node.proto, [chans], axis=a, mul=1, div=1)
        annotate(dg, node.proto.output[0], a, chans)
    return True


def unmerge(dg, node, x, ishape, oshape):
    """(..., B*n, ...) -> (..., B, n, ...) where the axis repeats the same n channels for each of the B
    entries (heads merged into a batch, see :func:`merged_heads`): the channels go to the inner axis."""
    a = x[0]
    if len(oshape) != len(ishape) + 1 or oshape[:a] != ishape[:a] or oshape[a + 2:] != ishape[a + 1:] or \
            oshape[a] * oshape[a + 1] != ishape[a] or oshape[a] < 2:
        return False
    pos = x[1].reshape(oshape[a], oshape[a + 1])
    if not (pos == pos[0]).all():
        return False
    dg.rewrite("reshape", node.proto, [pos[0]], axis=a + 1, mul=1, div=1)
    annotate(dg, node.proto.output[0], a + 1, pos[0])
    return True
