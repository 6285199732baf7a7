"""``prune()``: analyse, score, select, (compensate), apply — one pass ``ModelProto -> ModelProto``.

:func:`prune_with_graph` runs the steps in order: check the settings, analyse the dependency graph
(:mod:`~edgekit.prune.analysis`), score the groups with the criterion and choose the channels
(:mod:`~edgekit.prune.selection`), let the criterion update the weights it keeps, rewrite the
graph (:mod:`~edgekit.prune.apply`) and build the :class:`PruneReport`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
import onnx

from edgekit.errors import InputError
from edgekit.graph.flops import count_params, flops_shapes, node_costs
from edgekit.graph.view import check_inputs_defined
from edgekit.prune import criteria as crit
from edgekit.prune.analysis import DEFAULT_ATTENTION, build
from edgekit.prune.apply import apply
from edgekit.prune.canon import split_sequences
from edgekit.prune.context import PruneContext
from edgekit.prune.selection import Estimator, Selector

__all__ = ["PruneContext", "PruneReport", "analyze", "prune", "prune_with_graph"]

# How far above a FLOPs / params target the result may land before the report warns (channel counts
# are whole numbers, and the estimate the search uses is not the pruned graph's exact count).
TARGET_SLACK = 0.02

# `edgekit prune`'s rounding without --round-to / --device: the multiple that measured fastest on ONNX
# Runtime CPU (the embedded default) across the built-in corpus and ResNet-50, 1 vs 4 vs 8 vs 16
# (bench/prune_rounding.py); the cpu profile's [defaults] channel_multiple says the same. The library
# call keeps exact counts (round_to_default=1) so that a ratio means the same on any group size;
# callers that want the fast shapes pass round_to_default=DEFAULT_ROUND_TO, as the CLI does.
DEFAULT_ROUND_TO = 16


@dataclass
class PruneReport:
    """What a prune did: FLOPs / params before and after, the groups pruned and refused, notes."""

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
    round_to: int = 1  # the channel multiple used (explicit or the default)
    adaptive_round: bool = False  # smaller groups rounded to a smaller multiple (selection.multiple_for)
    # the decision and the criterion's weight changes, for mapping back to PyTorch (edgekit.prune.torch)
    keeps: Dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    updates: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    new_biases: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)

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
                "ratio": self.ratio, "criterion": self.criterion, "scope": self.scope, "round_to": self.round_to,
                "adaptive_round": self.adaptive_round,
                "groups_pruned": sum(1 for g in self.groups if g["channels_after"] < g["channels_before"]),
                "groups": self.groups, "skipped": self.skipped, "notes": self.notes,
                "warnings": self.warnings, "seconds": self.seconds}


def _with_node_names(model):
    """``model`` itself when every node has a name of its own, else a copy in which the unnamed
    and the repeated ones get one (``<op>_<index>``): criteria and the rewrite address nodes by
    name (a new bias, a refitted layer). The caller's model is never changed."""
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


def prune(model, **kwargs):
    """Structurally prune ``model`` (a ModelProto, never modified); return ``(pruned, PruneReport)``.

    Keyword arguments: exactly one of ``ratio`` (fraction of channels removed per group, or
    overall with ``scope="global"``), ``flops_target`` / ``params_target`` (fraction of FLOPs /
    parameters to keep); ``criterion`` (registry name or callable), ``scope``, ``round_to``,
    ``min_channels``, ``protect``, ``calib``, ``explain``, ``progress``; ``attention``
    (``"heads"``: remove whole attention heads, ``"head-dims"``: the same dims in every head;
    default :data:`edgekit.prune.analysis.DEFAULT_ATTENTION`); ``allow_norm_approx`` (prune
    through LayerNorm over channels; those groups are marked approximate in the report).

    ``round_to=None`` (the default) takes ``round_to_default`` (1: exact counts; the CLI passes
    :data:`DEFAULT_ROUND_TO` or a device profile's channel multiple): unlike an explicit
    ``round_to`` it is never refused for being larger than every group; groups smaller than it
    keep an unrounded count. ``adaptive_round`` (the CLI's default without --device): a group
    smaller than 4x that multiple rounds to half of it, and so on
    (:func:`edgekit.prune.selection.multiple_for`); an explicit ``round_to`` is always exact.
    """
    pruned, report, _ = prune_with_graph(model, **kwargs)
    return pruned, report


