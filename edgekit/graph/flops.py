"""FLOPs and parameter counting for ONNX graphs.

Convention: a multiply-accumulate counts as 2 FLOPs (Conv, ConvTranspose, Gemm, MatMul); an
elementwise op, activation or normalisation counts 1 FLOP per output element; pooling counts one
per window element read. Parameters are the elements of floating-point and integer weight tensors
(initializers and ``Constant`` nodes with more than one element, shape vectors excluded).
``flops_shapes`` gives the shapes to count with: a symbolic batch axis is taken as 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from edgekit.graph.shapes import Shape, infer_shapes, static_shapes, symbolic_batch, with_batch
from edgekit.graph.view import attr

_ELEMENTWISE_PER_OUT = 1


@dataclass
class NodeCost:
    name: str
    op_type: str
    flops: int
    data_in: Optional[str]   # the activation whose channels scale a weighted op (its input)
    out: Optional[str]
    weighted: bool           # cost scales with input AND output channels
    depthwise: bool = False


def _prod(dims) -> int:
    p = 1
    for d in dims:
        p *= int(d) if d else 1  # unknown / symbolic dims count as 1
    return p


def node_costs(model, shapes: Optional[Dict[str, Shape]] = None, skip=None) -> List[NodeCost]:
    """Per-node FLOPs (see module docstring); unknown shapes count as 0. Nodes whose outputs are
    all in ``skip`` (shape arithmetic folded to constants) cost nothing."""
    if shapes is None:
        shapes = infer_shapes(model)
    skip = skip or ()
    costs: List[NodeCost] = []
    for node in model.graph.node:
        op = node.op_type
        if node.output and all(o in skip for o in node.output):
            costs.append(NodeCost(node.name, op, 0, None, node.output[0], False))
            continue
        out = node.output[0] if node.output else None
        oshape = shapes.get(out) if out else None
        # a symbolic dim (the batch axis of a deployment export) counts as 1: FLOPs per sample
        osize = _prod(oshape) if oshape is not None else 0
        x = node.input[0] if node.input else None
        fl, weighted, dw = 0, False, False
        if op in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w and osize:
                g = int(attr(node, "group", 1))
                if op == "Conv":
                    fl = 2 * osize * _prod(w[1:])
                    dw = w[1] == 1 and g > 1
                else:
                    xs = shapes.get(x)
                    fl = 2 * (_prod(xs) if xs else 0) * _prod(w[1:])
                weighted = True
        elif op in ("Gemm", "MatMul") and len(node.input) > 1:
            a = shapes.get(node.input[0])
            if a and osize:
                k = a[0] if (op == "Gemm" and attr(node, "transA", 0)) else a[-1]
                fl = 2 * osize * int(k or 0)
                weighted = True
        elif op in ("MaxPool", "AveragePool", "LpPool"):
            ks = attr(node, "kernel_shape", [1])
            fl = osize * _prod(ks)
        elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"):
            xs = shapes.get(x)
            fl = _prod(xs) if xs else 0
        elif op in ("Shape", "Constant", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                    "Identity", "Concat", "Split", "Slice", "Gather", "Cast", "ConstantOfShape", "Expand",
                    "DepthToSpace", "SpaceToDepth", "Dropout"):
            fl = 0
        else:
            fl = osize * _ELEMENTWISE_PER_OUT
        costs.append(NodeCost(node.name, op, int(fl), x, out, weighted, dw))
    return costs


def count_params(model) -> int:
    """Parameters of ``model`` (see the module docstring)."""
    n = 0
    for t in model.graph.initializer:
        if len(t.dims) >= 1 and _prod(t.dims) > 1 and t.data_type not in (7,):  # int64 = shapes/indices
            n += _prod(t.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            v = attr(node, "value")
            if v is not None and len(v.dims) >= 1 and _prod(v.dims) > 1 and v.data_type not in (7,):
                n += _prod(v.dims)
    return n


def flops_shapes(model, shapes: Optional[Dict[str, Shape]] = None, known=None,
                 batch_one: Optional[Tuple[Dict[str, Shape], dict]] = None) -> Tuple[Dict[str, Shape], Set[str]]:
    """``(shapes, folded names)`` for FLOPs counting: a symbolic batch axis is taken as 1 (FLOPs per
    sample), so shape arithmetic that depends on it folds too. Counting only, never rewrites.

    ``shapes`` / ``known``: the model's :func:`static_shapes` when the caller has them;
    ``batch_one``: its ``static_shapes`` at batch 1 when the caller has those (symbolic batch)."""
    axes = symbolic_batch(model)
    if axes:
        s1, k1 = batch_one if batch_one is not None else static_shapes(with_batch(model, axes, 1))
        return s1, set(k1)
    if shapes is None or known is None:
        s0, k0 = static_shapes(model)
        shapes = s0 if shapes is None else shapes
        known = k0 if known is None else known
    return shapes, set(known)


def count_flops(model, shapes: Optional[Dict[str, Shape]] = None) -> int:
    return sum(c.flops for c in node_costs(model, shapes))
