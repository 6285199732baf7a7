"""Registers the ``obspa`` criterion (data-free OBS scoring + weight compensation) with the pruner.

The maths lives in :mod:`edgekit.prune.obspa`; this module adapts it to the pruner's Group /
PruneContext interface (``edgekit.prune.criteria``). Imported lazily by the criteria registry.
"""

from __future__ import annotations

import warnings
from typing import List, Tuple

import numpy as np

from edgekit.prune import criteria


def _uses(group) -> List[Tuple[object, str, list]]:
    """``(consumer node, its input tensor, columns of every group channel)`` for the group's
    channel-mixing consumers, from the members' full index maps (a Flatten into a Linear maps one
    channel to H*W columns)."""
    out = []
    for m in group.members:
        if m.role != "in" or m.node is None or m.node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        cols: List[list] = [[] for _ in range(group.size)]
        for p, j in enumerate(np.asarray(m.index).tolist()):
            if j >= 0:
                cols[j].append(p)
        out.append((m.node, m.node.input[0], cols))
    return out


class Obspa(criteria.Criterion):
    """Score = expected relative output error of the consumers after OBS compensation; update =
    the compensation itself (linear reconstruction into kept columns + mean into the bias)."""

    # Scores are expected output errors relative to each consumer output's own spread: comparable
    # across groups, so a global threshold should use them as they are (no per-group
    # normalisation).
    scores_comparable = True
    # In uniform scope the pruner puts ``{group id: channels to remove at most}`` in
    # ctx.remove_hint before scoring; this criterion then answers Scores(exact_upto=...): the score
    # up to which its scores are exact (the pruner rescores a group whose removed channels score
    # above that).
    takes_remove_hint = True
    needs_model = True  # the statistics come from running the model
    # whether the synthetic pass keeps layer inputs/outputs as arrays (obspa-seq's targets)
    keep_raw = False
    # ... of the first samples only: as many as this many multiply-accumulates allow (None: all)
    raw_macs_budget = None
    raw_least = 1

    def __init__(self, alpha: float = None, damp: float = None, compensate: bool = True,
                 synthetic: int = None):
        from edgekit.prune import obspa

        self.alpha = obspa.DEFAULT_ALPHA if alpha is None else float(alpha)
        self.damp = obspa.DEFAULT_DAMP if damp is None else float(damp)
        self.compensate = compensate
        self.synthetic = synthetic  # None: obspa.DEFAULT_SYNTHETIC; 0: analytic moments only
        self.stats = None  # ObspaStats of the model being pruned (made at the first score)
        self.sources: dict = {}  # group id -> where its statistics came from

    def start(self, dg, ctx) -> None:
        self.stats, self.sources = None, {}

    def _stats(self, ctx):
        from edgekit.prune import obspa

        st = self.stats
        if st is None:
            calib = ctx.calib
            if calib is not None and not isinstance(calib, np.ndarray):
                calib = np.asarray(calib)
            st = obspa.ObspaStats(ctx.model, alpha=self.alpha, damp=self.damp, calib=calib,
                                  synthetic=self.synthetic, keep_raw=self.keep_raw,
                                  raw_macs_budget=self.raw_macs_budget, raw_least=self.raw_least)
            self.stats = st
            _, warns = st.report_lines()
            for w in warns:  # also outside the report: a weak-statistics run must never be silent
                warnings.warn(w, UserWarning, stacklevel=3)
        return st

    def report_lines(self):
        if self.stats is None:
            return [], []
        return self.stats.report_lines(list(self.sources.values()))

    def score(self, group, ctx):
        from edgekit.prune import obspa

        st = self._stats(ctx)
        uses = _uses(group)
        if not uses:
            # no channel-mixing consumer (the group ends in a graph output or a norm): magnitude
            dec_src, scores = "none", criteria.Magnitude(p=2)(group, ctx)
            self.sources[group.id] = dec_src
            return scores
        else:
            # the pruner may say how many channels at most go (a uniform ratio): the greedy stops there
            hint = ctx.remove_hint.get(group.id)
            dec = obspa.group_scores(st, uses, group.size, stop_after=hint)
            self.sources[group.id] = dec.source
            return criteria.Scores(dec.scores, dec.exact_upto)

    def update(self, group, keep, ctx) -> None:
        from edgekit.prune import obspa

        if not self.compensate:
            return
        st = self._stats(ctx)
        uses = _uses(group)
        if not uses:
            return
        writable = lambda node, slot: ctx.own_tensor(node, slot) is not None  # noqa: E731
        for u in obspa.group_update(st, uses, keep, group.size, writable=writable):
            write_const(ctx, u.node, u.slot, u.role, u.array)


def write_const(ctx, node, slot, role: str, array: np.ndarray) -> bool:
    """Store a criterion's new value for ``node.input[slot]`` through the pruner's context: in
    place when the stored tensor is this node's alone (:meth:`PruneContext.own_tensor`), else, for
    a Conv / Gemm bias, as a new bias of the node's own (a bias behind an Identity, shared with a
    LayerNorm by a de-duplicating exporter, or broadcast from one value). Returns False when the
    value has nowhere to go (a weight shared with other layers; a bias of a MatMul with no Add)."""
    if role == "bias" and slot == 2 and node.name in ctx.new_biases:
        ctx.add_bias(node, np.reshape(array, -1))  # it has a bias of its own already: that one
        return True
    target = ctx.own_tensor(node, slot) if slot is not None else None
    if target is not None:
        old = ctx.tensor(target)
        if np.size(old) == np.size(array):
            ctx.set_tensor(target, np.reshape(array, np.shape(old)))
            return True
    if role == "bias" and slot == 2 and node.op_type in ("Conv", "Gemm"):
        ctx.add_bias(node, np.reshape(array, -1))
        return True
    return False


criteria.register("obspa", lambda **kw: Obspa(**kw))
criteria.register("obspa-nocomp", lambda **kw: Obspa(compensate=False, **kw))
# analytic Gaussian moments only (no synthetic forward pass): the weaker, purely closed-form variant
criteria.register("obspa-analytic", lambda **kw: Obspa(synthetic=0, **kw))


def read_const(ctx, node, slot: int, n: int) -> np.ndarray:
    """The ``n`` values ``node`` currently reads at ``slot`` as :func:`write_const` keeps them (a
    bias of its own added earlier, else its own stored tensor), float32 and flat; zeros when it
    has none of ``n`` values (no bias, a shared or a broadcast one)."""
    if slot == 2 and node.name in ctx.new_biases:
        return np.array(ctx.new_biases[node.name], dtype=np.float32, copy=True).reshape(-1)
    target = ctx.own_tensor(node, slot)
    if target is not None and np.size(ctx.tensor(target)) == n:
        return np.array(ctx.tensor(target), dtype=np.float32, copy=True).reshape(-1)
    return np.zeros(n, dtype=np.float32)