def prune_with_graph(model, *, ratio: Optional[float] = None, flops_target: Optional[float] = None,
                     params_target: Optional[float] = None, criterion="l1", scope: str = "uniform",
                     round_to: Optional[int] = None, min_channels: int = 1, protect: Iterable[str] = (), calib=None,
                     explain: bool = False, progress: Optional[Callable[..., None]] = None,
                     criterion_options: Optional[dict] = None, attention: Optional[str] = None,
                     allow_norm_approx: bool = False, round_to_default: int = 1,
                     adaptive_round: bool = False, keep_counts=None):
    """Like :func:`prune`, also returning the DependencyGraph. ``keep_counts`` (instead of a ratio or
    target): channels each group keeps, ``{group id: n}`` or a callable deciding them from the
    scores (:meth:`~edgekit.prune.selection.Selector.by_counts`)."""
    t0 = time.perf_counter()
    explicit_round = round_to is not None
    round_to = round_to if explicit_round else round_to_default
    _check_settings(ratio, flops_target, params_target, scope, round_to, min_channels, keep_counts is not None)
    crit_name = criterion if isinstance(criterion, str) else getattr(criterion, "__name__", type(criterion).__name__)
    scorer = crit.get(criterion, **(criterion_options or {}))
    check_inputs_defined(model)
    _say(progress, "analysing dependencies")
    model = split_sequences(_with_node_names(model))
    dg = build(model, protect=protect, attention=attention or DEFAULT_ATTENTION,
               allow_norm_approx=allow_norm_approx)
    _check_against_groups(dg, round_to if explicit_round else 1, min_channels)
    ctx = PruneContext(dg, calib=calib)
    costs = node_costs(model, *flops_shapes(model, dg.shapes, dg.known, batch_one=dg.batch_one))
    flops_before, params_before = sum(c.flops for c in costs), count_params(model)
    selector = Selector(dg.groups, Estimator(dg, costs), flops_before, params_before, scope=scope,
                        round_to=round_to, min_channels=min_channels, normalize=not scorer.scores_comparable,
                        ratio=ratio, flops_target=flops_target, params_target=params_target,
                        adaptive_round=adaptive_round and not explicit_round, keep_counts=keep_counts)
    _say(progress, "scoring groups")
    scores, ratio_found, keeps = _score_and_select(scorer, crit_name, dg, ctx, selector)
    if scorer.updates_weights:
        _say(progress, "updating weights")
        for g in dg.groups:
            k = keeps[g.id]
            if not k.all():
                scorer.update(g, np.nonzero(k)[0], ctx)
        scorer.finish(dg, keeps, ctx)  # a pass over all keep masks at once (obspa-seq)
    _say(progress, "rewriting the graph")
    pruned = apply(dg, keeps, ctx.updates, ctx.new_biases)
    flops_after = sum(c.flops for c in node_costs(pruned, *flops_shapes(pruned)))
    report = PruneReport(flops_before, flops_after, params_before, count_params(pruned), float(ratio_found),
                         crit_name, scope, round_to=round_to,
                         adaptive_round=adaptive_round and not explicit_round, keeps=keeps, updates=ctx.updates, new_biases=ctx.new_biases)
    report.groups = _group_rows(dg, keeps, scores, explain)
    report.skipped = _skipped_rows(dg, explain)
    _add_notes(report, dg, keeps, scorer)
    _warn_if_unchanged(report, dg, keeps, ratio, round_to, min_channels)
    if dg.groups and ratio is None and keep_counts is None:
        _check_target(report, flops_target, params_target)
        _note_overshoot(report, flops_target, params_target, round_to)
    report.seconds = time.perf_counter() - t0
    return pruned, report, dg


