"""Optimal-Brain-Surgeon channel removal for a consuming layer, as plain NumPy.

Setting: a consumer computes ``y = W x + b`` (a conv is the same per kernel position; its
kernel positions become extra rows of ``W``). The input ``x`` has mean ``m`` and centred
covariance ``C`` (from BatchNorm statistics, see :mod:`edgekit.prune.moments`, or from data).
Removing the input channels ``S`` and keeping ``K``:

* the fluctuating part is best re-expressed through the kept channels by least squares,
  ``x_S - m_S ~ R (x_K - m_K)`` with ``R = C_SK C_KK^-1`` (the closed-form linear reconstruction of
  a removed channel from kept ones), so ``W_K <- W_K + W_S R``;
* the constant part goes into the bias: ``b <- b + W_S m_S - (W_S R) m_K``.

The expected squared output error left is ``tr(W_S (C/C_KK) W_S^T)`` (the Schur complement): that is
the OBS saliency of the set, and the greedy order below removes, one channel at a time, the one
whose removal (with the compensation above) adds the least error. Sequential OBS steps are exact
(each is the least-squares optimum given the previous ones), so the cumulative error after removing
``S`` in that order equals the joint least-squares error of ``S``.

The greedy works on the Gram matrix ``G = W^T W`` (``n x n``) and the inverse ``P = C^-1``: each step
is ``O(n^2)``, so a 512-channel layer is ordered in well under a second.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np


def damp_cov(cov: np.ndarray, damp: float = 1e-2) -> np.ndarray:
    """``C + damp * mean(diag C) * I``: keeps the inverse finite for dead or duplicate channels."""
    cov = np.asarray(cov, dtype=np.float64)
    d = float(np.mean(np.diag(cov))) if len(cov) else 0.0
    lam = damp * (d if d > 0 else 1.0)
    return cov + lam * np.eye(len(cov))


def consumer_matrix(weight: np.ndarray, kind: str = "conv", group: int = 1) -> np.ndarray:
    """Rearrange a consumer weight into ``(rows, n_in)`` where rows = output x kernel positions.

    ``kind``: ``"conv"`` for ONNX ``[O, C, *k]`` (``group`` must be 1), ``"gemm"`` for ``[O, C]``
    (Gemm with transB=1, a torch Linear), ``"matmul"`` for ``[C, O]`` (``x @ W``).
    """
    w = np.asarray(weight, dtype=np.float64)
    if kind == "matmul":
        return w.T.copy()
    if kind == "gemm":
        return w.copy()
    if group != 1:
        raise ValueError("grouped convolutions mix no channels: nothing to compensate")
    o, c = w.shape[:2]
    return np.moveaxis(w.reshape(o, c, -1), 1, 2).reshape(-1, c)


def row_normaliser(wmat: np.ndarray, cov: np.ndarray, n_out: int, mean=None) -> np.ndarray:
    """Per-row scale so that each *output channel* of the consumer has unit signal variance.

    ``wmat`` rows are grouped output-major (``n_out`` outputs x k positions). The next BatchNorm
    (or the softmax of a classifier) sees errors relative to the output's own spread, so errors
    are measured relative to it; this makes scores of different layers comparable for a global
    threshold.
    """
    k = wmat.shape[0] // n_out
    per_row = ((wmat @ cov) * wmat).sum(axis=1)  # diag(W C W^T) through BLAS
    var_out = per_row.reshape(n_out, k).sum(axis=1)
    var_out = np.maximum(var_out, 1e-12 * max(float(var_out.max(initial=0.0)), 1e-30))
    return np.repeat(1.0 / np.sqrt(var_out * n_out), k)


def _channel_columns(cols, n_cols: int):
    """Normalise a channel->column mapping: an int per channel (-1 = not read by this consumer) or
    a sequence of column indices per channel (Flatten into a Linear: one channel, H*W columns)."""
    if cols is None:
        return [np.array([j]) for j in range(n_cols)]
    out = []
    for c in cols:
        a = np.atleast_1d(np.asarray(c, dtype=np.int64))
        out.append(a[a >= 0])
    return out


def obs_order(blocks: Sequence[Tuple], damp: float = 1e-2) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy OBS removal order of ``n`` group channels shared by several consumers.

    ``blocks`` is a list of ``(G, C)`` or ``(G, C, cols)``: the Gram matrix ``W^T W`` of a
    consumer's (normalised) weight, the covariance of *its* input (consumers of one coupled group
    may read different tensors, e.g. before and after a depthwise conv), and ``cols[j]``, the
    consumer input column(s) of group channel ``j`` (identity when left out; -1 or empty when this
    consumer does not read the channel; a concat consumer reads the group at an offset, and its
    other columns stay and absorb compensation too). A channel with several columns is removed as
    a block (block OBS). Returns ``(order, cum_err)``: group channels in removal order and the
    cumulative expected error after each removal (non-decreasing).
    """
    if not blocks:
        raise ValueError("no consumer to score")
    gs, ps, colss, single = [], [], [], []
    merged = {}
    for b in blocks:
        g, c = b[0], b[1]
        cols = _channel_columns(b[2] if len(b) > 2 else None, g.shape[0])
        # Consumers reading the same input (same covariance object, same columns) share P, and the
        # saliency and the update are linear in G: one block with the summed Gram matrix is exact.
        key = (id(c), tuple(len(x) for x in cols),
               np.concatenate(cols).tobytes() if cols else b"")
        if key in merged:
            gs[merged[key]] += g
            continue
        merged[key] = len(gs)
        gs.append(np.array(g, dtype=np.float64))
        ps.append(np.linalg.inv(damp_cov(c, damp)))
        colss.append(cols)
        single.append(all(len(x) == 1 for x in cols))
    n = len(colss[0])
    if any(len(c) != n for c in colss):
        raise ValueError("every consumer must map all group channels (use -1 for unread ones)")
    if all(len(x) <= 1 for cols in colss for x in cols):
        return _obs_order_columns(gs, ps, colss, n)
    alive = np.ones(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    cum = np.empty(n)
    total = 0.0
    for step in range(n):
        sal = np.zeros(n)
        for g, p, cols, one in zip(gs, ps, colss, single):
            if one:
                idx = np.array([x[0] for x in cols])
                sal += np.diag(g)[idx] / np.maximum(np.diag(p)[idx], 1e-300)
            else:
                for j in np.nonzero(alive)[0]:
                    b = cols[j]
                    if len(b):
                        sal[j] += float(np.trace(np.linalg.solve(p[np.ix_(b, b)], g[np.ix_(b, b)])))
        sal[~alive] = np.inf
        j = int(np.argmin(sal))
        total += max(float(sal[j]), 0.0)
        order[step] = j
        cum[step] = total
        alive[j] = False
        for i, (g, p, cols) in enumerate(zip(gs, ps, colss)):
            b = cols[j]
            if len(b) == 0:
                continue
            # W <- W (I - E_B Q) with Q = P_BB^-1 P_B: zeroes the columns B and compensates the
            # others; P <- P - P_:B P_BB^-1 P_B: is the inverse restricted to the kept columns.
            q = np.linalg.solve(p[np.ix_(b, b)], p[b, :])
            gb = g[:, b]
            g = g - gb @ q - q.T @ gb.T + q.T @ g[np.ix_(b, b)] @ q
            p = p - p[:, b] @ q
            p[b, :] = 0.0
            p[:, b] = 0.0
            p[b, b] = 1.0  # placeholder for removed columns (their G entries are 0)
            g[b, :] = 0.0
            g[:, b] = 0.0
            gs[i], ps[i] = g, p
    return order, cum


def _symmetric_updaters():
    """In-place symmetric rank-1/rank-2 updates of the lower triangle of a Fortran-ordered matrix
    (BLAS ``dsyr`` / ``dsyr2`` from SciPy when it is already loaded, which halves the memory
    traffic of the greedy; plain NumPy on the full matrix otherwise: importing scipy.linalg costs
    ~0.4 s, more than the greedy itself on a small model)."""
    import sys

    try:
        if "scipy.linalg" not in sys.modules:
            raise ImportError("scipy.linalg not loaded")
        from scipy.linalg import blas

        def syr(alpha, x, a):
            return blas.dsyr(alpha, x, a=a, lower=1, overwrite_a=1)

        def syr2(alpha, x, y, a):
            return blas.dsyr2(alpha, x, y, a=a, lower=1, overwrite_a=1)

        return syr, syr2
    except Exception:
        def syr(alpha, x, a):
            a += alpha * np.outer(x, x)
            return a

        def syr2(alpha, x, y, a):
            a += alpha * (np.outer(x, y) + np.outer(y, x))
            return a

        return syr, syr2


# Groups of CHUNK_MIN channels or more are ordered a block at a time: ``(live channels) //
# CHUNK_DIV`` channels per greedy step (one at a time once fewer than 2 * CHUNK_DIV are live).
# Narrower groups get the exact one-at-a-time greedy.
CHUNK_DIV = 16
CHUNK_MIN = 256


def _column(a: np.ndarray, c: int) -> np.ndarray:
    """Column ``c`` of a symmetric matrix of which only the lower triangle is current."""
    col = np.empty(len(a))
    col[c:] = a[c:, c]
    col[:c] = a[c, :c]
    return col


def _obs_order_columns(gs, ps, colss, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`obs_order` when every group channel is at most one column of each consumer: the
    same greedy with symmetric rank-1/2 in-place updates (``O(n_in^2)`` per step, lower triangle
    only), and the matrices shrunk to the live columns whenever half of them are gone (removed
    columns are exactly zero in ``G`` and decoupled in ``P``, so dropping them changes nothing)."""
    syr, syr2 = _symmetric_updaters()
    idxs = [np.array([x[0] if len(x) else -1 for x in cols], dtype=np.int64) for cols in colss]
    gs = [np.asfortranarray(g, dtype=np.float64) for g in gs]
    ps = [np.asfortranarray(p, dtype=np.float64) for p in ps]
    live = [np.ones(len(g), dtype=bool) for g in gs]
    n_live = [len(g) for g in gs]
    haves = [idx >= 0 for idx in idxs]
    iis = [idx[h] for idx, h in zip(idxs, haves)]
    alive = np.ones(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    cum = np.empty(n)
    total = 0.0
    step = 0
    while step < n:
        sal = np.zeros(n)
        for g, p, have, ii in zip(gs, ps, haves, iis):
            sal[have] += g.diagonal()[ii] / np.maximum(p.diagonal()[ii], 1e-300)
        sal[order[:step]] = np.inf
        chunk = max(1, (n - step) // CHUNK_DIV) if n >= CHUNK_MIN else 1
        if chunk == 1:
            js = [int(np.argmin(sal))]
            total += max(float(sal[js[0]]), 0.0)
            cum[step] = total
        else:
            js = [int(j) for j in np.argpartition(sal, chunk - 1)[:chunk]]
            js.sort(key=lambda j: sal[j])
            inc = 0.0
        order[step:step + len(js)] = js
        alive[js] = False
        for b in range(len(gs)):
            g, p, idx = gs[b], ps[b], idxs[b]
            cs = [int(idx[j]) for j in js if idx[j] >= 0]
            if not cs:
                continue
            if chunk == 1:
                c = cs[0]
                # Same algebra as the block case with B = {c}: q = P_c / P_cc,
                # G <- G - u q^T - q u^T with u = G_c - G_cc q / 2, P <- P - P_c P_c^T / P_cc.
                pc = _column(p, c)
                q = pc / pc[c]
                u = _column(g, c) - 0.5 * g[c, c] * q
                g = syr2(-1.0, u, q, g)
                p = syr(-1.0 / pc[c], pc, p)
            else:
                # Several channels at once (wide groups): the block update of obs_order, with BLAS-3
                # products instead of one rank-1 pass over the matrices per channel. Block steps
                # come first (chunks shrink as channels go), so both matrices are still full here.
                pbb = p[np.ix_(cs, cs)]
                gbb = g[np.ix_(cs, cs)]
                q = np.linalg.solve(pbb, p[cs, :])
                inc += max(float(np.trace(np.linalg.solve(pbb, gbb))), 0.0)
                gq = g[:, cs] @ q
                g -= gq
                g -= gq.T
                g += q.T @ (gbb @ q)
                p -= p[:, cs] @ q
            g[cs, :] = 0.0
            g[:, cs] = 0.0
            p[cs, :] = 0.0
            p[:, cs] = 0.0
            p[cs, cs] = 1.0
            live[b][cs] = False
            n_live[b] -= len(cs)
            if 2 * n_live[b] <= len(g) and len(g) > 16:
                keep = np.flatnonzero(live[b])
                newpos = np.full(len(g), -1, dtype=np.int64)
                newpos[keep] = np.arange(len(keep))
                g = np.asfortranarray(g[np.ix_(keep, keep)])
                p = np.asfortranarray(p[np.ix_(keep, keep)])
                idxs[b] = np.where(idx >= 0, newpos[np.maximum(idx, 0)], -1)
                live[b] = np.ones(len(keep), dtype=bool)
                n_live[b] = len(keep)
                # removed channels keep a placeholder column (-1 after remapping): never read
                haves[b] = idxs[b] >= 0
                iis[b] = idxs[b][haves[b]]
            gs[b], ps[b] = g, p
        if chunk > 1:
            # the joint error of the block, shared out in the order of the single saliencies
            part = np.maximum(sal[js], 0.0)
            frac = np.cumsum(part) / part.sum() if part.sum() > 0 else np.arange(1, len(js) + 1) / len(js)
            cum[step:step + len(js)] = total + inc * frac
            total += inc
        step += len(js)
    return order, cum


def order_to_scores(order: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Scores per channel (higher = more important): the cumulative error at its removal."""
    scores = np.empty(len(order))
    scores[order] = cum
    return scores


def reconstruction(mean: np.ndarray, cov: np.ndarray, keep: Sequence[int], damp: float = 1e-2
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form linear reconstruction of removed channels from kept ones.

    Returns ``(drop, R, c0)`` such that ``x[drop] ~ R @ x[keep] + c0``, the least-squares
    estimate under the Gaussian model (``R = C_SK C_KK^-1``, ``c0 = m_S - R m_K``). The same
    map compensates quantisation error: treat the error of a channel as a removed part.
    """
    n = len(mean)
    keep = np.asarray(sorted(set(int(k) for k in keep)), dtype=np.int64)
    drop = np.setdiff1d(np.arange(n), keep)
    cd = damp_cov(cov, damp)
    if len(drop) == 0 or len(keep) == 0:
        r = np.zeros((len(drop), len(keep)))
    else:
        r = np.linalg.solve(cd[np.ix_(keep, keep)], cd[np.ix_(keep, drop)]).T
    c0 = mean[drop] - r @ mean[keep]
    return drop, r, c0


def compensate(wmat: np.ndarray, mean: np.ndarray, cov: np.ndarray, keep: Sequence[int],
               damp: float = 1e-2, redistribute: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Compensated consumer weights for the kept input channels and the per-row bias change.

    ``wmat`` is ``(rows, n)`` from :func:`consumer_matrix`. Returns ``(w_keep, dbias_rows)``:
    ``w_keep`` is ``(rows, len(keep))``; ``dbias_rows`` (``rows``) must be summed over the kernel
    positions of each output to give the bias change. ``redistribute=False`` only folds the means
    (the diagonal-covariance special case).
    """
    wmat = np.asarray(wmat, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    keep_a = np.asarray(sorted(set(int(k) for k in keep)), dtype=np.int64)
    drop, r, c0 = reconstruction(mean, cov, keep_a, damp)
    if not redistribute:
        r = np.zeros_like(r)
        c0 = mean[drop].copy()
    w_s = wmat[:, drop]
    w_keep = wmat[:, keep_a] + w_s @ r
    dbias = w_s @ c0
    return w_keep, dbias


def expected_output_error(wmat: np.ndarray, bias_delta: np.ndarray, w_new_full: np.ndarray,
                          mean: np.ndarray, cov: np.ndarray) -> float:
    """``E||(W - W') x - db||^2`` for ``x ~ (mean, cov)``: used by the tests and the bench."""
    d = np.asarray(wmat, dtype=np.float64) - np.asarray(w_new_full, dtype=np.float64)
    mu_err = d @ mean - bias_delta
    return float(np.einsum("ri,ij,rj->", d, cov, d) + mu_err @ mu_err)


def greedy_scores(wmats: List[np.ndarray], covs: List[np.ndarray], damp: float = 1e-2) -> np.ndarray:
    """Convenience: OBS scores for consumers ``wmats[i]`` (rows, n) reading inputs of covariance
    ``covs[i]``; rows should already be normalised (see :func:`row_normaliser`)."""
    blocks = [(w.T @ w, c) for w, c in zip(wmats, covs)]
    order, cum = obs_order(blocks, damp)
    return order_to_scores(order, cum)
