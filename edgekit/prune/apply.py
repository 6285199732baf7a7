"""Phase 2: apply the pruning decision once, in an onnx-ir editing session.

Input: the DependencyGraph (what is coupled to what) and a keep mask per group. Every member
tensor is sliced on its axis (a tensor shared by several groups keeps the positions every group
keeps), shape-carrying constants and attributes are recomputed, intermediate shapes are cleared
(graph outputs keep theirs) and the model is exported back to a ModelProto.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Set, Tuple

import numpy as np

# the suffix new_const gives the tensors it makes (stripped from a base that has it: a re-prune
# names its copies after the original tensor, not after the copy of a copy)
_NEW_SUFFIX = re.compile(r"__pruned\d+$")


def _graph_names(graph, out: Set[str]) -> Set[str]:
    """Every tensor name ``graph`` (a GraphProto) and its subgraphs use: inputs, outputs,
    initializers, value infos and the inputs / outputs of every node."""
    out.update(v.name for v in graph.input)
    out.update(v.name for v in graph.output)
    out.update(v.name for v in graph.value_info)
    out.update(t.name for t in graph.initializer)
    out.update(t.values.name for t in graph.sparse_initializer)
    for n in graph.node:
        out.update(n.input)
        out.update(n.output)
        for a in n.attribute:
            for g in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                _graph_names(g, out)
    return out


def _value(dg, name):
    v = dg.consts.get(name)
    return np.asarray(v if v is not None else dg.known[name])


def atom_keep(dg, keeps: Dict[int, np.ndarray]) -> np.ndarray:
    """Keep flag for every atom of the graph (atoms of unpruned groups are kept)."""
    n = len(dg.uf.parent)
    out = np.ones(n, dtype=bool)
    if n == 0:
        return out
    for gid, keep in keeps.items():
        sel = dg.grp_of_atom == gid
        out[sel] = keep[dg.chan_of_atom[sel]]
    return out


def kept_positions(atoms: np.ndarray, ak: np.ndarray) -> np.ndarray:
    """Keep flag of every position of an annotation ``atoms`` (-1: untracked, always kept)."""
    atoms = np.asarray(atoms)
    return np.where(atoms >= 0, ak[np.where(atoms >= 0, atoms, 0)], True)


def tensor_masks(dg, keeps: Dict[int, np.ndarray]) -> Dict[str, Dict[int, np.ndarray]]:
    """``{stored tensor: {axis: bool keep mask}}`` for every member touched by a pruned channel."""
    ak = atom_keep(dg, keeps)
    masks: Dict[str, Dict[int, np.ndarray]] = {}
    for node, tensor, axis, role, atoms in dg.members:
        k = kept_positions(atoms, ak)
        if k.all():
            continue
        cur = masks.setdefault(tensor, {})
        cur[axis] = k if axis not in cur else (cur[axis] & k)
    return masks


def activation_masks(dg, keeps: Dict[int, np.ndarray]) -> Dict[str, Tuple[int, np.ndarray]]:
    """``{activation: (axis, keep mask)}`` for every tracked activation that loses positions."""
    ak = atom_keep(dg, keeps)
    out = {}
    for name, a in dg.ann.items():
        if a is None:
            continue
        k = kept_positions(a[1], ak)
        if not k.all():
            out[name] = (a[0], k)
    return out


def _bias_dtype(dg, node):
    """The element type a new bias of ``node`` must have: its weight's (float16 models get float16
    biases; ONNX requires one type for X, W and B)."""
    w = dg.consts.get(node.input[1]) if len(node.input) > 1 else None
    if w is not None and np.issubdtype(w.dtype, np.floating):
        return w.dtype
    return np.float32


class _Session:
    """The onnx-ir editing session of one :func:`apply`: the IR model of ``dg.model`` and the
    edits the rewrite makes on it (new constants, stored values, attributes, node inputs)."""

    def __init__(self, dg) -> None:
        import onnx_ir as ir  # lazy: onnx-ir is optional (Python >= 3.9; edgekit doctor lists it so)

        self.ir = ir
        self.model = ir.from_proto(dg.model)
        self.graph = self.model.graph
        self.nodes = list(self.graph)
        self.node_of = {id(p): self.nodes[i] for i, p in enumerate(dg.model.graph.node)}
        self.const_node = {n.outputs[0].name: n for n in self.nodes if n.op_type == "Constant" and n.outputs}
        self._count = 0
        self._taken = _graph_names(dg.model.graph, set())

    def new_const(self, base: str, arr: np.ndarray):
        """A new initializer holding ``arr``, named after ``base`` with a name no tensor of the
        graph has (a model pruned before holds names of this form already)."""
        ir = self.ir
        base = _NEW_SUFFIX.sub("", base)
        self._count += 1
        while f"{base}__pruned{self._count}" in self._taken:
            self._count += 1
        name = f"{base}__pruned{self._count}"
        self._taken.add(name)
        v = ir.Value(name=name, const_value=ir.tensor(arr))
        v.shape = ir.Shape(arr.shape)
        v.type = ir.TensorType(ir.DataType.from_numpy(arr.dtype))
        self.graph.register_initializer(v)
        return v

    def set_stored(self, name: str, arr: np.ndarray) -> None:
        """Replace the value of initializer or Constant output ``name`` with ``arr``."""
        ir = self.ir
        arr = np.ascontiguousarray(arr)
        if name in self.graph.initializers:
            v = self.graph.initializers[name]
            v.const_value = ir.tensor(arr, name=name)
            v.shape = ir.Shape(arr.shape)
        elif name in self.const_node:
            self.const_node[name].attributes["value"] = ir.AttrTensor("value", ir.tensor(arr, name=name))
            self.const_node[name].outputs[0].shape = ir.Shape(arr.shape)
        else:  # pragma: no cover - members are always initializers or Constant outputs
            raise KeyError(name)

    def stored_value(self, name: str):
        """The IR value of initializer or Constant output ``name`` (None when it is neither)."""
        v = self.graph.initializers.get(name)
        return v or (self.const_node[name].outputs[0] if name in self.const_node else None)

    def set_input(self, proto, slot: int, value, name: str) -> None:
        """Make input ``slot`` of ``proto``'s node read a new constant ``value`` named after ``name``."""
        n = self.node_of[id(proto)]
        if len(n.inputs) <= slot:
            n.resize_inputs(slot + 1)
        n.replace_input_with(slot, self.new_const(name, np.asarray(value)))

    def set_ints(self, proto, name: str, value) -> None:
        """Set attribute ``name`` of ``proto``'s node: an int, or a list of ints."""
        ir = self.ir
        attr = ir.AttrInt64s(name, value) if isinstance(value, list) else ir.AttrInt64(name, value)
        self.node_of[id(proto)].attributes[name] = attr

    def readers(self, value, depth: int = 0) -> int:
        """Nodes that read ``value``, looking through pass-through nodes (Identity, Dropout)."""
        n = 0
        for use in value.uses():
            user = use[0] if isinstance(use, tuple) else use.node
            if user.op_type in ("Identity", "Dropout") and depth < 8:
                n += sum(self.readers(o, depth + 1) for o in user.outputs[:1])
            else:
                n += 1
        return n + (1 if value in self.graph.outputs else 0)

    def finish(self):
        """The edited model as a ModelProto: dead nodes and initializers dropped, intermediate
        shapes cleared (graph outputs keep theirs), initializer shapes from their values."""
        g = self.graph
        _cleanup(g)
        outputs = {v.name for v in g.outputs}
        for n in self.nodes:
            for v in n.outputs:
                if v.name not in outputs:
                    v.shape = None
        for v in list(g.initializers.values()):
            if v.const_value is not None:
                v.shape = self.ir.Shape(v.const_value.shape)
        out = self.ir.to_proto(self.model)
        del out.graph.value_info[:]
        return out


