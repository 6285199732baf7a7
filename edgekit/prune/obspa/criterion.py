"""The ``obspa``, ``obspa-nocomp``, ``obspa-analytic`` and ``obspa-seq`` criteria of the pruner.

:class:`Obspa` adapts the group scoring and compensation of :mod:`edgekit.prune.obspa.compensate`
to the pruner's Group / PruneContext interface (``edgekit.prune.criteria``); :class:`ObspaSeq`
adds the sequential refit of :mod:`edgekit.prune.obspa.seq`. Importing this module registers them
(the criteria registry imports it when a criterion is first looked up).
"""

from __future__ import annotations

import warnings
from typing import List, Tuple

import numpy as np

from edgekit.prune import criteria
from edgekit.prune.obspa.compensate import group_scores, group_update, write_const
from edgekit.prune.obspa.reliability import reliability_line
from edgekit.prune.obspa.seq import DEFAULT_RIDGE, MIN_REFIT_SAMPLES, REFIT_MACS_BUDGET, refit
from edgekit.prune.obspa.stats import DEFAULT_ALPHA, DEFAULT_DAMP, ObspaStats


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
        self.alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
        self.damp = DEFAULT_DAMP if damp is None else float(damp)
        self.compensate = compensate
        self.synthetic = synthetic  # None: synthetic.DEFAULT_SYNTHETIC; 0: analytic moments only
        self.stats = None  # ObspaStats of the model being pruned (made at the first score)
        self.sources: dict = {}  # group id -> where its statistics came from

    def start(self, dg, ctx) -> None:
        self.stats, self.sources = None, {}

    def finish(self, dg, keeps, ctx) -> None:
        """No BN and no data: estimate how far the result can be trusted (a report line)."""
        self._estimate_reliability(dg, keeps, ctx)

    def _estimate_reliability(self, dg, keeps, ctx) -> None:
        if self.stats is not None and not all(np.asarray(k).all() for k in keeps.values()):
            self.stats.reliability = reliability_line(dg, keeps, ctx, self.stats) or ""

    def _stats(self, ctx):
        st = self.stats
        if st is None:
            calib = ctx.calib
            if calib is not None and not isinstance(calib, np.ndarray):
                calib = np.asarray(calib)
            st = ObspaStats(ctx.model, alpha=self.alpha, damp=self.damp, calib=calib,
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
            dec = group_scores(st, uses, group.size, stop_after=hint)
            self.sources[group.id] = dec.source
            return criteria.Scores(dec.scores, dec.exact_upto)

    def update(self, group, keep, ctx) -> None:
        if not self.compensate:
            return
        st = self._stats(ctx)
        uses = _uses(group)
        if not uses:
            return

        def writable(node, slot):
            return ctx.own_tensor(node, slot) is not None

        for u in group_update(st, uses, keep, group.size, writable=writable):
            write_const(ctx, u.node, u.slot, u.role, u.array)


class ObspaSeq(Obspa):
    """obspa's scores and update, then the sequential reconstruction (:meth:`finish`)."""

    keep_raw = True  # the synthetic pass also gives the original graph's layer inputs / outputs
    raw_macs_budget = REFIT_MACS_BUDGET  # ... of the samples the refit runs on
    raw_least = MIN_REFIT_SAMPLES

    def __init__(self, ridge: float = None, **kw):
        super().__init__(**kw)
        self.ridge = DEFAULT_RIDGE if ridge is None else float(ridge)
        self.seq_notes: List[str] = []
        self.seq_warnings: List[str] = []

    def start(self, dg, ctx) -> None:
        super().start(dg, ctx)
        self.seq_notes, self.seq_warnings = [], []

    def finish(self, dg, keeps, ctx) -> None:
        """Called by the pruner after every group's update, before the graph is rewritten."""
        self._refit(dg, keeps, ctx)
        self._estimate_reliability(dg, keeps, ctx)

    def _refit(self, dg, keeps, ctx) -> None:
        if not self.compensate or all(np.asarray(k).all() for k in keeps.values()):
            return
        st = self.stats
        if st is None:
            return
        msg = None
        if ctx.calib is None and not (st.synthesized and (st.has_bn or not st.has_token_norm)):
            # behind LayerNorm / GroupNorm the synthetic inputs match no training statistics: good
            # enough for second moments (plain obspa uses them), not for refitting weights
            # (measured on the digits ViT: the refit lost 10 points against plain obspa). Convnets
            # with BN folded (no normalisation at all) gain from the refit (--folded rows of
            # bench/prune_datafree.py)
            msg = ("obspa-seq: no BatchNorm-matched synthetic statistics (LayerNorm/GroupNorm without BatchNorm, "
                   "or the input shape is not static): sequential reconstruction skipped, plain obspa update used")
        elif st.one_by_one:
            msg = ("obspa-seq: the graph fixes its batch size (a constant batch in a Reshape, Expand or Concat) and "
                   "runs one sample at a time: the refit's batched passes cannot run; plain obspa update used")
        else:
            saved = dict(ctx.updates), dict(ctx.new_biases)
            try:
                n = refit(dg, keeps, ctx, st, self.ridge)
                self.seq_notes.append(
                    f"obspa-seq: {n} layer(s) refitted to the original outputs, level by level, on "
                    f"{'calibration' if ctx.calib is not None else str(st.synthetic_used) + ' synthetic'} inputs")
            except Exception as exc:  # a graph the batched run cannot handle: keep plain obspa
                ctx.updates.clear()  # ... all of it: no layer keeps a refit made before the failure
                ctx.updates.update(saved[0])
                ctx.new_biases.clear()
                ctx.new_biases.update(saved[1])
                msg = f"obspa-seq: sequential reconstruction failed ({str(exc)[:200]}): plain obspa update used"
        if msg:
            self.seq_warnings.append(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)

    def report_lines(self):
        notes, warns = super().report_lines()
        return notes + self.seq_notes, warns + self.seq_warnings


criteria.register("obspa", lambda **kw: Obspa(**kw))
criteria.register("obspa-nocomp", lambda **kw: Obspa(compensate=False, **kw))
# analytic Gaussian moments only (no synthetic forward pass): the weaker, purely closed-form variant
criteria.register("obspa-analytic", lambda **kw: Obspa(synthetic=0, **kw))
criteria.register("obspa-seq", lambda **kw: ObspaSeq(**kw))
