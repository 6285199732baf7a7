"""The one read-only index of an ONNX graph: producers, users, constants, attributes.

``GraphView(model)`` maps every tensor name to the node that produces it and the nodes that read
it, and reads initializers and Constant-node values; ``attr`` / ``attrs`` are the attribute
readers every stage uses. Nothing here mutates the model.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from onnx import helper, numpy_helper

from edgekit.graph.io import default_opset

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
        return default_opset(self.model)


def attr(node, name: str, default=None):
    """The value of attribute ``name`` of ``node`` (ints, floats, strings, tensors as ONNX gives
    them), or ``default`` when the node does not set it."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def attrs(node) -> dict:
    """Every attribute of ``node`` as ``{name: value}``."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def model_is_quantized(model) -> List[str]:
    """Names of nodes that show the model was quantized already (empty list when float)."""
    return [n.name or n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS]
