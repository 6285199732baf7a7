"""Checks for rewritten models: checker + full shape inference + an ONNX Runtime run, and the
"zeroed channels" reference used to prove a structural rewrite equivalent to a mask.

It runs ONNX Runtime, so it lives with the runtimes (it was ``edgekit.graph.verify``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import ParityError
from edgekit.graph.io import model_input_specs, raw_dtype
from edgekit.graph.shapes import infer_shapes, static_shapes
from edgekit.runtime.onnxruntime import ort_session


def random_feeds(model, seed: int = 0, batch: int = 1) -> Dict[str, np.ndarray]:
    """Seeded inputs for ``model``: dynamic dims become ``batch`` (axis 0) or 8."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in model_input_specs(model):
        shape = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else 8) for i, d in enumerate(spec.shape)]
        if spec.dtype.startswith("int"):
            feeds[spec.name] = rng.integers(0, 4, size=shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def run(model, feeds: Dict[str, np.ndarray], threads: int = 1) -> List[np.ndarray]:
    """Every output of one ONNX Runtime run (CPU, ``threads`` intra-op threads, one inter-op)."""
    sess = ort_session(model, intra_threads=threads, inter_threads=1, log_level=3)
    return sess.run(None, feeds)


def check(model, feeds: Optional[Dict[str, np.ndarray]] = None) -> List[np.ndarray]:
    """onnx.checker (full), strict shape inference, and one ORT run; returns the outputs."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return run(model, feeds if feeds is not None else random_feeds(model))


def zero_channels(model, masks: Dict[str, Tuple[int, np.ndarray]]):
    """A copy of ``model`` where each named activation is multiplied by a 0/1 mask on ``axis``.

    This is the reference a structural prune must match: it never touches weights or shapes, it
    only forces the removed channels to zero where they are produced.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    shapes = infer_shapes(m)
    g = m.graph
    # element types: integer tensors (the int8 between a QuantizeLinear and its DequantizeLinear)
    # are not masked; the float tensor they become is, and zero maps to zero through both
    typed = onnx.shape_inference.infer_shapes(m)
    elem = {v.name: v.type.tensor_type.elem_type
            for v in list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    new_nodes = []
    rename = {}
    for name, (axis, keep) in masks.items():
        dt = raw_dtype(elem.get(name, onnx.TensorProto.FLOAT))
        if dt is None or not np.issubdtype(dt, np.floating):
            continue
        if name not in shapes:  # sizes computed by shape arithmetic (a ReduceMean's axes input): fold them
            shapes = {**static_shapes(m)[0], **shapes}
        rank = len(shapes[name])
        shape = [1] * rank
        shape[axis] = len(keep)
        mask = keep.astype(dt).reshape(shape)
        cname, oname = f"{name}__mask", f"{name}__masked"
        g.initializer.append(numpy_helper.from_array(mask, cname))
        rename[name] = oname
        new_nodes.append((name, helper.make_node("Mul", [name, cname], [oname], name=f"{name}__zero")))
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    for o in g.output:
        if o.name in rename:  # outputs keep their own name: mask in place
            raise ValueError("a graph output cannot be masked")
    nodes = list(g.node)
    del g.node[:]
    producer_pos = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer_pos[o] = i
    after: Dict[int, list] = {}
    pre = []
    for name, node in new_nodes:
        if name in producer_pos:
            after.setdefault(producer_pos[name], []).append(node)
        else:
            pre.append(node)
    g.node.extend(pre)
    for i, n in enumerate(nodes):
        g.node.append(n)
        g.node.extend(after.get(i, []))
    del g.value_info[:]
    return m


def nonfinite_mismatch(x: np.ndarray, y: np.ndarray) -> Tuple[int, np.ndarray]:
    """``(positions where NaN/Inf differ, mask of positions finite in both)`` for two same-shape arrays.

    NaN never compares (``max(1.0, nan)`` is nan and ``nan > tol`` is False), so error measures must
    look at the finite positions only and treat a NaN or Inf that the other side lacks as a failure;
    NaN against NaN and an Inf against the same Inf agree.
    """
    xf, yf = np.isfinite(x), np.isfinite(y)
    same = (np.isnan(x) & np.isnan(y)) | (~xf & ~yf & (x == y))
    bad = (xf != yf) | (~xf & ~yf & ~same)
    return int(bad.sum()), xf & yf


def assert_close(a: List[np.ndarray], b: List[np.ndarray], rtol: float = 1e-4, atol: float = 1e-4,
                 what: str = "outputs") -> None:
    """Raise ParityError unless every output pair matches within tolerances scaled by the reference."""
    if len(a) != len(b):
        raise ParityError(f"{what}: {len(a)} vs {len(b)} outputs")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ParityError(f"{what}[{i}]: shape {x.shape} vs {y.shape}")
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        bad, both = nonfinite_mismatch(x, y)
        if bad:
            raise ParityError(f"{what}[{i}]: NaN/Inf at {bad} positions where the reference differs")
        scale = max(float(np.abs(y[both]).max(initial=0.0)), 1.0)
        err = float(np.abs(x[both] - y[both]).max(initial=0.0))
        if err > atol * scale + rtol * scale:
            raise ParityError(f"{what}[{i}]: max abs error {err:.3g} (scale {scale:.3g})")
