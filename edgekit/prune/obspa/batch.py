"""Graphs that take a batch of any size: what lets the statistics pass run many samples at once.

:func:`with_dynamic_batch` gives a copy symbolic batch dimensions; :func:`free_batch_shapes`
rewrites the constant shapes a static export bakes its batch size into (Reshape targets, Resize
sizes), which would otherwise fail or silently merge the samples of a batch.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.graph.shapes import infer_shapes
from edgekit.graph.view import GraphView, attr


def with_dynamic_batch(model, copy: bool = True, shapes: Optional[Dict[str, Tuple]] = None):
    """A copy whose inputs/outputs have a symbolic batch dimension, so any number of calibration
    samples can go through in one run (shape annotations of intermediates are dropped), with the
    batch a static export baked into Reshape targets and Resize sizes freed (:func:`free_batch_shapes`; ``shapes``:
    the static shapes of ``model``'s tensors when already known). ``copy=False`` changes ``model``
    itself and returns it."""
    m = model
    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    free_batch_shapes(m, shapes)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del m.graph.value_info[:]
    return m


def free_batch_shapes(model, shapes: Optional[Dict[str, Tuple]] = None) -> int:
    """Rewrite, in ``model`` itself, the constant shapes that hold the static batch size, so that
    a batch of several samples runs as several samples. A TorchScript export with a fixed input
    shape writes ``x.view(x.size(0), -1)`` or a channel shuffle's ``view(b, g, c // g, h, w)`` as
    ``Reshape(x, [1, ...])``, which fails or merges the samples on a batch; and ``F.interpolate``
    to a size (or the pruner, folding a Shape-derived size) as ``Resize(x, sizes=[1, C, H, W])``,
    which silently resizes the batch axis down to one sample.

    - Reshape, where the data's first dimension is the batch (static size equal to the model
      input's, read from ``shapes``, inferred when None): the target's first entry becomes -1
      (inferred) if it has no -1 yet, else 0 (copy the data's first dimension; not under
      ``allowzero=1``, where 0 means an empty axis). Where inference lost that dimension: 0, and
      only for targets without -1 / 0 (a wrong guess then fails instead of mixing samples).
    - Resize with constant sizes: the same sizes as scales (1 on the batch axis), where the data's
      static shape is known and the scales give back exactly those sizes.

    Returns how many nodes were rewritten."""
    batch = _static_batch(model)
    if batch <= 0:
        return 0
    todo = _batch_targets(model, batch)
    if not todo:
        return 0
    if shapes is None:
        try:
            shapes = infer_shapes(model)
        except Exception:
            return 0
    done = 0
    for k, (n, t) in enumerate(todo):
        s = shapes.get(n.input[0])
        if s and s[0] is not None and s[0] != batch:
            continue
        if n.op_type == "Resize":
            done += _free_resize(model, n, t, s, k)
        else:
            done += _free_reshape(model, n, t, s, k)
    return done


def _static_batch(model) -> int:
    """The static batch size of the model's one graph input (0: none, or not one input)."""
    stored = {t.name for t in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in stored]
    if len(ins) != 1 or not ins[0].type.tensor_type.shape.dim:
        return 0
    d0 = ins[0].type.tensor_type.shape.dim[0]
    return d0.dim_value if d0.HasField("dim_value") else 0


def _batch_targets(model, batch: int) -> List[Tuple[object, np.ndarray]]:
    """``(node, constant)`` for every Reshape target and Resize sizes that begin with ``batch``."""
    view = GraphView(model)
    todo = []
    for n in model.graph.node:
        slot = 1 if n.op_type == "Reshape" else 3 if n.op_type == "Resize" else None
        if slot is None or len(n.input) <= slot or not n.input[slot]:
            continue
        t = view.const(n.input[slot])
        if t is not None and t.ndim == 1 and t.size >= 2 and int(t[0]) == batch:
            todo.append((n, t))
    return todo


def _free_resize(model, n, t: np.ndarray, s, k: int) -> int:
    """Resize ``n`` to constant sizes ``t`` of data shaped ``s``: the same sizes as scales, with 1
    on the batch axis, when they give back exactly those sizes. Returns 1 when rewritten."""
    if not s or len(s) != t.size or any(d is None or d <= 0 for d in s):
        return 0
    scales = (t.astype(np.float64) / np.asarray(s, dtype=np.float64)).astype(np.float32)
    scales[0] = 1.0
    back = [np.floor(np.asarray(s, dtype=dt) * scales.astype(dt)) for dt in (np.float32, np.float64)]
    if not all(np.array_equal(b.astype(np.int64), t.astype(np.int64)) for b in back):
        return 0
    name = f"{n.input[3]}__free_batch{k}"
    model.graph.initializer.append(numpy_helper.from_array(scales, name))
    n.input[2] = name
    del n.input[3:]
    return 1


def _free_reshape(model, n, t: np.ndarray, s, k: int) -> int:
    """Reshape ``n`` to target ``t`` of data shaped ``s``: the batch entry inferred (-1) or copied
    from the data (0). Returns 1 when rewritten."""
    known = bool(s) and s[0] is not None
    t = t.copy()
    if known and not (t == -1).any():
        t[0] = -1  # inferred: also under allowzero=1 (the dynamo exporter's Reshapes)
    elif not int(attr(n, "allowzero", 0)) and (known or not (t <= 0).any()):
        t[0] = 0  # copied from the data (a wrong guess of an unknown dimension fails loudly)
    else:
        return 0
    name = f"{n.input[1]}__free_batch{k}"
    model.graph.initializer.append(numpy_helper.from_array(t.astype(np.int64), name))
    n.input[1] = name
    return 1
