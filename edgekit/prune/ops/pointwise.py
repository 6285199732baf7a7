"""Handlers of ops that keep the channel axis as it is: activations, Q/DQ on activations,
broadcasting element-wise ops, pooling and Softmax over another axis.
"""

from __future__ import annotations

from edgekit.graph.view import attr
from edgekit.prune.ops._base import annotate, pin_all, rank_of, tracked_input
from edgekit.prune.ops.weights import is_const, qparam_cuts, weight


UNARY = ("Relu", "LeakyRelu", "PRelu_", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Erf",
         "Softplus", "Softsign", "Elu", "Selu", "Celu", "Mish", "Exp", "Log", "Sqrt", "Neg", "Abs",
         "Identity", "Dropout", "Cast", "Floor", "Ceil", "Round", "Reciprocal", "Sign", "Clip",
         "ThresholdedRelu", "Sin", "Cos", "Not", "IsNaN", "IsInf")


@tracked_input
def h_unary(dg, node, anns, x):
    for o in node.proto.output[:1]:
        annotate(dg, o, x[0], x[1])
    if node.op_type == "Dropout" and len(node.proto.output) > 1 and node.proto.output[1]:
        annotate(dg, node.proto.output[1], x[0], x[1])


@tracked_input
def h_qdq(dg, node, anns, x):
    """QuantizeLinear / DequantizeLinear on an activation: channels pass through, a per-channel scale
    / zero point along the channel axis loses the pruned entries with them (:func:`qparam_cuts`)."""
    p = node.proto
    cuts, why = qparam_cuts(dg, p, x[0], rank_of(dg, p.input[0]) or 0)
    if why:
        dg.pin(x[1], why)
        return
    for t, t_ax in cuts:
        if not weight(dg, t, t_ax, "qparam", x[1], p):
            return
    annotate(dg, p.output[0], x[0], x[1])


def h_elementwise(dg, node, anns):
    """Broadcasting ops: tracked operands are united position by position; per-channel constants
    become members; an untracked activation of full channel size pins the channels."""
    p = node.proto
    tracked = [(i, a) for i, a in enumerate(anns) if a is not None]
    if not tracked:
        return
    orank = rank_of(dg, p.output[0])
    if orank is None:
        pin_all(dg, anns, f"{node.name}: output rank unknown")
        return
    out_ax, out_atoms = None, None
    for i, a in tracked:
        r = rank_of(dg, p.input[i])
        if r is None:
            pin_all(dg, anns, f"{node.name}: operand rank unknown")
            return
        oa = orank - (r - a[0])
        if out_ax is None:
            out_ax, out_atoms = oa, a[1]
        elif oa != out_ax or len(a[1]) != len(out_atoms):
            pin_all(dg, anns, f"{node.name}: operands carry channels on different axes")
            return
        else:
            dg.unite(out_atoms, a[1], f"{node.name}: {node.op_type} mixes channels with fixed ones")
        dg.depend(p.input[i], node, a[1])
    c = len(out_atoms)
    for i, name in enumerate(p.input):
        if not name or anns[i] is not None:
            continue
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
    annotate(dg, p.output[0], out_ax, out_atoms)


@tracked_input
def h_pool(dg, node, anns, x):
    if x[0] != 1:
        dg.pin(x[1], f"{node.name}: pooling with channels on axis {x[0]}")
        return
    annotate(dg, node.proto.output[0], 1, x[1])


@tracked_input
def h_softmax(dg, node, anns, x):
    r = rank_of(dg, node.proto.input[0])
    ax = int(attr(node.proto, "axis", -1))
    if r is not None and ax < 0:
        ax += r
    if r is None or ax == x[0]:
        dg.pin(x[1], f"{node.name}: {node.op_type} over the channel axis")
        return
    annotate(dg, node.proto.output[0], x[0], x[1])
