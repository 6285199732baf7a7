"""``prune()``: analyse, score, select, (compensate), apply — one pass ``ModelProto -> ModelProto``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from edgekit.errors import InputError

# global scope: a group never loses more than this fraction (guards against layer collapse)
GLOBAL_MAX_GROUP_RATIO = 0.9


@dataclass
class PruneReport:
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    ratio: float
    criterion: str
    scope: str
    groups: List[dict] = field(default_factory=list)
    skipped: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def flops_ratio(self) -> float:
        return self.flops_after / self.flops_before if self.flops_before else 1.0

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> dict:
        return {"flops_before": self.flops_before, "flops_after": self.flops_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "flops_ratio": self.flops_ratio, "params_ratio": self.params_ratio,
                "ratio": self.ratio, "criterion": self.criterion, "scope": self.scope,
                "groups_pruned": sum(1 for g in self.groups if g["channels_after"] < g["channels_before"]),
                "groups": self.groups, "skipped": self.skipped, "notes": self.notes,
                "warnings": self.warnings, "seconds": self.seconds}


class PruneContext:
    """What a criterion sees besides the group: the model, current tensor values, calib data."""

    def __init__(self, dg, calib=None):
        self.dg = dg
        self.model = dg.model
        self.calib = calib
        # {group id: channels it loses at most}, set before scoring for criteria that take the hint
        self.remove_hint: Dict[int, int] = {}
        self.updates: Dict[str, np.ndarray] = {}
        self.new_biases: Dict[str, np.ndarray] = {}
        self._outputs: Optional[set] = None  # the graph's output names

    def tensor(self, name: str) -> np.ndarray:
        if name in self.updates:
            return self.updates[name]
        return self.dg.consts[name]

    def real_tensor(self, name: str) -> np.ndarray:
        """:meth:`tensor` as the network uses it: a stored integer weight that a DequantizeLinear
        reads (ONNX Runtime's QDQ format: int8 weights, int32 biases) comes back dequantised, so
        that magnitudes compare across channels of different scales. Other tensors as stored."""
        arr = self.tensor(name)
        if np.issubdtype(arr.dtype, np.floating):
            return arr
        # a private copy is named "<stored>::<node>:<slot>" (stored names may hold "::" themselves)
        base = name.rsplit("::", 1)[0] if name in getattr(self.dg, "private", {}) else name
        for user in self.dg.users.get(base, ()):
            if user.op_type == "DequantizeLinear" and user.input[0] == base:
                return dequantize(arr, user, self.dg.consts)
        return arr

    def set_tensor(self, name: str, array: np.ndarray) -> None:
        old = self.dg.consts.get(name)
        if old is None or tuple(old.shape) != tuple(np.shape(array)):
            raise ValueError(f"set_tensor({name}): shape {np.shape(array)} != {None if old is None else old.shape}")
        self.updates[name] = np.asarray(array, dtype=old.dtype)

    def add_bias(self, node, array: np.ndarray) -> None:
        """Give ``node`` (Conv / Gemm) a bias of its own: a new input 2, replacing any it had."""
        self.new_biases[node.name] = np.asarray(array, dtype=np.float32)

    def own_tensor(self, node, slot: int) -> Optional[str]:
        """The stored tensor (a key of ``dg.consts``) that holds ``node.input[slot]`` for this node
        alone, so that :meth:`set_tensor` on it changes this node and no other; looks through
        Identity / Cast nodes that only this node reads. None when the input is computed, or when
        the stored value is shared with other readers (exporters de-duplicate equal tensors: a
        zero bias may be the zero bias of a LayerNorm) and the pruner made no private copy of it
        for this node: writing it would change those readers too."""
        for virt, (owner, slots) in getattr(self.dg, "private", {}).items():
            if owner is node and slot in slots:
                return virt
        if slot >= len(node.input) or not node.input[slot]:
            return None
        claim = getattr(self.dg, "claim_use", {}).get(node.input[slot])
        if claim is not None and claim[0] is node and slot in claim[1]:
            return node.input[slot]  # shared, claimed by this node: apply() gives it its own copy
        if self._outputs is None:
            self._outputs = {o.name for o in self.model.graph.output}
        cur = node.input[slot]
        for _ in range(8):
            if len(self.dg.users.get(cur, ())) != 1 or cur in self._outputs:
                return None
            if cur in self.dg.consts:
                return cur
            prod = self.dg.producer.get(cur)
            if prod is None or prod.op_type not in ("Identity", "Cast") or not prod.input:
                return None
            cur = prod.input[0]
        return None


def dequantize(q: np.ndarray, node, consts) -> np.ndarray:
    """``(q - zero_point) * scale`` of a DequantizeLinear ``node`` whose parameters are in ``consts``:
    per tensor, per axis, or blocked (opset 21 ``block_size``). ``q`` itself when a parameter is
    computed."""
    from edgekit.prune.handlers import attr

    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if scale is None or zp is None:
        return q
    scale, zp = np.asarray(scale, np.float64), np.asarray(zp, np.float64)
    ax = int(attr(node, "axis", 1))
    ax = ax + q.ndim if ax < 0 else ax
    block = int(attr(node, "block_size", 0) or 0)

    def spread(p):
        if p.size == 1:
            return p.reshape(())
        if block > 0 and p.ndim == q.ndim:
            return np.repeat(p, block, axis=ax).take(np.arange(q.shape[ax]), axis=ax)
        shape = [1] * q.ndim
        shape[ax] = p.size
        return p.reshape(shape)

    return ((q.astype(np.float64) - spread(zp)) * spread(scale)).astype(np.float32)


def _with_node_names(model):
    """``model`` itself when every node has a name of its own, else a copy in which the unnamed
    and the repeated ones get one (``<op>_<index>``): criteria and the rewrite address nodes by
    name (a new bias, a refitted layer). The caller's model is never changed."""
    import onnx

    names = [n.name for n in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    taken, seen = set(names), set()
    for i, n in enumerate(copy.graph.node):
        if n.name and n.name not in seen:
            seen.add(n.name)
            continue
        base = f"{n.op_type}_{i}"
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        n.name = name
        taken.add(name)
        seen.add(name)
    return copy


def _round_keep(n: int, keep: int, round_to: int, floor: int) -> int:
    keep = max(keep, floor, 1 if n else 0)
    if round_to > 1 and n >= round_to:
        keep = int(math.ceil(keep / round_to) * round_to)
    return min(keep, n)


def _select(scores: np.ndarray, n_keep: int, segments: Sequence[np.ndarray], floor: int) -> np.ndarray:
    """Keep the ``n_keep`` best channels while every segment keeps at least ``floor``."""
    n = len(scores)
    keep = np.ones(n, dtype=bool)
    to_remove = n - n_keep
    if to_remove <= 0:
        return keep
    order = np.argsort(scores, kind="stable")
    # fast path: drop the weakest, then check that no segment went below its floor
    keep[order[:to_remove]] = False
    if all(int(keep[s].sum()) >= min(floor, len(s)) for s in segments):
        return keep
    keep[:] = True
    left = [len(s) for s in segments]
    seg_of: Dict[int, List[int]] = {}
    for si, s in enumerate(segments):
        for c in s.tolist():
            seg_of.setdefault(c, []).append(si)
    for c in order.tolist():
        if to_remove == 0:
            break
        segs = seg_of.get(c, [])
        if any(left[si] - 1 < min(floor, len(segments[si])) for si in segs):
            continue
        for si in segs:
            left[si] -= 1
        keep[c] = False
        to_remove -= 1
    return keep


def _decide(groups, scores, ratio, scope, round_to, min_channels, normalize: bool = True):
    keeps: Dict[int, np.ndarray] = {}
    if ratio <= 0:
        return {g.id: np.ones(g.size, dtype=bool) for g in groups}
    if scope == "uniform":
        for g in groups:
            n_keep = _round_keep(g.size, g.size - int(math.floor(g.size * ratio + 1e-9)), round_to, min_channels)
            keeps[g.id] = _select(scores[g.id], n_keep, g.segments, min_channels)
        return keeps
    # global: one threshold over normalised scores, with a per-group floor. Magnitude criteria are
    # normalised per group (layers differ in scale); a criterion whose scores already share one unit
    # across groups (obspa: expected output error) says so with `scores_comparable` and is not.
    allv = []
    for g in groups:
        s = np.asarray(scores[g.id], dtype=np.float64)
        m = s.mean() if normalize and s.size and s.mean() > 0 else 1.0
        allv.append(s / m)
    total = sum(g.size for g in groups)
    flat = np.sort(np.concatenate(allv)) if allv else np.zeros(0)
    k = int(math.floor(total * ratio))
    thr = flat[k - 1] if k > 0 else -np.inf
    for g, s in zip(groups, allv):
        floor = max(min_channels, int(math.ceil(g.size * (1 - GLOBAL_MAX_GROUP_RATIO))))
        n_drop = int((s <= thr).sum())
        n_keep = _round_keep(g.size, g.size - n_drop, round_to, floor)
        keeps[g.id] = _select(s, n_keep, g.segments, min_channels)
    return keeps


class _Estimator:
    """FLOPs/params of a candidate decision without rewriting the graph."""

    def __init__(self, dg, costs):
        self.dg = dg
        self.costs = costs

    def frac(self, name, ak):
        a = self.dg.ann.get(name)
        if a is None:
            return 1.0
        from edgekit.prune.apply import _kept

        k = _kept(a[1], ak)
        return float(k.mean()) if k.size else 1.0

    def flops(self, keeps) -> float:
        from edgekit.prune.apply import atom_keep

        ak = atom_keep(self.dg, keeps)
        tot = 0.0
        for c in self.costs:
            f = self.frac(c.out, ak) if c.out else 1.0
            if c.weighted and not c.depthwise and c.data_in:
                f *= self.frac(c.data_in, ak)
            tot += c.flops * f
        return tot

    def params(self, keeps, base) -> float:
        from edgekit.prune.apply import tensor_masks

        removed = 0.0
        for name, axes in tensor_masks(self.dg, keeps).items():
            arr = self.dg.consts[name]
            frac = 1.0
            for k in axes.values():
                frac *= k.mean()
            if arr.dtype != np.int64:
                removed += arr.size * (1 - frac)
        return base - removed


def prune(model, **kwargs):
    """Structurally prune ``model`` (a ModelProto, never modified); return ``(pruned, PruneReport)``.

    Keyword arguments: exactly one of ``ratio`` (fraction of channels removed per group, or
    overall with ``scope="global"``), ``flops_target`` / ``params_target`` (fraction of FLOPs /
    parameters to keep); ``criterion`` (registry name or callable), ``scope``, ``round_to``,
    ``min_channels``, ``protect``, ``calib``, ``explain``, ``progress``; ``attention``
    (``"heads"``: remove whole attention heads, ``"head-dims"``: the same dims in every head;
    default :data:`edgekit.prune.analysis.DEFAULT_ATTENTION`); ``allow_norm_approx`` (prune
    through LayerNorm over channels; those groups are marked approximate in the report).
    """
    pruned, report, _ = prune_with_graph(model, **kwargs)
    return pruned, report


# How far above a FLOPs / params target the result may land before the report warns (channel counts
# are whole numbers, and the estimate the search uses is not the pruned graph's exact count).
TARGET_SLACK = 0.02


def prune_with_graph(model, *, ratio: Optional[float] = None, flops_target: Optional[float] = None,
          params_target: Optional[float] = None, criterion="l1", scope: str = "uniform",
          round_to: int = 1, min_channels: int = 1, protect: Iterable[str] = (), calib=None,
          explain: bool = False, progress: Optional[Callable[..., None]] = None,
          criterion_options: Optional[dict] = None, attention: Optional[str] = None,
          allow_norm_approx: bool = False):
    """Like :func:`prune`, also returning the DependencyGraph."""
    import time

    from edgekit.graph.flops import count_params, node_costs
    from edgekit.prune import criteria as crit
    from edgekit.prune.analysis import build
    from edgekit.prune.apply import apply

    t0 = time.perf_counter()
    ratio_given = ratio
    given = [x is not None for x in (ratio, flops_target, params_target)]
    if sum(given) != 1:
        raise InputError("give exactly one of ratio, flops_target, params_target",
                         hint="e.g. --ratio 0.3 or --flops-target 0.5")
    if ratio is not None and not (0.0 <= ratio < 1.0):
        raise InputError(f"ratio must be in [0, 1), got {ratio}", hint="--ratio 0.5 removes half the channels")
    for nm, v in (("flops_target", flops_target), ("params_target", params_target)):
        if v is not None and not (0.0 < v <= 1.0):
            raise InputError(f"{nm} must be in (0, 1], got {v}", hint="0.5 keeps half")
    if scope not in ("uniform", "global"):
        raise InputError(f"scope must be 'uniform' or 'global', got {scope!r}")
    if round_to < 1 or min_channels < 1:
        raise InputError("round_to and min_channels must be >= 1")
    crit_name = criterion if isinstance(criterion, str) else getattr(criterion, "__name__", type(criterion).__name__)
    scorer = crit.get(criterion, **(criterion_options or {}))
    if progress:
        progress(description="analysing dependencies")
    from edgekit.prune.analysis import DEFAULT_ATTENTION

    from edgekit.prune.canon import split_sequences

    model = split_sequences(_with_node_names(model))
    dg = build(model, protect=protect, attention=attention or DEFAULT_ATTENTION,
               allow_norm_approx=allow_norm_approx)
    ctx = PruneContext(dg, calib=calib)
    from edgekit.prune.analysis import flops_shapes, static_shapes

    fshapes, fknown = flops_shapes(model, dg.shapes, dg.known)
    costs = node_costs(model, fshapes, fknown)
    flops_before = sum(c.flops for c in costs)
    params_before = count_params(model)
    est = _Estimator(dg, costs)
    normalize = not scorer.scores_comparable

    def search(scores):
        """The ratio meeting the FLOPs / params target (or the given one) and its decision."""
        r = ratio
        if r is None:
            target = flops_target if flops_target is not None else params_target
            lo, hi = 0.0, 0.99
            best = 0.0
            for _ in range(22):
                mid = (lo + hi) / 2
                keeps = _decide(dg.groups, scores, mid, scope, round_to, min_channels, normalize)
                val = est.flops(keeps) / max(flops_before, 1) if flops_target is not None else \
                    est.params(keeps, params_before) / max(params_before, 1)
                if val > target:
                    lo = mid
                else:
                    hi = mid
                    best = mid
            r = hi if best == 0.0 else best
        return r, _decide(dg.groups, scores, r, scope, round_to, min_channels, normalize)

    def score(groups):
        for g in groups:
            got = scorer.score(g, ctx)
            if isinstance(got, crit.Scores):
                exact[g.id] = got.exact_upto
                got = got.values
            s = np.asarray(got, dtype=np.float64).reshape(-1)
            if s.shape[0] != g.size:
                raise ValueError(f"criterion {crit_name} returned {s.shape[0]} scores for a group of {g.size}")
            scores[g.id] = s

    if progress:
        progress(description="scoring groups")
    scores: Dict[int, np.ndarray] = {}
    exact: Dict[int, float] = {}  # group id -> score up to which its scores are exact
    scorer.start(dg, ctx)
    if scope == "uniform" and scorer.takes_remove_hint:
        # A uniform ratio fixes how many channels each group loses whatever the scores (FLOPs
        # barely depend on which): a criterion that orders channels greedily stops there (with a
        # margin), and a group whose removed channels fall outside its exact part is rescored whole.
        r0, _ = search({g.id: np.zeros(g.size) for g in dg.groups})
        wide = _decide(dg.groups, {g.id: np.zeros(g.size) for g in dg.groups}, min(r0 + 0.02, 0.99),
                       scope, round_to, min_channels, normalize)
        ctx.remove_hint = {g.id: int((~wide[g.id]).sum()) for g in dg.groups}
    score(dg.groups)
    rescored: set = set()
    while True:  # ends: each group is rescored (without a hint: exact everywhere) once at most
        ratio_found, keeps = search(scores)
        redo = [g for g in dg.groups if g.id not in rescored and (~keeps[g.id]).any()
                and float(scores[g.id][~keeps[g.id]].max()) > exact.get(g.id, np.inf)]
        if not redo:
            break
        for g in redo:
            ctx.remove_hint.pop(g.id, None)
            rescored.add(g.id)
        score(redo)
    ratio = ratio_found
    if scorer.updates_weights:
        if progress:
            progress(description="updating weights")
        for g in dg.groups:
            k = keeps[g.id]
            if not k.all():
                scorer.update(g, np.nonzero(k)[0], ctx)
        scorer.finish(dg, keeps, ctx)  # a pass over all keep masks at once (obspa-seq)
    if progress:
        progress(description="rewriting the graph")
    pruned = apply(dg, keeps, ctx.updates, ctx.new_biases)
    pshapes, pknown = static_shapes(pruned)
    pshapes, pknown = flops_shapes(pruned, pshapes, pknown)
    flops_after = sum(c.flops for c in node_costs(pruned, pshapes, pknown))
    report = PruneReport(flops_before, flops_after, params_before, count_params(pruned), float(ratio),
                         crit_name, scope)
    for g in dg.groups:
        k = keeps[g.id]
        d = {"id": g.id, "sources": g.sources, "channels_before": g.size, "channels_after": int(k.sum()),
             "score": float(np.mean(scores[g.id])) if g.size else 0.0}
        if g.approx:
            d["approximate"] = "; ".join(g.approx)
        if explain:
            d["ops"] = g.ops
        report.groups.append(d)
    for g in dg.skipped:
        d = {"id": g.id, "sources": g.sources, "channels": g.size, "reason": g.reason}
        if explain:
            d["ops"] = g.ops
        report.skipped.append(d)
    n_approx = sum(1 for g in dg.groups if g.approx and not keeps[g.id].all())
    if n_approx:
        report.notes.append(f"{n_approx} pruned group(s) are approximate (LayerNorm over channels): "
                            "outputs change beyond the removed channels; fine-tune or validate accuracy")
    crit_notes, crit_warnings = scorer.report_lines()
    report.notes.extend(crit_notes)
    report.warnings.extend(crit_warnings)
    if not dg.groups:
        report.warnings.append("no prunable group: every channel group was refused (see skipped); "
                               "the output is the model unpruned")
    elif ratio_given is None:
        target = flops_target if flops_target is not None else params_target
        what = "FLOPs" if flops_target is not None else "params"
        got = report.flops_ratio if flops_target is not None else report.params_ratio
        if got > target + TARGET_SLACK:
            report.warnings.append(
                f"{what} target {target:g} not reached: {got:.3f} (the prunable groups do not hold enough "
                f"{what}; see skipped for the groups refused and why)")
    report.seconds = time.perf_counter() - t0
    report.keeps = keeps
    report.updates, report.new_biases = ctx.updates, ctx.new_biases  # for torch_map
    return pruned, report, dg


def analyze(model, protect: Iterable[str] = (), attention: Optional[str] = None,
            allow_norm_approx: bool = False):
    """The :class:`~edgekit.prune.graph.DependencyGraph` of ``model``: groups and refused groups."""
    from edgekit.prune.analysis import DEFAULT_ATTENTION, build
    from edgekit.prune.canon import split_sequences

    return build(split_sequences(model), protect=protect, attention=attention or DEFAULT_ATTENTION,
                 allow_norm_approx=allow_norm_approx)
