"""Which channels go: per-group selection under segment floors, the uniform / global decision,
and the search for the ratio that meets a FLOPs / parameters target (estimated without rewriting
the graph)."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from edgekit.prune.apply import atom_keep, kept_positions, tensor_masks

# global scope: a group never loses more than this fraction (guards against layer collapse)
GLOBAL_MAX_GROUP_RATIO = 0.9


# Under adaptive rounding (edgekit prune's default) a group keeps at least this many count steps:
# a group smaller than MIN_STEPS x the multiple rounds to half of it (and so on), so that a default
# of 16 does not freeze every 16- or 32-channel group of a small model.
MIN_STEPS = 4


def multiple_for(n: int, round_to: int, adaptive: bool) -> int:
    """The channel multiple a group of ``n`` rounds to: ``round_to``, halved while the group
    holds fewer than :data:`MIN_STEPS` of it when ``adaptive``."""
    m = round_to
    while adaptive and m > 1 and n < MIN_STEPS * m:
        m //= 2
    return m


def round_keep(n: int, keep: int, round_to: int, floor: int, adaptive: bool = False) -> int:
    keep = max(keep, floor, 1 if n else 0)
    round_to = multiple_for(n, round_to, adaptive)
    if round_to > 1 and n >= round_to:
        keep = int(math.ceil(keep / round_to) * round_to)
    return min(keep, n)


def select(scores: np.ndarray, n_keep: int, segments: Sequence[np.ndarray], floor: int) -> np.ndarray:
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


def decide(groups, scores, ratio, scope, round_to, min_channels, normalize: bool = True, adaptive: bool = False):
    keeps: Dict[int, np.ndarray] = {}
    if ratio <= 0:
        return {g.id: np.ones(g.size, dtype=bool) for g in groups}
    if scope == "uniform":
        for g in groups:
            n_keep = round_keep(g.size, g.size - int(math.floor(g.size * ratio + 1e-9)), round_to, min_channels,
                                adaptive)
            keeps[g.id] = select(scores[g.id], n_keep, g.segments, min_channels)
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
        n_keep = round_keep(g.size, g.size - n_drop, round_to, floor, adaptive)
        keeps[g.id] = select(s, n_keep, g.segments, min_channels)
    return keeps


class Estimator:
    """FLOPs/params of a candidate decision without rewriting the graph."""

    def __init__(self, dg, costs):
        self.dg = dg
        self.costs = costs

    def frac(self, name, ak):
        """The kept share of activation ``name``'s channels (1.0 when it carries none)."""
        a = self.dg.ann.get(name)
        if a is None:
            return 1.0
        k = kept_positions(a[1], ak)
        return float(k.mean()) if k.size else 1.0

    def flops(self, keeps) -> float:
        ak = atom_keep(self.dg, keeps)
        tot = 0.0
        for c in self.costs:
            f = self.frac(c.out, ak) if c.out else 1.0
            if c.weighted and not c.depthwise and c.data_in:
                f *= self.frac(c.data_in, ak)
            tot += c.flops * f
        return tot

    def params(self, keeps, base) -> float:
        removed = 0.0
        for name, axes in tensor_masks(self.dg, keeps).items():
            arr = self.dg.consts[name]
            frac = 1.0
            for k in axes.values():
                frac *= k.mean()
            if arr.dtype != np.int64:
                removed += arr.size * (1 - frac)
        return base - removed


class Selector:
    """Keep masks for a set of scores under one prune's settings: at the given ``ratio``, or at
    the ratio whose estimated FLOPs / params meet ``flops_target`` / ``params_target``."""

    def __init__(self, groups, estimator: Estimator, flops_before: float, params_before: float, *, scope: str,
                 round_to: int, min_channels: int, normalize: bool, ratio: Optional[float] = None,
                 flops_target: Optional[float] = None, params_target: Optional[float] = None,
                 adaptive_round: bool = False,
                 keep_counts: Union[None, Dict[int, int], Callable[..., Dict[int, int]]] = None):
        self.groups = groups
        self.keep_counts = keep_counts
        self.adaptive_round = adaptive_round
        self.est = estimator
        self.flops_before, self.params_before = flops_before, params_before
        self.scope, self.round_to, self.min_channels, self.normalize = scope, round_to, min_channels, normalize
        self.ratio, self.flops_target, self.params_target = ratio, flops_target, params_target

    def decide(self, scores: Dict[int, np.ndarray], ratio: float) -> Dict[int, np.ndarray]:
        return decide(self.groups, scores, ratio, self.scope, self.round_to, self.min_channels, self.normalize,
                      self.adaptive_round)

    def search(self, scores: Dict[int, np.ndarray]):
        """``(ratio, keeps)``: the ratio meeting the FLOPs / params target (or the given one) and
        its decision."""
        if self.keep_counts is not None:
            return self.by_counts(scores)
        r = self.ratio
        if r is None:
            target = self.flops_target if self.flops_target is not None else self.params_target
            lo, hi = 0.0, 0.99
            best = 0.0
            for _ in range(22):
                mid = (lo + hi) / 2
                keeps = self.decide(scores, mid)
                val = self.est.flops(keeps) / max(self.flops_before, 1) if self.flops_target is not None else \
                    self.est.params(keeps, self.params_before) / max(self.params_before, 1)
                if val > target:
                    lo = mid
                else:
                    hi = mid
                    best = mid
            r = hi if best == 0.0 else best
        return r, self.decide(scores, r)

    def by_counts(self, scores: Dict[int, np.ndarray]):
        """``(ratio, keeps)`` for explicit per-group counts: ``keep_counts`` is ``{group id: channels
        kept}`` (a group left out keeps all) or a callable ``(groups, scores) -> counts`` given the
        scores normalised as the global scope compares them (a latency-aware decision in
        :mod:`edgekit.optimize.latency_table`). Each group keeps its best channels by its scores."""
        norm = {}
        for g in self.groups:
            s = np.asarray(scores[g.id], dtype=np.float64)
            m = s.mean() if self.normalize and s.size and s.mean() > 0 else 1.0
            norm[g.id] = s / m
        counts = self.keep_counts(self.groups, norm) if callable(self.keep_counts) else self.keep_counts
        keeps = {g.id: select(norm[g.id], min(g.size, max(1, int(counts.get(g.id, g.size)))), g.segments,
                              self.min_channels) for g in self.groups}
        total = sum(g.size for g in self.groups)
        removed = sum(int((~k).sum()) for k in keeps.values())
        return removed / max(total, 1), keeps

    def remove_hint(self) -> Dict[int, int]:
        """``{group id: channels it loses at most}`` in uniform scope, where the ratio fixes how
        many channels each group loses whatever the scores (FLOPs barely depend on which): the
        count at a slightly wider ratio, as a margin."""
        r0, _ = self.search({g.id: np.zeros(g.size) for g in self.groups})
        wide = self.decide({g.id: np.zeros(g.size) for g in self.groups}, min(r0 + 0.02, 0.99))
        return {g.id: int((~wide[g.id]).sum()) for g in self.groups}
