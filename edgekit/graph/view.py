"""The one read-only index of an ONNX graph: producers, users, constants, attributes.

``GraphView(model)`` maps every tensor name to the node that produces it and the nodes that read
it, and reads initializers and Constant-node values; ``attr`` / ``attrs`` are the attribute
readers every stage uses; ``tensor_array`` / ``collect_consts`` read stored tensors as numpy
arrays (without copying raw data). Nothing here mutates the model.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from onnx import helper, numpy_helper

from edgekit.errors import InputError, UnsupportedError
from edgekit.graph.io import default_opset, raw_dtype, stored_array

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


def check_inputs_defined(model) -> None:
    """Raise InputError when a top-level node reads a tensor that no node, initializer or graph
    input provides (a lost initializer): such a model fails the ONNX checker, and so would any
    output made from it."""
    g = model.graph
    known = {v.name for v in g.input} | {t.name for t in g.initializer}
    known |= {t.values.name for t in g.sparse_initializer}
    known |= {o for n in g.node for o in n.output}
    for n in g.node:
        for name in n.input:
            if name and name not in known:
                raise InputError(f"node '{n.name or n.op_type}' ({n.op_type}) reads '{name}', which no node, "
                                 "initializer or graph input provides: the model is incomplete",
                                 hint="re-export it, or run `python -m onnx.checker` on it to see what is missing")


def model_is_quantized(model) -> List[str]:
    """Names of nodes that show the model was quantized already (empty list when float)."""
    return [n.name or n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS]


def tensor_array(t) -> np.ndarray:
    """A numpy view of a TensorProto (no copy for raw_data)."""
    if t.data_location == 1:
        arr = stored_array(t)  # weights of a lean-loaded model (edgekit.graph.io.load_model_lean)
        if arr is not None:
            return arr
        raise UnsupportedError(f"tensor {t.name} lives in external data that was not loaded",
                               hint="load the model with its .data file (edgekit.graph.io.load_model)")
    dt = raw_dtype(t.data_type)
    if dt is not None and t.raw_data:
        return np.frombuffer(t.raw_data, dtype=dt).reshape(tuple(t.dims))
    return numpy_helper.to_array(t)


def collect_consts(model, max_size: Optional[int] = None) -> Dict[str, np.ndarray]:
    """``{name: array}`` of every initializer (up to ``max_size`` elements when given) and every
    Constant-node output of the top-level graph."""
    consts: Dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if max_size is not None:
            n = 1
            for d in t.dims:
                n *= d
            if n > max_size:
                continue
        consts[t.name] = tensor_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            v = attr(n, "value")
            if v is not None:
                consts[n.output[0]] = tensor_array(v)
            else:
                for k, dt in (("value_float", np.float32), ("value_int", np.int64),
                              ("value_floats", np.float32), ("value_ints", np.int64)):
                    vv = attr(n, k)
                    if vv is not None:
                        consts[n.output[0]] = np.asarray(vv, dtype=dt)
    return consts
