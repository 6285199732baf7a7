"""Operator handlers: ONE table keyed by ``op_type``.

A handler receives the dependency graph, the node and the annotation ``(axis, atoms)`` of each
input (None where an input carries no tracked channels). It marks members / unions / pins /
rewrites on the graph and sets the annotation of the node's outputs. An op that is not in
:data:`HANDLERS` is *not prunable through*: whatever channels reach it are pinned with the reason.
The handlers themselves live in :mod:`edgekit.prune.ops`, one module per op family.
"""

from __future__ import annotations

from typing import Callable, Dict

from edgekit.graph.view import attr
from edgekit.prune.ops._base import Ann, const_value
from edgekit.prune.ops.layout import (h_concat, h_depth_to_space, h_expand, h_gather, h_pad, h_reshape, h_resize,
                                      h_shape, h_slice, h_space_to_depth, h_split, h_squeeze, h_transpose,
                                      h_unsqueeze)
from edgekit.prune.ops.linear import h_conv, h_conv_transpose, h_gemm, h_matmul
from edgekit.prune.ops.norm import h_bn, h_groupnorm, h_instnorm, h_layernorm, h_reduce
from edgekit.prune.ops.pointwise import UNARY, h_elementwise, h_pool, h_qdq, h_softmax, h_unary
from edgekit.prune.ops.weights import is_const, weight

__all__ = ["HANDLERS", "UNARY", "Ann", "attr", "const_value", "is_const", "weight"]

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