def apply(dg, keeps: Dict[int, np.ndarray], updates: Optional[Dict[str, np.ndarray]] = None,
          new_biases: Optional[Dict[str, np.ndarray]] = None):
    """Return a new ModelProto with the kept channels only. ``updates``: full-size replacement
    values for stored tensors (criterion weight updates); ``new_biases``: node name -> bias for
    Conv/Gemm nodes that had none."""
    session = _Session(dg)
    ak = atom_keep(dg, keeps)
    _write_tensors(session, dg, tensor_masks(dg, keeps), updates or {})
    _add_biases(session, dg, new_biases or {}, ak)
    for rw in dg.rewrites:
        _REWRITERS[rw.kind](session, dg, rw, ak)
    return session.finish()


def _shared(session: _Session, dg) -> Set[str]:
    """Stored tensors read by several layers. Such a tensor is never changed in place: each layer
    whose version changes gets its own copy, the others keep reading the original."""
    shared = {v.rsplit("::", 1)[0] for v in dg.private}  # stored names may contain '::' themselves
    for name in dg.claim_use:  # shared also when the other readers are not pruned (no private copy)
        v = session.stored_value(name)
        if v is not None and session.readers(v) > 1:
            shared.add(name)
    return shared


def _write_tensors(session: _Session, dg, masks, updates: Dict[str, np.ndarray]) -> None:
    """Write every member tensor cut to its kept positions (and updated where a criterion says)."""
    shared = _shared(session, dg)
    # in name order: the copies new_const makes are numbered (and stored) in this order, which
    # must not follow the string hash seed of the process
    for name in sorted(set(masks) | set(updates)):
        arr = updates.get(name)
        if arr is None:
            arr = dg.consts[name]
        elif name in dg.consts:  # an update keeps the stored type (float16 models)
            arr = np.asarray(arr).astype(dg.consts[name].dtype, copy=False)
        for axis, k in masks.get(name, {}).items():
            arr = np.take(arr, np.nonzero(k)[0], axis=axis)
        use = dg.private.get(name) or (dg.claim_use.get(name) if name in shared else None)
        if use is not None:
            node, slots = use
            v = session.new_const(name.rsplit("::", 1)[0] if name in dg.private else name, np.ascontiguousarray(arr))
            for slot in slots:
                session.node_of[id(node)].replace_input_with(slot, v)
        else:
            session.set_stored(name, arr)


