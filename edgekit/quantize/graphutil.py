"""Small read-only views of an ONNX graph shared by the QDQ placer and the rule checker.

Both only need producer/consumer maps and constant lookup; they never mutate through this view.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Ops that only exist in models that were quantized already (QOperator format, integer kernels).
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
    "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool", "QGemm", "QAttention",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits",
})


class GraphView:
    """Producer / consumer maps and constants of one (top-level) ONNX graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        g = model.graph
        self.graph = g
        self.nodes = list(g.node)
        self.producer: Dict[str, object] = {}
        self.consumers: Dict[str, List[object]] = {}
        for n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.initializers = {t.name: t for t in g.initializer}
        self._const_nodes = {n.output[0]: n for n in self.nodes if n.op_type == "Constant" and n.output}
        self._np = numpy_helper
        self.graph_inputs = {i.name for i in g.input if i.name not in self.initializers}
        self.graph_outputs = {o.name for o in g.output}

    def is_const(self, name: str) -> bool:
        return name in self.initializers or name in self._const_nodes

    def const(self, name: str) -> Optional[np.ndarray]:
        """The value of an initializer or Constant-node output, else None."""
        if name in self.initializers:
            return self._np.to_array(self.initializers[name])
        node = self._const_nodes.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def node_name(self, node) -> str:
        return node.name or f"{node.op_type}({node.output[0] if node.output else '?'})"

    def opset(self) -> int:
        from edgekit.graph.io import default_opset

        return default_opset(self.model)


def attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


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


def model_is_quantized(model) -> List[str]:
    """Names of nodes that show the model was quantized already (empty list when float)."""
    return [n.name or n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS]
