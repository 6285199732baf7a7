"""Build a :class:`DependencyGraph` from a ModelProto (phase 1: mark, no rewriting)."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import numpy as np

from edgekit.errors import InputError, UnsupportedError
from edgekit.prune.graph import DependencyGraph, Group, Member, Node
from edgekit.prune.handlers import HANDLERS, attr



def tensor_array(t) -> np.ndarray:
    """A numpy view of a TensorProto (no copy for raw_data)."""
    from onnx import numpy_helper

    if t.data_location == 1:
        from edgekit.graph.io import stored_array

        arr = stored_array(t)  # weights of a lean-loaded model (edgekit.graph.io.load_model_lean)
        if arr is not None:
            return arr
        raise UnsupportedError(f"tensor {t.name} lives in external data that was not loaded",
                               hint="load the model with its .data file (edgekit.graph.io.load_model)")
    from edgekit.graph.io import raw_dtype

    dt = raw_dtype(t.data_type)
    if dt is not None and t.raw_data:
        return np.frombuffer(t.raw_data, dtype=dt).reshape(tuple(t.dims))
    return numpy_helper.to_array(t)


def collect_consts(model, max_size: Optional[int] = None) -> Dict[str, np.ndarray]:
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


def _check_dynamic_channels(model, shapes) -> None:
    from edgekit.graph.io import input_channel_axis

    for vi in model.graph.input:
        shape = shapes.get(vi.name)
        if shape is not None and len(shape) == 4 and shape[input_channel_axis(model, vi.name, shape)] is None:
            tt = vi.type.tensor_type
            if tt.HasField("shape") and len(tt.shape.dim) == 4:
                raise InputError(
                    f"input '{vi.name}' has a dynamic channel dimension; channel dependencies need "
                    "static channel counts",
                    hint="export with a fixed channel count (only the batch and spatial dims may be dynamic)")


def static_shapes(model, consts=None):
    """Shapes after folding shape arithmetic (exporters compute Resize scales, Slice bounds...
    at run time): infer, fold, and infer again with the folded numbers."""
    from edgekit.graph.shapes import infer_shapes
    from edgekit.prune.fold import fold_shapes

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


def flops_shapes(model, shapes, known=None):
    """``(shapes, folded names)`` for FLOPs counting: a symbolic batch axis is taken as 1 (FLOPs per
    sample), so shape arithmetic that depends on it folds too. Counting only, never rewrites."""
    from edgekit.graph.shapes import light_copy

    dyn = _symbolic_batch(model)  # the same batch axis the analysis uses
    if not dyn:
        return shapes, set(static_shapes(model)[1]) if known is None else set(known)
    lm = light_copy(model)
    for vi in lm.graph.input:
        if vi.name in dyn:
            vi.type.tensor_type.shape.dim[dyn[vi.name]].dim_value = 1
    s1, k1 = static_shapes(lm)
    return s1, set(k1)


def _symbolic_batch(model) -> Dict[str, int]:
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


def _batch_one(model, shapes, known):
    """``(shapes, known, dyn)`` for the analysis of a model with a symbolic batch axis.

    Deployment exports compute Reshape targets (channel shuffle, attention heads) from ``Shape`` of
    a tensor with a symbolic batch, so nothing around them folds. Channel coupling does not depend
    on the batch size: the graph is analysed with batch 1 and ``dyn`` maps each value that folds only
    then to the entries that change with the batch (compared with batch 2). A rewritten Reshape
    target writes -1 there (Reshape infers it); other batch-dependent shape inputs are refused
    (:meth:`DependencyGraph.rewrite`)."""
    names = _symbolic_batch(model)
    if not names:
        return shapes, known, {}
    from edgekit.graph.shapes import light_copy

    def at(batch):
        lm = light_copy(model)
        for vi in lm.graph.input:
            if vi.name in names:
                vi.type.tensor_type.shape.dim[names[vi.name]].dim_value = batch
        return static_shapes(lm)

    s1, k1 = at(1)
    _, k2 = at(2)
    dyn: Dict[str, np.ndarray] = {}
    for name, v in k1.items():
        if name in known:
            continue
        w = k2.get(name)
        dyn[name] = np.ones(v.shape, dtype=bool) if w is None or w.shape != v.shape else (v != w)
    merged = dict(shapes)
    merged.update(s1)
    return merged, k1, dyn


ATTENTION_MODES = ("heads", "head-dims")
DEFAULT_ATTENTION = "heads"  # measured: more ORT CPU speedup at equal FLOPs (bench/prune_attention.py)


def build(model, protect: Iterable[str] = (), shapes=None, keep_output_shapes: bool = True,
          attention: str = DEFAULT_ATTENTION, allow_norm_approx: bool = False) -> DependencyGraph:
    """Mark the dependency graph of ``model``.

    ``attention``: how a Reshape that splits channels into heads couples them: ``"heads"`` (the
    channels of one head stay together, whole heads are removed, the head count in the Reshape
    targets shrinks) or ``"head-dims"`` (the same slot is removed in every head, the head count
    stays). ``allow_norm_approx``: prune through LayerNormalization over the channel axis
    (gamma/beta are sliced; the statistics change, so such groups are reported as approximate).
    """
    if attention not in ATTENTION_MODES:
        raise InputError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}",
                         hint="'heads' removes whole heads, 'head-dims' the same dims in every head")
    consts = collect_consts(model)
    shapes, known = static_shapes(model, consts)
    _check_dynamic_channels(model, shapes)
    shapes, known, dyn = _batch_one(model, shapes, known)
    dg = DependencyGraph(model, shapes, consts)
    dg.dyn = dyn
    dg.attention = attention
    dg.allow_norm_approx = bool(allow_norm_approx)
    dg.users = {}
    dg.handled = set()
    dg.claims = {}
    dg.claim_use = {}
    dg.aliases = {}
    dg.known = known
    dg.private = {}
    for n in model.graph.node:
        for o in n.output:
            dg.producer[o] = n
        for i in n.input:
            if i:
                dg.users.setdefault(i, []).append(n)
    protect = list(protect)
    names = {n.name for n in model.graph.node} | set(shapes) | set(consts)
    missing = [p for p in protect if p not in names]
    if missing:
        raise InputError(f"--protect {', '.join(missing)} matches no node or tensor in the model",
                         hint="use a node name or tensor name as shown by `edgekit prune --explain`")
    prot = set(protect)
    for idx, proto in enumerate(model.graph.node):
        node = Node(proto, idx)
        key = proto.name or id(proto)
        if key in dg.handled:
            continue
        if proto.op_type == "Constant" or proto.output and proto.output[0] in dg.known:
            continue
        anns = [dg.ann.get(i) if i else None for i in proto.input]
        if not any(a is not None for a in anns):
            handler = HANDLERS.get(proto.op_type)
            if handler is not None and proto.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                handler(dg, node, anns)
            continue
        if proto.domain not in ("", "ai.onnx"):
            handler = None
        else:
            handler = HANDLERS.get(proto.op_type)
        if handler is None:
            for a in anns:
                if a is not None:
                    dg.pin(a[1], f"{node.name}: op {proto.op_type} is not in the handler table "
                                 "(not prunable through)")
            continue
        handler(dg, node, anns)
        for i, a in zip(proto.input, anns):
            if a is not None:
                dg.depend(i, node, a[1])
    for proto in model.graph.node:
        if proto.name in prot or any(o in prot for o in proto.output) or any(i in prot for i in proto.input):
            for t in list(proto.input) + list(proto.output):
                a = dg.ann.get(t)
                if a is not None:
                    dg.pin(a[1], f"protected by --protect ({proto.name or t})")
    _freeze_shape_data(dg)
    for o in model.graph.output:
        a = dg.ann.get(o.name)
        if a is not None and keep_output_shapes:
            dg.pin(a[1], f"reaches graph output '{o.name}' (outputs keep their shapes)")
    for (node, tensor, axis, role, atoms) in dg.members:
        if tensor in prot:
            dg.pin(atoms, f"protected by --protect ({tensor})")
    _finalize(dg)
    return dg


def _from_tracked_shape(dg: DependencyGraph, name: str) -> bool:
    """True when the folded value ``name`` is computed from the Shape of a tensor carrying channels."""
    todo, seen = [name], set()
    while todo:
        t = todo.pop()
        if t in seen or t in dg.consts:
            continue
        seen.add(t)
        prod = dg.producer.get(t)
        if prod is None:
            continue
        if prod.op_type == "Shape":
            if dg.ann.get(prod.input[0]) is not None:
                return True
            continue
        todo.extend(i for i in prod.input if i and i in dg.known)
    return False


def _freeze_shape_data(dg: DependencyGraph) -> None:
    """A float folded from a shape and read as data (nn.MultiheadAttention's 1/sqrt(head dim), computed
    from q's shape at run time) would follow the pruned sizes and change the outputs; it is written
    as the constant it was, like the dynamo exporter does."""
    for proto in dg.model.graph.node:
        if proto.op_type in ("Constant", "Resize", "Upsample") or (proto.output and proto.output[0] in dg.known):
            continue
        for slot, name in enumerate(proto.input):
            v = dg.known.get(name) if name and name not in dg.consts else None
            if v is None or v.dtype.kind != "f" or (name in dg.dyn and dg.dyn[name].any()) or \
                    not _from_tracked_shape(dg, name):
                continue
            dg.rewrite("const", proto, [], slot=slot, value=np.asarray(v))


def _finalize(dg: DependencyGraph) -> None:
    n_atoms = len(dg.uf.parent)
    if n_atoms == 0:
        return
    roots = dg.uf.roots()
    src_of_atom = np.asarray(dg.src_of_atom, dtype=np.int64)
    comp_of_src = dg.src_uf.roots()
    comp_of_atom = comp_of_src[src_of_atom]
    comp_of_root = comp_of_atom  # roots are atoms; a root's component == its members' component
    # group channel ids per component
    comps: Dict[int, List[int]] = {}
    uniq_roots = np.unique(roots)
    for r in uniq_roots.tolist():
        comps.setdefault(int(comp_of_root[r]), []).append(r)
    local = np.full(n_atoms, -1, dtype=np.int64)  # root -> local channel id
    gid_of_comp: Dict[int, int] = {}
    groups: Dict[int, Group] = {}
    for gi, (c, rs) in enumerate(sorted(comps.items())):
        rs_arr = np.asarray(sorted(rs), dtype=np.int64)
        local[rs_arr] = np.arange(len(rs_arr))
        gid_of_comp[c] = gi
        g = Group(id=gi, size=len(rs_arr))
        g._roots = rs_arr
        groups[gi] = g
    chan_of_atom = local[roots]
    grp_of_atom = np.asarray([gid_of_comp[int(c)] for c in comp_of_atom.tolist()], dtype=np.int64)
    for sid, name in enumerate(dg.source_names):
        gi = gid_of_comp[int(comp_of_src[sid])]
        groups[gi].sources.append(name)
    reasons: Dict[int, List[str]] = {}
    for atoms, why in dg.pins:
        for gi in np.unique(grp_of_atom[atoms]).tolist():
            lst = reasons.setdefault(gi, [])
            if why not in lst:
                lst.append(why)

    def split_by_group(atoms: np.ndarray):
        valid = atoms >= 0
        out = {}
        if not valid.any():
            return out
        ga = np.where(valid, grp_of_atom[np.where(valid, atoms, 0)], -1)
        ca = np.where(valid, chan_of_atom[np.where(valid, atoms, 0)], -1)
        for gi in np.unique(ga[ga >= 0]).tolist():
            out[gi] = np.where(ga == gi, ca, -1)
        return out

    for atoms, note in dg.approx:
        for gi in np.unique(grp_of_atom[atoms]).tolist():
            if note not in groups[gi].approx:
                groups[gi].approx.append(note)
    for node, tensor, axis, role, atoms in dg.members:
        for gi, idx in split_by_group(atoms).items():
            groups[gi].members.append(Member(node, tensor, dg.consts[tensor], axis, role, idx))
    for atoms, dep in dg.deps:
        for gi in split_by_group(atoms):
            groups[gi].dependencies.append(dep)
    for seg in dg.segments:
        for gi, idx in split_by_group(seg).items():
            groups[gi].segments.append(np.unique(idx[idx >= 0]))
    dg.chan_of_atom = chan_of_atom
    dg.grp_of_atom = grp_of_atom
    for gi, g in sorted(groups.items()):
        if gi in reasons:
            g.reason = "; ".join(reasons[gi][:4]) + (f" (+{len(reasons[gi]) - 4} more)" if len(reasons[gi]) > 4 else "")
            dg.skipped.append(g)
        else:
            dg.groups.append(g)