def _check_settings(ratio, flops_target, params_target, scope, round_to, min_channels, counts=False) -> None:
    """Refuse settings that cannot mean anything; the messages name the CLI flags."""
    given = [x is not None for x in (ratio, flops_target, params_target)]
    if counts and any(given):
        raise InputError("explicit keep counts replace --ratio / --flops-target / --params-target: give one")
    if sum(given) != 1 and not counts:
        raise InputError("give exactly one of --ratio, --flops-target, --params-target",
                         hint="e.g. --ratio 0.3 or --flops-target 0.5")
    if ratio is not None and not (_is_number(ratio) and 0.0 <= ratio < 1.0):
        raise InputError(f"--ratio must be in [0, 1), got {ratio}", hint="--ratio 0.5 removes half the channels")
    for flag, v in (("--flops-target", flops_target), ("--params-target", params_target)):
        if v is not None and not (_is_number(v) and 0.0 < v <= 1.0):
            raise InputError(f"{flag} must be in (0, 1], got {v}", hint="0.5 keeps half")
    if scope not in ("uniform", "global"):
        raise InputError(f"scope must be 'uniform' or 'global' (--uniform / --global), got {scope!r}")
    for flag, v in (("--round-to", round_to), ("--min-channels", min_channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{flag} must be a whole number >= 1, got {v}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_against_groups(dg, round_to: int, min_channels: int) -> None:
    """A ``--round-to`` / ``--min-channels`` at or above every prunable group's size would leave
    every channel count as it is: refuse it rather than ignore it."""
    if not dg.groups:
        return
    largest = max(g.size for g in dg.groups)
    if round_to > largest:
        raise InputError(f"--round-to {round_to} is larger than every prunable group (the largest has "
                         f"{largest} channels): no channel count could be rounded to it",
                         hint="use 8 (FP16 tensor cores) or 32 (INT8), or leave --round-to out")
    if min_channels >= largest:
        raise InputError(f"--min-channels {min_channels} keeps every channel of every prunable group (the "
                         f"largest has {largest}): nothing could be pruned",
                         hint=f"give a --min-channels below {largest}")


def _say(progress: Optional[Callable[..., None]], what: str) -> None:
    if progress:
        progress(description=what)


def _score_and_select(scorer, crit_name: str, dg, ctx: PruneContext, selector: Selector):
    """``(scores, ratio, keeps)``: every group scored, the channels chosen. A criterion whose
    scores are exact only up to a bound (:class:`~edgekit.prune.criteria.Scores`) has a group
    rescored without a hint when the choice removes a channel above it."""
    scores: Dict[int, np.ndarray] = {}
    exact: Dict[int, float] = {}  # group id -> score up to which its scores are exact
    scorer.start(dg, ctx)
    if selector.scope == "uniform" and scorer.takes_remove_hint:
        # a criterion that orders channels greedily stops at the hint (with a margin), and a group
        # whose removed channels fall outside its exact part is rescored whole
        ctx.remove_hint = selector.remove_hint()
    _score(scorer, crit_name, dg.groups, ctx, scores, exact)
    rescored: set = set()
    while True:  # ends: each group is rescored (without a hint: exact everywhere) once at most
        ratio_found, keeps = selector.search(scores)
        redo = [g for g in dg.groups if g.id not in rescored and (~keeps[g.id]).any()
                and float(scores[g.id][~keeps[g.id]].max()) > exact.get(g.id, np.inf)]
        if not redo:
            return scores, ratio_found, keeps
        for g in redo:
            ctx.remove_hint.pop(g.id, None)
            rescored.add(g.id)
        _score(scorer, crit_name, redo, ctx, scores, exact)


def _score(scorer, crit_name: str, groups, ctx: PruneContext, scores: Dict[int, np.ndarray],
           exact: Dict[int, float]) -> None:
    """Score ``groups`` into ``scores`` (one float per channel) and ``exact`` (their exact bound)."""
    for g in groups:
        got = scorer.score(g, ctx)
        if isinstance(got, crit.Scores):
            exact[g.id] = got.exact_upto
            got = got.values
        s = np.asarray(got, dtype=np.float64).reshape(-1)
        if s.shape[0] != g.size:
            raise ValueError(f"criterion {crit_name} returned {s.shape[0]} scores for a group of {g.size}")
        scores[g.id] = s


def _group_rows(dg, keeps, scores, explain: bool) -> List[dict]:
    rows = []
    for g in dg.groups:
        k = keeps[g.id]
        d = {"id": g.id, "sources": g.sources, "channels_before": g.size, "channels_after": int(k.sum()),
             "score": float(np.mean(scores[g.id])) if g.size else 0.0}
        if g.approx:
            d["approximate"] = "; ".join(g.approx)
        if explain:
            d["ops"] = g.ops
        rows.append(d)
    return rows


def _skipped_rows(dg, explain: bool) -> List[dict]:
    rows = []
    for g in dg.skipped:
        d = {"id": g.id, "sources": g.sources, "channels": g.size, "reason": g.reason}
        if explain:
            d["ops"] = g.ops
        rows.append(d)
    return rows


def _add_notes(report: PruneReport, dg, keeps, scorer) -> None:
    """Notes on approximate groups, the criterion's own notes and warnings, and a warning when
    nothing was prunable."""
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


def _warn_if_unchanged(report: PruneReport, dg, keeps, ratio, round_to: int, min_channels: int) -> None:
    """Warn when prunable groups exist but the decision removes no channel (a ratio too small for
    the group sizes, or channel counts rounded back up by ``--round-to``); ``--ratio 0`` asks for
    that. Note the groups too small for ``--round-to`` (their counts are not rounded)."""
    small = sum(1 for g in dg.groups if g.size < round_to)
    if round_to > 1 and small and not report.adaptive_round:
        report.notes.append(f"--round-to {round_to}: {small} group(s) have fewer channels than that "
                            "and keep an unrounded count")
    if not dg.groups or ratio == 0 or any(not keeps[g.id].all() for g in dg.groups):
        return
    why = []
    if round_to > 1:
        why.append(f"--round-to {round_to} rounds every kept channel count back up to the group's size")
    if min_channels > 1:
        why.append(f"--min-channels {min_channels} keeps them")
    report.warnings.append("nothing was removed: every prunable group keeps all its channels"
                           + (f" ({'; '.join(why)})" if why else " (the ratio is too small for the group sizes)")
                           + "; the output is the model unpruned")


def _check_target(report: PruneReport, flops_target, params_target) -> None:
    """Warn when the result lands above its FLOPs / params target by more than :data:`TARGET_SLACK`."""
    target = flops_target if flops_target is not None else params_target
    what = "FLOPs" if flops_target is not None else "params"
    got = report.flops_ratio if flops_target is not None else report.params_ratio
    if got > target + TARGET_SLACK:
        report.warnings.append(
            f"{what} target {target:g} not reached: {got:.3f} (the prunable groups do not hold enough "
            f"{what}; see skipped for the groups refused and why)")


def _note_overshoot(report: PruneReport, flops_target, params_target, round_to: int) -> None:
    """Note a result well below its target: with rounding, channel counts move in steps of
    ``round_to`` and a small model cannot land near the target (every group steps together)."""
    target = flops_target if flops_target is not None else params_target
    got = report.flops_ratio if flops_target is not None else report.params_ratio
    if round_to > 1 and got < target - 0.1:
        what = "FLOPs" if flops_target is not None else "params"
        report.notes.append(f"{what} {got:.3f} is well below the target {target:g}: channel counts move in steps of "
                            f"{round_to} (--round-to); a smaller --round-to lands closer, at some speed on the device")


def analyze(model, protect: Iterable[str] = (), attention: Optional[str] = None,
            allow_norm_approx: bool = False):
    """The :class:`~edgekit.prune.groups.DependencyGraph` of ``model``: groups and refused groups."""
    return build(split_sequences(model), protect=protect, attention=attention or DEFAULT_ATTENTION,
                 allow_norm_approx=allow_norm_approx)
