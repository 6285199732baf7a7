"""The dependency graph and its nouns: Node, Dependency, Member, Group, Rewrite, DependencyGraph.

How channels are tracked. Every *source* (an op that creates new channels from a weight: Conv,
Gemm, MatMul with a constant operand, ConvTranspose) creates fresh *atoms*, one per output channel.
Walking the graph in topological order, each tensor gets an annotation ``(axis, atoms)``: the axis
that carries channels and, for every position on it, the atom it holds (``-1``: a position that is
never pruned, e.g. a graph-input channel concatenated in). Op handlers (``handlers.HANDLERS``)
propagate annotations and *mark*:

* members: a stored tensor (initializer or Constant) + axis whose positions follow atoms
  (producer rows, BN parameters, consumer columns, per-channel constants, QDQ scales);
* unions: positions that must be kept or dropped together (a residual Add ties the atoms of both
  operands; a grouped conv ties the same slot of every group);
* pins: atoms that must not be removed, with the reason (graph output, op not in the table, ...);
* rewrites: shape-carrying attributes or constants to recompute (Reshape targets, Split sizes,
  Slice bounds, depthwise ``group``).

A *group channel* is a class of united atoms; a *Group* is a connected set of sources (two
sources are connected when any of their atoms were united). A group with any pinned atom is
refused as a whole, with its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from edgekit.errors import InputError


class _UF:
    """Union-find over consecutive integer ids."""

    def __init__(self) -> None:
        self.parent: List[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


@dataclass
class Node:
    """A graph operator as the pruner sees it (wraps the ``onnx.NodeProto``)."""

    proto: object
    index: int

    @property
    def name(self) -> str:
        return self.proto.name or f"{self.proto.op_type}_{self.index}"

    @property
    def op_type(self) -> str:
        return self.proto.op_type


@dataclass
class Dependency:
    """``trigger -> handler``: pruning the trigger's channels requires the handler's op to follow."""

    trigger: str       # tensor whose channels change
    handler: str       # op_type of the handler that propagated / marked it
    node: Node

    def __str__(self) -> str:
        return f"{self.trigger} -> {self.handler}({self.node.name})"


@dataclass
class Member:
    """A stored tensor whose positions on ``axis`` follow the group's channels.

    ``index[p]`` is the group channel held at position ``p`` (``-1``: not this group's, kept).
    """

    node: Optional[object]
    tensor: str
    array: np.ndarray
    axis: int
    role: str
    index: np.ndarray

    def to_dict(self) -> dict:
        return {"node": getattr(self.node, "name", None), "tensor": self.tensor, "axis": self.axis,
                "role": self.role, "shape": list(self.array.shape)}


@dataclass
class Group:
    """A set of coupled channels: removing group channel ``j`` removes every position mapped to it."""

    id: int
    size: int
    members: List[Member] = field(default_factory=list)
    dependencies: List[Dependency] = field(default_factory=list)
    reason: Optional[str] = None
    segments: List[np.ndarray] = field(default_factory=list)  # channel-id sets that must keep >= min
    sources: List[str] = field(default_factory=list)          # node names creating the channels
    approx: List[str] = field(default_factory=list)           # why pruning is not mask-equivalent (opt-in)
    _roots: np.ndarray = field(default=None, repr=False)      # root atom of each group channel

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @property
    def ops(self) -> List[str]:
        seen, out = set(), []
        for d in self.dependencies:
            key = d.node.name
            if key not in seen:
                seen.add(key)
                out.append(f"{d.node.op_type}:{key}")
        return out

    def consumer_uses(self) -> List[Tuple[object, str, np.ndarray]]:
        """``(node, input tensor, cols)`` for each Conv/Gemm/MatMul consuming the group's channels."""
        uses = []
        for m in self.members:
            if m.role != "in" or m.node is None:
                continue
            cols = np.full(self.size, -1, dtype=np.int64)
            pos = np.nonzero(m.index >= 0)[0]
            for p in pos[::-1]:  # first position wins
                cols[m.index[p]] = p
            uses.append((m.node, m.node.input[0], cols))
        return uses

    def details(self) -> str:
        head = f"group {self.id}: {self.size} channels, sources {', '.join(self.sources) or '-'}"
        if self.approx:
            head += "\n  " + "; ".join(self.approx) + " (pruned, but not mask-equivalent)"
        if self.reason:
            head += f"\n  NOT PRUNED: {self.reason}"
        lines = [head, "  coupled ops: " + (", ".join(self.ops) or "-")]
        for m in self.members:
            lines.append(f"  {m.role:<11} {m.tensor} axis {m.axis} shape {tuple(m.array.shape)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = {"id": self.id, "channels": self.size, "sources": self.sources, "ops": self.ops,
             "members": [m.to_dict() for m in self.members]}
        if self.reason:
            d["reason"] = self.reason
        if self.approx:
            d["approximate"] = "; ".join(self.approx)
        return d


@dataclass
class Rewrite:
    """A shape-carrying input or attribute of ``node`` that :func:`~edgekit.prune.apply.apply`
    recomputes from the kept ``atoms``."""

    kind: str            # reshape | split | slice | conv_group | const
    node: object
    atoms: Sequence[np.ndarray]
    info: dict


class DependencyGraph:
    """Groups of coupled channels of one ONNX model (built by :func:`edgekit.prune.analysis.build`).

    Every field is declared here. The analysis fills the marks (``members``, ``pins``, ``rewrites``
    ...) while the handlers walk the graph, then ``groups`` / ``skipped`` and the atom maps."""

    def __init__(self, model, shapes, consts, known: Optional[Dict[str, np.ndarray]] = None,
                 dyn: Optional[Dict[str, np.ndarray]] = None, attention: str = "head-dims",
                 allow_norm_approx: bool = False) -> None:
        self.model = model
        self.shapes = shapes
        self.consts = consts              # name -> np.ndarray (initializers and Constant outputs)
        # small values known before run time: constants and folded shape arithmetic (graph.fold)
        self.known: Dict[str, np.ndarray] = {} if known is None else known
        # value -> bool mask of its entries that change with a symbolic batch (analysis._batch_one)
        self.dyn: Dict[str, np.ndarray] = {} if dyn is None else dyn
        # static_shapes of the model at batch 1 when its batch is symbolic (FLOPs are counted so)
        self.batch_one: Optional[Tuple[Dict[str, tuple], Dict[str, np.ndarray]]] = None
        self.attention = attention                        # how Reshape-to-heads couples channels
        self.allow_norm_approx = bool(allow_norm_approx)  # prune through LayerNorm over channels
        self.producer: Dict[str, object] = {}             # tensor -> the NodeProto writing it
        self.users: Dict[str, List[object]] = {}          # tensor -> the NodeProtos reading it
        for n in model.graph.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.users.setdefault(i, []).append(n)
        # nodes a handler already dealt with as part of a pattern (name, or id() of unnamed ones)
        self.handled: Set[object] = set()
        # stored tensor -> id() of the first node that marked it as its weight
        self.claims: Dict[str, int] = {}
        # stored tensor -> (that node, its input slots reading it): shared tensors get a copy there
        self.claim_use: Dict[str, Tuple[object, List[int]]] = {}
        # private copy "<stored>::<node>:<slot>" of a shared weight -> (node, input slots)
        self.private: Dict[str, Tuple[object, List[int]]] = {}
        self.aliases: Dict[str, Set[str]] = {}            # stored tensor -> the input names it is read as
        self.uf = _UF()
        self.src_of_atom: List[int] = []
        self.src_uf = _UF()
        self.source_names: List[str] = []
        self.ann: Dict[str, Tuple[int, np.ndarray]] = {}
        self.members: List[Tuple[object, str, int, str, np.ndarray]] = []
        self.pins: List[Tuple[np.ndarray, str]] = []
        self.approx: List[Tuple[np.ndarray, str]] = []   # atoms whose pruning changes outputs (opt-in)
        self.rewrites: List[Rewrite] = []
        self.segments: List[np.ndarray] = []
        self.deps: List[Tuple[np.ndarray, Dependency]] = []
        self.groups: List[Group] = []
        self.skipped: List[Group] = []
        # set when the groups are formed: group channel and group id of every atom
        self.chan_of_atom: np.ndarray = np.zeros(0, dtype=np.int64)
        self.grp_of_atom: np.ndarray = np.zeros(0, dtype=np.int64)

    # ---- marking API used by handlers --------------------------------------------------------
    def new_source(self, node: Node, n: int) -> np.ndarray:
        atoms = self.uf.add(n)
        sid = int(self.src_uf.add(1)[0])
        self.source_names.append(node.name)
        self.src_of_atom.extend([sid] * n)
        self.segments.append(atoms)
        return atoms

    def unite(self, a: np.ndarray, b: np.ndarray, why: str) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            if x < 0 and y < 0:
                continue
            if x < 0 or y < 0:
                self.pins.append((np.array([max(x, y)]), why))
                continue
            self.uf.union(x, y)
            self.src_uf.union(self.src_of_atom[x], self.src_of_atom[y])

    def pin(self, atoms: np.ndarray, reason: str) -> None:
        atoms = np.asarray(atoms)
        atoms = atoms[atoms >= 0]
        if atoms.size:
            self.pins.append((atoms, reason))

    def approximate(self, atoms: np.ndarray, note: str) -> None:
        """Pruning these atoms is allowed but not mask-equivalent (``note`` says why)."""
        atoms = np.asarray(atoms)
        atoms = atoms[atoms >= 0]
        if atoms.size:
            self.approx.append((atoms, note))

    def member(self, node, tensor: str, axis: int, role: str, atoms: np.ndarray) -> None:
        arr = self.consts.get(tensor)
        if arr is not None and (axis >= arr.ndim or arr.shape[axis] != len(atoms)):
            raise InputError(
                f"the graph fails shape inference: {getattr(node, 'name', '')} reads {len(atoms)} channels but "
                f"its tensor {tensor.split('::')[0]} has shape {tuple(arr.shape)}",
                hint="the model is inconsistent; re-export it or check it with onnx.checker (full_check=True)")
        self.members.append((node, tensor, axis, role, np.asarray(atoms, dtype=np.int64)))

    def depend(self, trigger: str, node: Node, atoms: np.ndarray) -> None:
        self.deps.append((np.asarray(atoms), Dependency(trigger, node.op_type, node)))

    def rewrite(self, kind: str, node, atoms: Sequence[np.ndarray], **info) -> None:
        why = self._batch_dependent(kind, node, info)
        if why:
            for a in atoms:
                self.pin(a, why)
            return
        self.rewrites.append(Rewrite(kind, node, list(atoms), info))

    def _batch_dependent(self, kind: str, node, info) -> Optional[str]:
        """Why a shape input that depends on a symbolic batch cannot be rewritten (None: it can).
        A Reshape target with one batch-dependent entry gets -1 there; anything else would freeze
        the batch size into the model."""
        dyn = self.dyn
        if not dyn:
            return None
        slots = {"reshape": [info.get("slot", 1)], "slice": [1, 2], "split": [1]}.get(kind, [])
        for slot in slots:
            name = node.input[slot] if len(node.input) > slot else ""
            mask = dyn.get(name)
            if mask is None or not mask.any():
                continue
            tgt = self.known.get(name)
            if kind == "reshape" and node.op_type == "Reshape" and int(mask.sum()) == 1 and \
                    tgt is not None and not np.isin(tgt[~mask], (-1, 0)).any():
                continue
            return (f"{node.name or node.op_type}: {node.op_type} {kind} input {name} depends on the batch size "
                    "(symbolic batch) in a way that cannot be rewritten")
        return None

    def segment(self, atoms: np.ndarray) -> None:
        atoms = np.asarray(atoms)
        if (atoms >= 0).any():
            self.segments.append(atoms[atoms >= 0])

    # ---- queries -------------------------------------------------------------------------------
    def group_of(self, name: str) -> Optional[Group]:
        for g in self.groups + self.skipped:
            if name in g.sources:
                return g
        return None

    def summary(self) -> dict:
        n_all = sum(g.size for g in self.groups) + sum(g.size for g in self.skipped)
        n_ok = sum(g.size for g in self.groups)
        return {"groups": len(self.groups), "skipped": len(self.skipped), "channels": n_all,
                "prunable_channels": n_ok, "prunable_fraction": (n_ok / n_all) if n_all else 0.0}

    def details(self) -> str:
        return "\n".join(g.details() for g in self.groups + self.skipped)
