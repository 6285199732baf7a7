"""Phase 2: apply the pruning decision once, in an onnx-ir editing session.

Input: the DependencyGraph (what is coupled to what) and a keep mask per group. Every member
tensor is sliced on its axis (a tensor shared by several groups keeps the positions every group
keeps), shape-carrying constants and attributes are recomputed, intermediate shapes are cleared
(graph outputs keep theirs) and the model is exported back to a ModelProto.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np


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


def _kept(atoms: np.ndarray, ak: np.ndarray) -> np.ndarray:
    atoms = np.asarray(atoms)
    return np.where(atoms >= 0, ak[np.where(atoms >= 0, atoms, 0)], True)


def tensor_masks(dg, keeps: Dict[int, np.ndarray]) -> Dict[str, Dict[int, np.ndarray]]:
    """``{stored tensor: {axis: bool keep mask}}`` for every member touched by a pruned channel."""
    ak = atom_keep(dg, keeps)
    masks: Dict[str, Dict[int, np.ndarray]] = {}
    for node, tensor, axis, role, atoms in dg.members:
        k = _kept(atoms, ak)
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
        k = _kept(a[1], ak)
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


def apply(dg, keeps: Dict[int, np.ndarray], updates: Optional[Dict[str, np.ndarray]] = None,
          new_biases: Optional[Dict[str, np.ndarray]] = None):
    """Return a new ModelProto with the kept channels only. ``updates``: full-size replacement
    values for stored tensors (criterion weight updates); ``new_biases``: node name -> bias for
    Conv/Gemm nodes that had none."""
    import onnx_ir as ir

    updates = updates or {}
    new_biases = new_biases or {}
    model = dg.model
    masks = tensor_masks(dg, keeps)
    private = getattr(dg, "private", {})
    ak = atom_keep(dg, keeps)
    irm = ir.from_proto(model)
    g = irm.graph
    nodes = list(g)
    node_of = {id(p): nodes[i] for i, p in enumerate(model.graph.node)}
    const_node = {}
    for n in nodes:
        if n.op_type == "Constant" and n.outputs:
            const_node[n.outputs[0].name] = n
    counter = [0]

    def new_const(base: str, arr: np.ndarray):
        counter[0] += 1
        v = ir.Value(name=f"{base}__pruned{counter[0]}", const_value=ir.tensor(arr))
        v.shape = ir.Shape(arr.shape)
        v.type = ir.TensorType(ir.DataType.from_numpy(arr.dtype))
        g.register_initializer(v)
        return v

    def set_stored(name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if name in g.initializers:
            v = g.initializers[name]
            v.const_value = ir.tensor(arr, name=name)
            v.shape = ir.Shape(arr.shape)
        elif name in const_node:
            const_node[name].attributes["value"] = ir.AttrTensor("value", ir.tensor(arr, name=name))
            const_node[name].outputs[0].shape = ir.Shape(arr.shape)
        else:  # pragma: no cover - members are always initializers or Constant outputs
            raise KeyError(name)

    # a stored tensor shared by several layers is never changed in place: each layer whose
    # version changes gets its own copy, the others keep reading the original
    shared = {v.rsplit("::", 1)[0] for v in private}  # stored names may contain '::' themselves
    claim_use = getattr(dg, "claim_use", {})

    def readers(value, depth: int = 0) -> int:
        """Nodes that read ``value``, looking through pass-through nodes (Identity, Dropout)."""
        n = 0
        for use in value.uses():
            user = use[0] if isinstance(use, tuple) else use.node
            if user.op_type in ("Identity", "Dropout") and depth < 8:
                n += sum(readers(o, depth + 1) for o in user.outputs[:1])
            else:
                n += 1
        return n + (1 if value in g.outputs else 0)

    for name in claim_use:  # shared also when the other readers are not pruned (no private copy)
        v = g.initializers.get(name) or (const_node[name].outputs[0] if name in const_node else None)
        if v is not None and readers(v) > 1:
            shared.add(name)
    for name in set(masks) | set(updates):
        arr = updates.get(name)
        if arr is None:
            arr = dg.consts[name]
        elif name in dg.consts:  # an update keeps the stored type (float16 models)
            arr = np.asarray(arr).astype(dg.consts[name].dtype, copy=False)
        for axis, k in masks.get(name, {}).items():
            arr = np.take(arr, np.nonzero(k)[0], axis=axis)
        use = private.get(name) or (claim_use.get(name) if name in shared else None)
        if use is not None:
            node, slots = use
            v = new_const(name.rsplit("::", 1)[0] if name in private else name, np.ascontiguousarray(arr))
            for slot in slots:
                node_of[id(node)].replace_input_with(slot, v)
        else:
            set_stored(name, arr)

    for nname, bias in new_biases.items():
        for p in model.graph.node:
            if p.name == nname:
                n = node_of[id(p)]
                out_axis_mask = None
                for o_name in p.output[:1]:
                    a = dg.ann.get(o_name)
                    if a is not None:
                        out_axis_mask = _kept(a[1], ak)
                b = np.asarray(bias, dtype=_bias_dtype(dg, p))
                if out_axis_mask is not None and len(out_axis_mask) == len(b) and p.op_type in ("Conv", "Gemm"):
                    b = b[out_axis_mask]
                want = 3
                if len(n.inputs) < want:
                    n.resize_inputs(want)
                n.replace_input_with(2, new_const(f"{nname}_bias", b))

    for rw in dg.rewrites:
        n = node_of[id(rw.node)]
        if rw.kind == "conv_group":
            kept = int(_kept(rw.atoms[0], ak).sum())
            n.attributes["group"] = ir.AttrInt64("group", kept)
        elif rw.kind == "split":
            sizes = np.asarray([int(_kept(a, ak).sum()) for a in rw.atoms], dtype=np.int64)
            if "split" in n.attributes:
                n.attributes["split"] = ir.AttrInt64s("split", sizes.tolist())
            else:
                n.attributes.pop("num_outputs", None)
                if len(n.inputs) < 2:
                    n.resize_inputs(2)
                n.replace_input_with(1, new_const(f"{rw.node.name}_split", sizes))
        elif rw.kind == "slice":
            k = _kept(rw.atoms[0], ak)
            s, e, i = rw.info["start"], rw.info["end"], rw.info["k"]
            ns = int(k[:s].sum())
            ne = ns + int(k[s:e].sum())
            for slot, val in ((1, ns), (2, ne)):
                old = _value(dg, rw.node.input[slot]).copy()
                old[i] = val
                n.replace_input_with(slot, new_const(f"{rw.node.name}_b{slot}", old))
        elif rw.kind == "reshape":  # a shape vector input (Reshape target, Resize sizes, Expand shape)
            kept = int(_kept(rw.atoms[0], ak).sum())
            slot = rw.info.get("slot", 1)
            cur_in = n.inputs[slot]
            if cur_in is not None and cur_in.const_value is not None and cur_in.name != rw.node.input[slot]:
                tgt = np.asarray(cur_in.const_value.numpy()).copy()  # already rewritten by another entry
            else:
                tgt = _value(dg, rw.node.input[slot]).copy()
            b = rw.info["axis"]
            dyn = getattr(dg, "dyn", {}).get(rw.node.input[slot])  # entries set by a symbolic batch
            if tgt[b] > 1 or dyn is not None:
                if tgt[b] > 1:
                    tgt[b] = kept * rw.info["mul"] // rw.info["div"]
                if dyn is not None:
                    tgt[dyn] = -1  # Reshape infers it (at most one such entry: DependencyGraph.rewrite)
                n.replace_input_with(slot, new_const(f"{rw.node.name}_shape", tgt))
        elif rw.kind == "const":  # a folded value used as data (a scale from a shape): keep it
            n.replace_input_with(rw.info["slot"], new_const(f"{rw.node.name}_c", rw.info["value"]))

    _cleanup(g)
    outputs = {v.name for v in g.outputs}
    for n in nodes:
        for v in n.outputs:
            if v.name not in outputs:
                v.shape = None
    for v in list(g.initializers.values()):
        if v.const_value is not None:
            v.shape = ir.Shape(v.const_value.shape)
    out = ir.to_proto(irm)
    del out.graph.value_info[:]
    return out


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
