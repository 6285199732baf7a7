"""Small read-only views of an ONNX graph shared by the QDQ placer and the rule checker.

Both only need producer/consumer maps and constant lookup; they never mutate through this view.
"""

from __future__ import annotations

from typing import Optional

from edgekit.graph.view import QUANTIZED_OPS, GraphView, attr, model_is_quantized  # noqa: F401 - re-exported for the QDQ modules

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def weight_output_axis(node, weight_rank: int) -> Optional[int]:
    """The axis of a compute op's weight (input 1) that indexes output channels.

    Conv: W is [K, C/g, R, S] -> 0. ConvTranspose: W is [C, K/g, R, S] -> 1. Gemm: B is [K, N]
    (transB=0) -> 1, or [N, K] (transB=1) -> 0. MatMul: B is [..., K, N] -> last axis.
    """
    op = node.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        return 0 if int(attr(node, "transB", 0)) else 1
    if op == "MatMul":
        return weight_rank - 1 if weight_rank >= 2 else None
    return None
