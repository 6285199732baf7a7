"""Build a :class:`DependencyGraph` from a ModelProto (phase 1: mark, no rewriting).

The shapes the analysis needs (static, with folded shape arithmetic; a symbolic batch taken as 1)
come from :mod:`edgekit.graph.shapes`; the handlers (:mod:`edgekit.prune.handlers`) mark the graph
node by node; :func:`_finalize` turns the marks into groups. ``tensor_array``, ``collect_consts``,
``static_shapes`` and ``flops_shapes`` live in :mod:`edgekit.graph` and are re-exported here.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Set

import numpy as np

from edgekit.errors import InputError
from edgekit.graph.flops import flops_shapes
from edgekit.graph.io import input_channel_axis
from edgekit.graph.shapes import static_shapes, symbolic_batch, with_batch
from edgekit.graph.view import collect_consts, tensor_array
from edgekit.prune.groups import DependencyGraph, Group, Member, Node
from edgekit.prune.handlers import HANDLERS

__all__ = ["ATTENTION_MODES", "DEFAULT_ATTENTION", "build", "collect_consts", "flops_shapes", "static_shapes",
           "tensor_array"]

ATTENTION_MODES = ("heads", "head-dims")
DEFAULT_ATTENTION = "heads"  # measured: more ORT CPU speedup at equal FLOPs (bench/prune_attention.py)
# sources: ops that create channels from a weight, handled even when no input carries channels
_SOURCE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _check_dynamic_channels(model, shapes) -> None:
    for vi in model.graph.input:
        shape = shapes.get(vi.name)
        if shape is not None and len(shape) == 4 and shape[input_channel_axis(model, vi.name, shape)] is None:
            tt = vi.type.tensor_type
            if tt.HasField("shape") and len(tt.shape.dim) == 4:
                raise InputError(
                    f"input '{vi.name}' has a dynamic channel dimension; channel dependencies need "
                    "static channel counts",
                    hint="export with a fixed channel count (only the batch and spatial dims may be dynamic)")


def _batch_one(model, shapes, known):
    """``(shapes, known, dyn, at_one)`` for the analysis of a model with a symbolic batch axis.

    Deployment exports compute Reshape targets (channel shuffle, attention heads) from ``Shape`` of
    a tensor with a symbolic batch, so nothing around them folds. Channel coupling does not depend
    on the batch size: the graph is analysed with batch 1 and ``dyn`` maps each value that folds only
    then to the entries that change with the batch (compared with batch 2). A rewritten Reshape
    target writes -1 there (Reshape infers it); other batch-dependent shape inputs are refused
    (:meth:`DependencyGraph.rewrite`). ``at_one``: the :func:`static_shapes` at batch 1 as they are
    (None without a symbolic batch), what FLOPs are counted with."""
    axes = symbolic_batch(model)
    if not axes:
        return shapes, known, {}, None
    s1, k1 = static_shapes(with_batch(model, axes, 1))
    _, k2 = static_shapes(with_batch(model, axes, 2))
    dyn: Dict[str, np.ndarray] = {}
    for name, v in k1.items():
        if name in known:
            continue
        w = k2.get(name)
        dyn[name] = np.ones(v.shape, dtype=bool) if w is None or w.shape != v.shape else (v != w)
    merged = dict(shapes)
    merged.update(s1)
    return merged, k1, dyn, (s1, k1)


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
    shapes, known, dyn, at_one = _batch_one(model, shapes, known)
    dg = DependencyGraph(model, shapes, consts, known=known, dyn=dyn, attention=attention,
                         allow_norm_approx=allow_norm_approx)
    dg.batch_one = at_one
    prot = _protected_names(model, protect, shapes, consts)
    _walk(dg)
    _pin_protected_nodes(dg, prot)
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


def _protected_names(model, protect: Iterable[str], shapes, consts) -> Set[str]:
    """The ``--protect`` names as a set; each must name a node or a tensor of the model."""
    protect = list(protect)
    names = {n.name for n in model.graph.node} | set(shapes) | set(consts)
    missing = [p for p in protect if p not in names]
    if missing:
        raise InputError(f"--protect {', '.join(missing)} matches no node or tensor in the model",
                         hint="use a node name or tensor name as shown by `edgekit prune --explain`")
    return set(protect)


def _walk(dg: DependencyGraph) -> None:
    """Run every node's handler in graph order; channels reaching an op without one are pinned."""
    for idx, proto in enumerate(dg.model.graph.node):
        node = Node(proto, idx)
        key = proto.name or id(proto)
        if key in dg.handled:
            continue
        if proto.op_type == "Constant" or proto.output and proto.output[0] in dg.known:
            continue
        anns = [dg.ann.get(i) if i else None for i in proto.input]
        if not any(a is not None for a in anns):
            handler = HANDLERS.get(proto.op_type)
            if handler is not None and proto.op_type in _SOURCE_OPS:
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


