"""Static shape inference that does not copy the weights, and the shapes the pruner works with.

``onnx.shape_inference`` serialises the whole model; on a 100 MB ResNet-50 that copy dominates. The
weights' *values* are only needed for small shape-carrying tensors (Reshape targets, Slice bounds),
so large initializers are replaced by typed graph inputs of the same shape before inference.
``static_shapes`` adds folded shape arithmetic (``graph.fold``) on top; ``symbolic_batch`` /
``with_batch`` name and fix the batch axis of a deployment export.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import onnx
from onnx import helper, numpy_helper

from edgekit.errors import InputError, ShapeError
from edgekit.graph.fold import fold_shapes
from edgekit.graph.view import collect_consts

Shape = Tuple[Optional[int], ...]
_SMALL = 64  # elements: initializers up to this size keep their values (shape constants)


def _dims(tt) -> Shape:
    out = []
    for d in tt.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else None)
    return tuple(out)


def light_copy(model, known=None):
    """A ModelProto with the same graph but large initializers turned into typed inputs (no data).

    ``known``: extra tensor values (e.g. folded shape arithmetic); their producing nodes are
    replaced by initializers so inference sees the numbers.
    """
    g = model.graph
    known = known or {}
    small, big_inputs = [numpy_helper.from_array(v, k) for k, v in known.items()], []
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n <= _SMALL:
            small.append(t)
        else:
            big_inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    existing = {i.name for i in g.input}
    inputs = list(g.input) + [v for v in big_inputs if v.name not in existing]
    # existing value_info is dropped on purpose: exporters write symbolic dims there that would
    # shadow the static shapes inference can derive from the inputs
    nodes = [n for n in g.node if not (n.output and all(o in known for o in n.output))]
    graph = helper.make_graph(nodes, g.name or "g", inputs, list(g.output), small)
    m = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    for f in model.functions:
        m.functions.append(f)
    return m


def infer_shapes(model, strict: bool = False, known=None) -> Dict[str, Shape]:
    """Map every tensor name to its inferred static shape (None for unknown dims).

    ``strict=True`` turns an inference failure into an :class:`InputError` (bad graph).
    """
    m = light_copy(model, known)
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=strict, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError / RuntimeError
        raise InputError(f"the graph fails ONNX shape inference: {str(exc).splitlines()[0][:300]}",
                         hint="fix the model (run onnx.checker / onnxsim) before pruning") from exc
    shapes: Dict[str, Shape] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = _dims(vi.type.tensor_type)
    for t in model.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    return shapes


def static_shapes(model, consts=None):
    """``(shapes, known)``: shapes after folding shape arithmetic (exporters compute Resize scales,
    Slice bounds... at run time): infer, fold, and infer again with the folded numbers."""
    consts = collect_consts(model, max_size=64) if consts is None else consts
    shapes = infer_shapes(model, strict=True)
    known = fold_shapes(model, consts, shapes)
    for _ in range(4):  # chains (shape arithmetic on a reshape of folded shapes) need a few rounds
        if not known or not any(d is None for s in shapes.values() for d in s):
            break
        shapes2 = infer_shapes(model, known=known)
        for k, v in shapes.items():
            shapes2.setdefault(k, v)
        known2 = fold_shapes(model, consts, shapes2)
        done = len(known2) == len(known) and shapes2 == shapes
        shapes, known = shapes2, known2
        if done:
            break
    return shapes, known


def symbolic_batch(model) -> Dict[str, int]:
    """``{input: axis}``: the first symbolic axis of each graph input, taken as its batch axis
    (axis 0 of images, axis 1 of sequence-first (L, N, E) inputs)."""
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        sym = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if sym:
            out[vi.name] = sym[0]
    return out


def with_batch(model, axes: Dict[str, int], batch: int):
    """A :func:`light_copy` of ``model`` whose inputs have ``batch`` on the axes ``axes`` names
    (:func:`symbolic_batch`)."""
    lm = light_copy(model)
    for vi in lm.graph.input:
        if vi.name in axes:
            vi.type.tensor_type.shape.dim[axes[vi.name]].dim_value = batch
    return lm


def parse_shape(text: str) -> List[int]:
    """'1x3x224x224' (or '1,3,224,224') -> [1, 3, 224, 224]."""
    cleaned = text.strip().lower().replace(",", "x").replace("*", "x")
    try:
        dims = [int(p) for p in cleaned.split("x") if p != ""]
    except ValueError:
        raise ShapeError(f"not a shape: {text!r}", hint="write shapes like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise ShapeError(f"not a shape: {text!r}", hint="write shapes like 1x3x224x224 (positive integers)")
    return dims
