"""What a criterion sees besides the group: :class:`PruneContext` (the dependency graph, current
tensor values, calibration data, the weight updates and new biases a criterion asks for) and
:func:`dequantize` for the stored integer weights of a QDQ graph."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from edgekit.graph.view import attr


class PruneContext:
    """What a criterion sees besides the group: the model, current tensor values, calib data."""

    def __init__(self, dg, calib=None):
        self.dg = dg
        self.model = dg.model
        self.calib = calib
        # {group id: channels it loses at most}, set before scoring for criteria that take the hint
        self.remove_hint: Dict[int, int] = {}
        self.updates: Dict[str, np.ndarray] = {}
        self.new_biases: Dict[str, np.ndarray] = {}
        self._outputs: Optional[set] = None  # the graph's output names

    def tensor(self, name: str) -> np.ndarray:
        if name in self.updates:
            return self.updates[name]
        return self.dg.consts[name]

    def real_tensor(self, name: str) -> np.ndarray:
        """:meth:`tensor` as the network uses it: a stored integer weight that a DequantizeLinear
        reads (ONNX Runtime's QDQ format: int8 weights, int32 biases) comes back dequantised, so
        that magnitudes compare across channels of different scales. Other tensors as stored."""
        arr = self.tensor(name)
        if np.issubdtype(arr.dtype, np.floating):
            return arr
        # a private copy is named "<stored>::<node>:<slot>" (stored names may hold "::" themselves)
        base = name.rsplit("::", 1)[0] if name in self.dg.private else name
        for user in self.dg.users.get(base, ()):
            if user.op_type == "DequantizeLinear" and user.input[0] == base:
                return dequantize(arr, user, self.dg.consts)
        return arr

    def set_tensor(self, name: str, array: np.ndarray) -> None:
        old = self.dg.consts.get(name)
        if old is None or tuple(old.shape) != tuple(np.shape(array)):
            raise ValueError(f"set_tensor({name}): shape {np.shape(array)} != {None if old is None else old.shape}")
        self.updates[name] = np.asarray(array, dtype=old.dtype)

    def add_bias(self, node, array: np.ndarray) -> None:
        """Give ``node`` (Conv / Gemm) a bias of its own: a new input 2, replacing any it had."""
        self.new_biases[node.name] = np.asarray(array, dtype=np.float32)

    def own_tensor(self, node, slot: int) -> Optional[str]:
        """The stored tensor (a key of ``dg.consts``) that holds ``node.input[slot]`` for this node
        alone, so that :meth:`set_tensor` on it changes this node and no other; looks through
        Identity / Cast nodes that only this node reads. None when the input is computed, or when
        the stored value is shared with other readers (exporters de-duplicate equal tensors: a
        zero bias may be the zero bias of a LayerNorm) and the pruner made no private copy of it
        for this node: writing it would change those readers too."""
        for virt, (owner, slots) in self.dg.private.items():
            if owner is node and slot in slots:
                return virt
        if slot >= len(node.input) or not node.input[slot]:
            return None
        claim = self.dg.claim_use.get(node.input[slot])
        if claim is not None and claim[0] is node and slot in claim[1]:
            return node.input[slot]  # shared, claimed by this node: apply() gives it its own copy
        if self._outputs is None:
            self._outputs = {o.name for o in self.model.graph.output}
        cur = node.input[slot]
        for _ in range(8):
            if len(self.dg.users.get(cur, ())) != 1 or cur in self._outputs:
                return None
            if cur in self.dg.consts:
                return cur
            prod = self.dg.producer.get(cur)
            if prod is None or prod.op_type not in ("Identity", "Cast") or not prod.input:
                return None
            cur = prod.input[0]
        return None


def dequantize(q: np.ndarray, node, consts) -> np.ndarray:
    """``(q - zero_point) * scale`` of a DequantizeLinear ``node`` whose parameters are in ``consts``:
    per tensor, per axis, or blocked (opset 21 ``block_size``). ``q`` itself when a parameter is
    computed."""
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if scale is None or zp is None:
        return q
    scale, zp = np.asarray(scale, np.float64), np.asarray(zp, np.float64)
    ax = int(attr(node, "axis", 1))
    ax = ax + q.ndim if ax < 0 else ax
    block = int(attr(node, "block_size", 0) or 0)

    def spread(p):
        if p.size == 1:
            return p.reshape(())
        if block > 0 and p.ndim == q.ndim:
            return np.repeat(p, block, axis=ax).take(np.arange(q.shape[ax]), axis=ax)
        shape = [1] * q.ndim
        shape[ax] = p.size
        return p.reshape(shape)

    return ((q.astype(np.float64) - spread(zp)) * spread(scale)).astype(np.float32)