def _pin_protected_nodes(dg: DependencyGraph, prot: Set[str]) -> None:
    """Pin the channels every input and output of a protected node carries."""
    for proto in dg.model.graph.node:
        if proto.name in prot or any(o in prot for o in proto.output) or any(i in prot for i in proto.input):
            for t in list(proto.input) + list(proto.output):
                a = dg.ann.get(t)
                if a is not None:
                    dg.pin(a[1], f"protected by --protect ({proto.name or t})")


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
    """Turn the marks into groups: a group channel per class of united atoms, a group per set of
    connected sources; each group gets its members, dependencies, segments and approximation
    notes, and a group with a pinned atom goes to ``dg.skipped`` with the reasons."""
    if len(dg.uf.parent) == 0:
        return
    groups, gid_of_src = _form_groups(dg)
    for sid, name in enumerate(dg.source_names):
        groups[gid_of_src[sid]].sources.append(name)
    reasons: Dict[int, List[str]] = {}
    for atoms, why in dg.pins:
        for gi in np.unique(dg.grp_of_atom[atoms]).tolist():
            lst = reasons.setdefault(gi, [])
            if why not in lst:
                lst.append(why)
    for atoms, note in dg.approx:
        for gi in np.unique(dg.grp_of_atom[atoms]).tolist():
            if note not in groups[gi].approx:
                groups[gi].approx.append(note)
    for node, tensor, axis, role, atoms in dg.members:
        for gi, idx in _split_by_group(dg, atoms).items():
            groups[gi].members.append(Member(node, tensor, dg.consts[tensor], axis, role, idx))
    for atoms, dep in dg.deps:
        for gi in _split_by_group(dg, atoms):
            groups[gi].dependencies.append(dep)
    for seg in dg.segments:
        for gi, idx in _split_by_group(dg, seg).items():
            groups[gi].segments.append(np.unique(idx[idx >= 0]))
    for gi, g in sorted(groups.items()):
        if gi in reasons:
            g.reason = "; ".join(reasons[gi][:4]) + (f" (+{len(reasons[gi]) - 4} more)" if len(reasons[gi]) > 4 else "")
            dg.skipped.append(g)
        else:
            dg.groups.append(g)


def _form_groups(dg: DependencyGraph):
    """``({group id: empty Group}, group id of every source)``; sets ``dg.chan_of_atom`` and
    ``dg.grp_of_atom``. Groups are numbered by their component, channels by their root atom."""
    n_atoms = len(dg.uf.parent)
    roots = dg.uf.roots()
    src_of_atom = np.asarray(dg.src_of_atom, dtype=np.int64)
    comp_of_src = dg.src_uf.roots()
    comp_of_atom = comp_of_src[src_of_atom]  # a root is an atom: its component is its members'
    comps: Dict[int, List[int]] = {}
    for r in np.unique(roots).tolist():
        comps.setdefault(int(comp_of_atom[r]), []).append(r)
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
    dg.chan_of_atom = local[roots]
    dg.grp_of_atom = np.asarray([gid_of_comp[int(c)] for c in comp_of_atom.tolist()], dtype=np.int64)
    return groups, [gid_of_comp[int(c)] for c in comp_of_src.tolist()]


def _split_by_group(dg: DependencyGraph, atoms: np.ndarray) -> Dict[int, np.ndarray]:
    """``{group id: group channel at each position (-1: not this group's)}`` for the groups that
    ``atoms`` (-1: untracked position) touch."""
    valid = atoms >= 0
    out: Dict[int, np.ndarray] = {}
    if not valid.any():
        return out
    ga = np.where(valid, dg.grp_of_atom[np.where(valid, atoms, 0)], -1)
    ca = np.where(valid, dg.chan_of_atom[np.where(valid, atoms, 0)], -1)
    for gi in np.unique(ga[ga >= 0]).tolist():
        out[gi] = np.where(ga == gi, ca, -1)
    return out
