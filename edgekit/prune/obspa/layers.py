"""The graph as obspa reads it: constants (with this run's updates) and channel-mixing consumers.

:class:`ModelWeights` holds every initializer and Constant-node value of a model, the
producer / user maps, the new values earlier groups' updates gave to one node's constants, and
turns a Conv / Gemm / MatMul into a :class:`Consumer` matrix. :class:`Moments` is the record of a
tensor's statistics that the rest of the package passes around.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from onnx import numpy_helper

from edgekit.graph.view import GraphView, attr
from edgekit.prune.obspa import obs as om


@dataclass
class Moments:
    mean: np.ndarray
    cov: np.ndarray
    source: str  # "bn", "ln", "weight-only", "assumed-input", "calib", combined with "+"
    # (u, a, diag) when cov == a * u.T @ u + diag(diag) with few rows u (fewer than channels): lets
    # obs.precision invert it in O(n^2 r) (Woodbury)
    lowrank: Optional[tuple] = None


@dataclass
class Consumer:
    """A layer that mixes the group's channels: its input as a ``(rows, n_in)`` matrix."""

    node: object
    input_name: str
    kind: str  # conv | gemm | matmul
    wmat: np.ndarray
    n_out: int
    weight_name: str
    bias: Optional[np.ndarray]
    bias_name: Optional[str]
    # where the bias is an input: (node, input slot); the consumer itself, slot 2, for Conv / Gemm
    # (also when it has none yet), the Add after a MatMul; None: a bare MatMul, nowhere to put one
    bias_at: Optional[Tuple[object, int]] = None
    bias_scale: float = 1.0  # Gemm's beta: the stored bias is ``bias / bias_scale``


def per_channel(k: np.ndarray, n: int) -> Optional[np.ndarray]:
    """A broadcastable constant as one value per channel (axis 1 of NCHW or last of N..C)."""
    k = np.asarray(k, dtype=np.float64)
    if k.size == 1:
        return np.full(n, float(k.reshape(-1)[0]))
    flat = k.reshape(-1)
    if flat.size == n:
        return flat
    return None


class ModelWeights:
    """The constants of ``model`` as float arrays, and its layers as :class:`Consumer` matrices."""

    def __init__(self, model):
        self.model = model
        self.inits: Dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:  # Constant nodes hold weights too
            if n.op_type == "Constant" and n.output:
                v = attr(n, "value")
                if v is not None:
                    self.inits[n.output[0]] = numpy_helper.to_array(v)
        self.node_consts: Dict[Tuple[int, int], np.ndarray] = {}  # (id(node), slot) -> updated value
        view = GraphView(model)
        self.producer = view.producer
        self.users = view.consumers
        self.inputs = {i.name: i for i in model.graph.input if i.name not in self.inits}

    def node_const(self, node, slot: int) -> Optional[np.ndarray]:
        """The constant ``node`` reads at input ``slot``, with this run's updates (kept per node:
        a tensor shared with other layers changes for this node only)."""
        v = self.node_consts.get((id(node), slot))
        if v is not None:
            return v
        return self.weight(node.input[slot]) if slot < len(node.input) and node.input[slot] else None

    def weight(self, name: str) -> Optional[np.ndarray]:
        """An initializer, also behind Identity / Cast nodes."""
        seen = 0
        while name not in self.inits and name in self.producer and seen < 4:
            n = self.producer[name]
            if n.op_type not in ("Identity", "Cast"):
                return None
            name = n.input[0]
            seen += 1
        w = self.inits.get(name)
        return None if w is None else np.asarray(w, dtype=np.float64)

    def consumer(self, node, input_name: str) -> Optional[Consumer]:
        """The consumer as a ``(rows, n_in)`` matrix, or None if it does not mix channels."""
        if not node.input or node.input[0] != input_name:
            return None
        if node.op_type == "Conv":
            return self._conv(node)
        if node.op_type == "Gemm":
            return self._gemm(node)
        if node.op_type == "MatMul":
            return self._matmul(node)
        return None

    def _conv(self, node) -> Optional[Consumer]:
        w = self.node_const(node, 1)
        if w is None or int(attr(node, "group", 1)) != 1:
            return None
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = self.node_const(node, 2)  # also one an earlier group's update added
        return Consumer(node, node.input[0], "conv", om.consumer_matrix(w, "conv"), w.shape[0],
                        node.input[1], bias, bias_name, (node, 2))

    def _gemm(self, node) -> Optional[Consumer]:
        w = self.node_const(node, 1)
        if w is None or w.ndim != 2 or int(attr(node, "transA", 0)):
            return None
        kind = "gemm" if int(attr(node, "transB", 0)) else "matmul"
        wmat = om.consumer_matrix(w, kind) * float(attr(node, "alpha", 1.0))
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = self.node_const(node, 2)
        beta = float(attr(node, "beta", 1.0))
        if bias is not None:
            bias = per_channel(bias * beta, wmat.shape[0])
            if bias is None:
                return None  # a per-row C (M, N): no per-channel bias to compensate into
        return Consumer(node, node.input[0], kind, wmat, wmat.shape[0], node.input[1], bias, bias_name,
                        (node, 2), beta if beta != 0 else 1.0)

    def _matmul(self, node) -> Optional[Consumer]:
        w = self.node_const(node, 1)
        if w is None or w.ndim != 2:
            return None
        # A Linear exported as MatMul + Add(bias): the Add's constant is the bias to update.
        bias_name, bias, bias_at = None, None, None
        users = self.users.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            slot = 1 if users[0].input[0] == node.output[0] else 0
            b = self.node_const(users[0], slot)
            if b is not None and b.size == w.shape[1]:
                bias_name, bias = users[0].input[slot], np.asarray(b, dtype=np.float64).reshape(-1)
                bias_at = (users[0], slot)
        return Consumer(node, node.input[0], "matmul", om.consumer_matrix(w, "matmul"), w.shape[1],
                        node.input[1], bias, bias_name, bias_at)
