"""Rewrite op patterns that say the same thing in a longer way into the form the pruner handles.

The unoptimised dynamo export (``torch.onnx.export(..., dynamo=True, optimize=False)``, the way to
keep BatchNorm nodes with that exporter) writes ``torch.split`` / ``torch.chunk`` as a
``SplitToSequence`` whose sequence is read back by ``SequenceAt`` with constant positions. When
that is all the sequence is used for, it is exactly a ``Split`` with one output per piece: the
sequence becomes a Split (same node name) and each ``SequenceAt`` an ``Identity`` of its piece
(same node and tensor names), so channel groups run through it as through any Split. Sequences
used in other ways stay as they are (the pruner then refuses the channels that reach them, with
the op named).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.graph.io import default_opset
from edgekit.graph.shapes import infer_shapes
from edgekit.graph.view import attr, collect_consts


def _piece_sizes(split: Optional[np.ndarray], dim: Optional[int]) -> Optional[List[int]]:
    """Sizes of the pieces of a SplitToSequence: a 1-D ``split`` lists them; a scalar one is the
    size of every piece (the last one shorter), which needs the axis length ``dim``."""
    if split is None:
        return None
    split = np.asarray(split).astype(np.int64)
    if split.ndim == 1:
        return [int(s) for s in split]
    if dim is None or int(split) <= 0:
        return None
    step = int(split)
    return [min(step, dim - k) for k in range(0, dim, step)]


def split_sequences(model):
    """``model`` itself when it has no SplitToSequence read only by constant SequenceAt, else a copy
    with each of those rewritten into Split + Identity (see the module text). The caller's model
    is never changed."""
    nodes = list(model.graph.node)  # one list: the plans know the nodes by id()
    if not any(n.op_type == "SplitToSequence" for n in nodes):
        return model
    plans = _plans(model, nodes)
    if not plans:
        return model
    return _rewritten(model, nodes, plans)


class _LazyShapes:
    """The model's inferred shapes, inferred on the first question (only a negative axis or a
    scalar split size needs them); none when inference fails (such sequences stay as they are)."""

    def __init__(self, model) -> None:
        self.model = model
        self.shapes: Optional[dict] = None

    def get(self, name: str):
        if self.shapes is None:
            try:
                self.shapes = infer_shapes(self.model)
            except Exception:  # noqa: BLE001 - no shapes: such sequences stay as they are
                self.shapes = {}
        return self.shapes.get(name)


def _plans(model, nodes) -> dict:
    """``{id(SplitToSequence): (node, piece sizes, axis, {id(SequenceAt): piece})}`` for every
    sequence that is only read back at constant positions."""
    consts = collect_consts(model, max_size=4096)
    shapes = _LazyShapes(model)
    users: Dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    plans = {}
    for n in nodes:
        if n.op_type != "SplitToSequence" or not n.output or n.output[0] in outputs:
            continue
        us = users.get(n.output[0], [])
        if not us or any(u.op_type != "SequenceAt" or u.input[0] != n.output[0] for u in us):
            continue
        axis = attr(n, "axis", 0)
        split = consts.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
        shape = shapes.get(n.input[0]) if axis < 0 or (split is not None and np.ndim(split) == 0) else None
        if axis < 0 and shape is not None:
            axis += len(shape)
        dim = shape[axis] if shape is not None and 0 <= axis < len(shape) else None
        sizes = _piece_sizes(split, dim)
        if sizes is None or axis < 0:
            continue  # no split input (keepdims pieces of size 1) or sizes unknown: left alone
        picks = _constant_positions(us, consts, len(sizes))
        if picks is not None:
            plans[id(n)] = (n, sizes, axis, dict(zip((id(u) for u in us), picks)))
    return plans


def _constant_positions(readers, consts, n_pieces: int) -> Optional[List[int]]:
    """The piece each SequenceAt in ``readers`` reads, or None when one position is not a constant
    in range."""
    idx = []
    for u in readers:
        v = consts.get(u.input[1])
        if v is None or np.asarray(v).size != 1:
            return None
        k = int(np.asarray(v).reshape(-1)[0])
        k = k + n_pieces if k < 0 else k
        if not 0 <= k < n_pieces:
            return None
        idx.append(k)
    return idx


def _rewritten(model, nodes, plans: dict):
    """A copy of ``model`` with the planned sequences written as Split + Identity."""
    at_index = {u_id: (n, k) for n, _, _, picks in plans.values() for u_id, k in picks.items()}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    new_inits = []
    op13 = default_opset(model) >= 13
    for n in nodes:
        if id(n) in plans:
            _, sizes, axis, _ = plans[id(n)]
            outs = [f"{n.output[0]}__piece{k}" for k in range(len(sizes))]
            if op13:
                sname = f"{n.output[0]}__sizes"
                new_inits.append(numpy_helper.from_array(np.asarray(sizes, dtype=np.int64), sname))
                copy.graph.node.append(helper.make_node("Split", [n.input[0], sname], outs, name=n.name, axis=axis))
            else:
                copy.graph.node.append(helper.make_node("Split", [n.input[0]], outs, name=n.name, axis=axis,
                                                        split=sizes))
        elif id(n) in at_index:
            src, k = at_index[id(n)]
            copy.graph.node.append(helper.make_node("Identity", [f"{src.output[0]}__piece{k}"], list(n.output),
                                                    name=n.name))
        else:
            copy.graph.node.append(n)
    copy.graph.initializer.extend(new_inits)
    # the sequences are gone: drop their (sequence-typed) value_info entries
    gone = {p[0].output[0] for p in plans.values()}
    keep_vi = [v for v in copy.graph.value_info if v.name not in gone]
    del copy.graph.value_info[:]
    copy.graph.value_info.extend(keep_vi)
    return copy
