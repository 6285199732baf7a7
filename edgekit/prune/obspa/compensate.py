"""Group-level scoring and compensation: obspa's two halves for one coupled channel group.

Independent of the pruner's Group class, a group is seen as a list of ``uses``: (consumer node,
its input tensor, the consumer column(s) of every group channel).

* **criterion** (:func:`group_scores`) — a channel's score is the expected error it adds to the
  outputs of the layers that consume the group, *after* the best compensation (Optimal Brain
  Surgeon with a Hessian proxy ``H = E[x x^T]`` of the consumer's input), measured relative to each
  consumer output's own spread so that scores of different layers compare for a global threshold;
* **update** (:func:`group_update`) — before the channels are cut, each consumer's kept input
  columns absorb the removed ones' linear reconstruction (``x_S ~ R x_K + c0``) and its bias
  absorbs their expected value.

:func:`write_const` / :func:`read_const` store and read such new values through the pruner's
context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgekit.prune.obspa import obs as om
from edgekit.prune.obspa.layers import Consumer, Moments
from edgekit.prune.obspa.stats import ObspaStats


@dataclass
class GroupDecision:
    scores: np.ndarray
    source: str  # where the statistics came from, for the report
    fallback: bool = False  # True: no usable statistics, scores are weight magnitudes
    notes: List[str] = field(default_factory=list)
    # scores up to this value are the full greedy's; above it, estimates (``stop_after``)
    exact_upto: float = float("inf")


def _sources(stats: ObspaStats, uses) -> Tuple[List, List[str]]:
    blocks, srcs = [], []
    for node, tensor, cols in uses:
        cons = stats.consumer(node, tensor)
        if cons is None:
            continue
        mo = stats.moments(tensor)
        if mo is None or len(mo.mean) != cons.wmat.shape[1]:
            blocks.append((cons, None, cols))
            srcs.append("none")
            continue
        blocks.append((cons, mo, cols))
        srcs.append(mo.source)
    return blocks, srcs


def stats_precision(stats: ObspaStats, mo: Moments) -> np.ndarray:
    """``inv(damped cov)`` of a consumer input, computed once per run (scoring and update share it)."""
    cache = stats.__dict__.setdefault("_precision", {})
    hit = cache.get(id(mo.cov))
    if hit is None or hit[0] is not mo.cov:
        hit = (mo.cov, om.precision(mo.cov, stats.damp, mo.lowrank))
        cache[id(mo.cov)] = hit
    return hit[1]


def group_scores(stats: ObspaStats, uses: Sequence[Tuple[object, str, Sequence[int]]], n: int,
                 stop_after: Optional[int] = None) -> GroupDecision:
    """OBS scores (higher = keep) for the ``n`` channels of a group read by ``uses``.
    ``stop_after``: see :func:`obs.obs_order` (the decision's ``exact_upto`` says how far the
    scores are exact)."""
    blocks, srcs = _sources(stats, uses)
    obs_blocks = []
    for cons, mo, cols in blocks:
        if mo is None:
            continue
        cov = mo.cov
        obs_blocks.append((om.normalised_gram(cons.wmat, cov, cons.n_out), cov, cols,
                           stats_precision(stats, mo)))
    if obs_blocks:
        exact_upto = float("inf")
        if stop_after is None:
            order, cum = om.obs_order(obs_blocks, stats.damp)
        else:
            order, cum, exact = om.obs_order(obs_blocks, stats.damp, stop_after=stop_after)
            if exact < n:
                exact_upto = float(cum[exact - 1]) if exact > 0 else -float("inf")
        src = "+".join(sorted(set(s for s in srcs if s != "none")))
        if any(s == "none" for s in srcs):
            src += " (some consumers without statistics)"
        return GroupDecision(om.order_to_scores(order, cum), src, exact_upto=exact_upto)
    # Fallback: no statistics anywhere, or no channel-mixing consumer: l2 of consumer columns.
    sc = np.zeros(n)
    for cons, _, cols in blocks:
        w = cons.wmat / max(np.linalg.norm(cons.wmat), 1e-30)
        per_col = np.square(w).sum(axis=0)
        for j, cj in enumerate(om._channel_columns(cols, w.shape[1])):
            sc[j] += per_col[cj].sum()
    return GroupDecision(sc, "none", fallback=True)


@dataclass
class ConstUpdate:
    """A new value for a constant one node reads (see :func:`group_update`)."""

    node: object  # the reader
    slot: Optional[int]  # its input slot; None: a MatMul's bias with no Add to hold it
    role: str  # weight | bias
    array: np.ndarray  # full size (dropped columns zeroed), float32, in the stored layout


def group_update(stats: ObspaStats, uses: Sequence[Tuple[object, str, Sequence[int]]],
                 keep: Sequence[int], n: int, writable=None) -> List[ConstUpdate]:
    """New consumer weights and biases for the kept channels.

    A consumer without a bias gets one (slot 2 of a Conv / Gemm that had no input 2). Consumers
    without statistics, and those whose weight ``writable(node, 1)`` says cannot be written
    (shared with another layer), are left unchanged. Later groups see these values
    (:meth:`ObspaStats.node_const`).
    """
    keep_set = set(int(k) for k in keep)
    drop = [j for j in range(n) if j not in keep_set]
    out: List[ConstUpdate] = []
    if not drop:
        return out
    blocks, _ = _sources(stats, uses)
    for cons, mo, cols in blocks:
        if mo is None or (writable is not None and not writable(cons.node, 1)):
            continue
        n_in = cons.wmat.shape[1]
        chan_cols = om._channel_columns(cols, n_in)
        dropped = [chan_cols[j] for j in drop]
        dropped = np.concatenate(dropped) if dropped else np.zeros(0, dtype=np.int64)
        if len(dropped) == 0:
            continue
        keep_cols = np.setdiff1d(np.arange(n_in), dropped)
        w_keep, db_rows = om.compensate(cons.wmat, mo.mean, mo.cov, keep_cols, stats.damp,
                                        prec=stats_precision(stats, mo))
        full = np.zeros_like(cons.wmat)
        full[:, keep_cols] = w_keep
        k = cons.wmat.shape[0] // cons.n_out
        dbias = db_rows.reshape(cons.n_out, k).sum(axis=1)
        new_w = _from_matrix(full, cons, stats.node_const(cons.node, 1))
        out.append(ConstUpdate(cons.node, 1, "weight", new_w.astype(np.float32)))
        stats.node_consts[(id(cons.node), 1)] = new_w
        bias = cons.bias if cons.bias is not None else np.zeros(cons.n_out)
        stored = (bias + dbias) / cons.bias_scale
        if cons.bias_at is None:
            out.append(ConstUpdate(cons.node, None, "bias", stored.astype(np.float32)))
            continue
        bnode, bslot = cons.bias_at
        out.append(ConstUpdate(bnode, bslot, "bias", stored.astype(np.float32)))
        stats.node_consts[(id(bnode), bslot)] = stored
    return out


def _from_matrix(full: np.ndarray, cons: Consumer, orig: np.ndarray) -> np.ndarray:
    if cons.kind == "matmul":
        return full.T.reshape(orig.shape)
    if cons.kind == "gemm":
        return full.reshape(orig.shape)
    o, c = orig.shape[:2]
    k = full.shape[0] // o
    return np.moveaxis(full.reshape(o, k, c), 2, 1).reshape(orig.shape)


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
