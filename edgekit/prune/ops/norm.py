"""Handlers of the normalisations: BatchNorm, InstanceNorm, LayerNorm, GroupNorm, and the
reductions (a ReduceMean over the channels may be a LayerNorm written as ops).

Per-channel norms cut their parameters with the channels; normalising over the channel axis is
refused unless ``dg.allow_norm_approx`` opts in to an approximate cut. GroupNorm as exporters
write it (Reshape -> InstanceNormalization -> Reshape) prunes whole groups.
"""

from __future__ import annotations

from edgekit.graph.view import attr
from edgekit.prune.ops._base import annotate, const_value, node_axes, numel, pin_all, rank_of, tracked_input
from edgekit.prune.ops.weights import weight


def _channel_norm(dg, node, x, op: str, params, role: str) -> None:
    """A per-channel normalisation on axis 1 whose parameters (``params`` input slots) follow the
    channels ``x``: BatchNormalization, InstanceNormalization."""
    p = node.proto
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: {op} channels on axis {x[0]}")
        return
    for name in p.input[params]:
        if not weight(dg, name, 0, role, x[1], p):
            dg.pin(x[1], f"{node.name}: {op} parameter {name} is not a constant")
    if op == "BatchNormalization":
        dg.depend(p.input[0], node, x[1])
    annotate(dg, p.output[0], 1, x[1])


@tracked_input
def h_bn(dg, node, anns, x):
    _channel_norm(dg, node, x, "BatchNormalization", slice(1, 5), "bn")


@tracked_input
def h_instnorm(dg, node, anns, x):
    _channel_norm(dg, node, x, "InstanceNormalization", slice(1, 3), "norm")


_LN_REFUSED = ("normalises over the channel axis (removing channels changes every output; allow_norm_approx / "
               "--prune-layernorm prunes through it approximately)")
_LN_NOTE = "approximate: LayerNorm statistics change"


@tracked_input
def h_layernorm(dg, node, anns, x):
    p = node.proto
    r = rank_of(dg, p.input[0])
    ax = int(attr(p, "axis", -1))
    if r is None:
        dg.pin(x[1], f"{node.name}: LayerNormalization of unknown rank")
        return
    if ax < 0:
        ax += r
    if x[0] >= ax:
        if not dg.allow_norm_approx:
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
    annotate(dg, p.output[0], x[0], x[1])


def h_groupnorm(dg, node, anns):
    pin_all(dg, anns, f"{node.name}: GroupNormalization (whole-group pruning not supported yet)")


def group_norm_reshape(dg, node, x, ishape, oshape):
    """GroupNorm as exporters write it: Reshape [N, C, ...] -> [N, G, -1] -> InstanceNormalization
    (G channels) -> Reshape back. Whole groups are pruned: the C/G channels of a group are united."""
    p = node.proto
    if x[0] != 1 or len(oshape) != 3 or oshape[0] != ishape[0]:
        return False
    g = int(oshape[1])
    c = len(x[1])
    if g <= 0 or c % g or oshape[2] != (c // g) * numel(ishape[2:]):
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
    annotate(dg, back.output[0], 1, x[1])
    return True


@tracked_input
def h_reduce(dg, node, anns, x):
    p = node.proto
    r = rank_of(dg, p.input[0])
    axes = node_axes(dg, p, r) if r is not None else None
    if axes is None or (not axes and not attr(p, "noop_with_empty_axes", 0)):
        dg.pin(x[1], f"{node.name}: {node.op_type} over all axes")
        return
    if x[0] in axes:
        if node.op_type == "ReduceMean" and _decomposed_ln(dg, p, r):
            # a LayerNorm written as ops (tf2onnx, older exporters): the same rule as LayerNormalization;
            # gamma/beta are per-channel constants of the Mul/Add that follow
            if not dg.allow_norm_approx:
                dg.pin(x[1], f"{node.name}: LayerNormalization (decomposed, ReduceMean over the channel axis) "
                             f"{_LN_REFUSED}")
            else:
                dg.approximate(x[1], _LN_NOTE)
            return  # the statistics carry no channels
        dg.pin(x[1], f"{node.name}: {node.op_type} over the channel axis")
        return
    keep = int(attr(p, "keepdims", 1))
    annotate(dg, p.output[0], x[0] if keep else x[0] - sum(1 for a in axes if a < x[0]), x[1])


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
    axes = sorted(node_axes(dg, p, r) or [])
    if not axes or not int(attr(p, "keepdims", 1)):
        return False

    def same(q) -> bool:
        return q is not None and q.op_type == "ReduceMean" and int(attr(q, "keepdims", 1)) and \
            sorted(node_axes(dg, q, rank_of(dg, q.input[0])) or []) == axes

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
