"""Fold shape arithmetic (Shape -> Gather -> Div -> Concat ...) into known small values.

Exporters compute Slice bounds, Split sizes and Reshape targets from ``Shape`` at run time
(``x.chunk(2, 1)``, ``x.flatten(2)``). With static shapes those are numbers; knowing them lets the
pruner map channels through the op and, at rewrite time, replace the computed input by a constant
that matches the pruned sizes. Used by :func:`edgekit.graph.shapes.static_shapes`.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
from onnx import helper, numpy_helper

from edgekit.graph.view import attr

_MAX = 64


def _eval(n, v, shapes):
    op = n.op_type
    if op == "Shape":
        s = shapes.get(n.input[0])
        if s is None:
            return None
        # unknown dims stay None (object array): a Gather of a known dim still folds
        arr = np.asarray(s, dtype=np.int64) if all(d is not None for d in s) else np.asarray(s, dtype=object)
        start, end = attr(n, "start", 0), attr(n, "end", None)
        return arr[start:end]
    if any(i and i not in v for i in n.input):
        return None
    x = [v[i] if i else None for i in n.input]
    if op in ("Identity", "Cast"):
        if op == "Cast":
            return x[0].astype(helper.tensor_dtype_to_np_dtype(attr(n, "to")))
        return x[0]
    if op == "Gather":
        return np.take(x[0], x[1], axis=attr(n, "axis", 0))
    if op == "Unsqueeze":
        axes = attr(n, "axes") if attr(n, "axes") is not None else x[1].tolist()
        out = x[0]
        for a in sorted(int(a) + (out.ndim + len(axes) if a < 0 else 0) for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = attr(n, "axes") if attr(n, "axes") is not None else (x[1].tolist() if len(x) > 1 and x[1] is not None else None)
        return np.squeeze(x[0], axis=tuple(axes) if axes is not None else None)
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in x], axis=attr(n, "axis", 0))
    if op in ("Add", "Sub", "Mul"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](x[0], x[1])
    if op == "Div":
        if np.issubdtype(x[0].dtype, np.integer):
            return np.trunc(x[0] / x[1]).astype(x[0].dtype)
        return x[0] / x[1]
    if op == "Slice":
        starts, ends = x[1].tolist(), x[2].tolist()
        axes = x[3].tolist() if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = x[4].tolist() if len(x) > 4 and x[4] is not None else [1] * len(starts)
        sl = [slice(None)] * x[0].ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            sl[a] = slice(s, e, st)
        return x[0][tuple(sl)]
    if op == "Reshape":
        return x[0].reshape(x[1].tolist())
    if op == "Transpose":
        perm = attr(n, "perm")
        return np.transpose(x[0], perm)
    if op == "Expand":
        return x[0] * np.ones(x[1].tolist(), dtype=x[0].dtype)
    if op == "Mod":  # MultiheadAttention's unflatten computes its axis as ``dim % rank``
        return (np.fmod if attr(n, "fmod", 0) else np.mod)(x[0], x[1])
    if op in ("Max", "Min"):
        out = x[0]
        for y in x[1:]:
            out = (np.maximum if op == "Max" else np.minimum)(out, y)
        return out
    if op == "Neg":
        return -x[0]
    if op == "Range":
        return np.arange(x[0], x[1], x[2])
    if op == "Equal":
        return np.equal(x[0], x[1])
    if op == "Where":
        return np.where(x[0], x[1], x[2])
    if op == "ConstantOfShape":
        val = attr(n, "value")
        fill = numpy_helper.to_array(val).reshape(-1)[0] if val is not None else np.float32(0)
        return np.full(x[0].tolist(), fill)
    return None


def fold_shapes(model, consts: Dict[str, np.ndarray], shapes) -> Dict[str, np.ndarray]:
    """Values of small tensors computable before run time (constants and shape arithmetic)."""
    v = {k: a for k, a in consts.items() if a.size <= _MAX}
    out: Dict[str, np.ndarray] = {}
    for n in model.graph.node:
        if n.op_type == "Constant" or not n.output:
            continue
        try:
            r = _eval(n, v, shapes)
            if r is not None and np.asarray(r).dtype == object:
                if any(e is None for e in np.asarray(r).reshape(-1).tolist()):
                    if n.op_type not in ("Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Identity"):
                        r = None
                else:
                    r = np.asarray(r).astype(np.int64)
        except Exception:  # noqa: BLE001 - anything odd: the value stays unknown
            r = None
        if r is not None and np.asarray(r).size <= _MAX:
            v[n.output[0]] = np.asarray(r)
            if np.asarray(r).dtype != object:
                out[n.output[0]] = np.asarray(r)
    return out