def _add_biases(session: _Session, dg, new_biases: Dict[str, np.ndarray], ak: np.ndarray) -> None:
    """Give the named Conv / Gemm nodes their new bias (input 2), cut to the kept output channels."""
    for nname, bias in new_biases.items():
        for p in dg.model.graph.node:
            if p.name != nname:
                continue
            out_axis_mask = None
            for o_name in p.output[:1]:
                a = dg.ann.get(o_name)
                if a is not None:
                    out_axis_mask = kept_positions(a[1], ak)
            b = np.asarray(bias, dtype=_bias_dtype(dg, p))
            if out_axis_mask is not None and len(out_axis_mask) == len(b) and p.op_type in ("Conv", "Gemm"):
                b = b[out_axis_mask]
            session.set_input(p, 2, b, f"{nname}_bias")


def _rewrite_conv_group(session: _Session, dg, rw, ak: np.ndarray) -> None:
    session.set_ints(rw.node, "group", int(kept_positions(rw.atoms[0], ak).sum()))


def _rewrite_split(session: _Session, dg, rw, ak: np.ndarray) -> None:
    sizes = np.asarray([int(kept_positions(a, ak).sum()) for a in rw.atoms], dtype=np.int64)
    n = session.node_of[id(rw.node)]
    if "split" in n.attributes:
        session.set_ints(rw.node, "split", sizes.tolist())
    else:
        n.attributes.pop("num_outputs", None)
        session.set_input(rw.node, 1, sizes, f"{rw.node.name}_split")


def _rewrite_slice(session: _Session, dg, rw, ak: np.ndarray) -> None:
    k = kept_positions(rw.atoms[0], ak)
    s, e, i = rw.info["start"], rw.info["end"], rw.info["k"]
    ns = int(k[:s].sum())
    ne = ns + int(k[s:e].sum())
    for slot, val in ((1, ns), (2, ne)):
        old = _value(dg, rw.node.input[slot]).copy()
        old[i] = val
        session.set_input(rw.node, slot, old, f"{rw.node.name}_b{slot}")


def _rewrite_shape(session: _Session, dg, rw, ak: np.ndarray) -> None:
    """A shape vector input (Reshape target, Resize sizes, Expand shape) with a channel count."""
    kept = int(kept_positions(rw.atoms[0], ak).sum())
    slot = rw.info.get("slot", 1)
    cur_in = session.node_of[id(rw.node)].inputs[slot]
    if cur_in is not None and cur_in.const_value is not None and cur_in.name != rw.node.input[slot]:
        tgt = np.asarray(cur_in.const_value.numpy()).copy()  # already rewritten by another entry
    else:
        tgt = _value(dg, rw.node.input[slot]).copy()
    b = rw.info["axis"]
    dyn = dg.dyn.get(rw.node.input[slot])  # entries set by a symbolic batch
    if tgt[b] > 1 or dyn is not None:
        if tgt[b] > 1:
            tgt[b] = kept * rw.info["mul"] // rw.info["div"]
        if dyn is not None:
            tgt[dyn] = -1  # Reshape infers it (at most one such entry: DependencyGraph.rewrite)
        session.set_input(rw.node, slot, tgt, f"{rw.node.name}_shape")


def _rewrite_const(session: _Session, dg, rw, ak: np.ndarray) -> None:
    """A folded value used as data (a scale from a shape): it keeps the value it had."""
    session.set_input(rw.node, rw.info["slot"], rw.info["value"], f"{rw.node.name}_c")


_REWRITERS = {"conv_group": _rewrite_conv_group, "split": _rewrite_split, "slice": _rewrite_slice,
              "reshape": _rewrite_shape, "const": _rewrite_const}


def _cleanup(g) -> None:
    """Drop nodes whose outputs nobody reads (shape arithmetic replaced by constants) and
    initializers left without users."""
    outs = set(id(v) for v in g.outputs)
    for n in reversed(list(g)):
        if all(not v.uses() and id(v) not in outs for v in n.outputs):
            g.remove(n, safe=True)
    for name, v in list(g.initializers.items()):
        if not v.uses() and id(v) not in outs and v not in g.inputs:
            del g.initializers[name]
