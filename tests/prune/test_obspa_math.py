"""The data-free statistics and the OBS update, checked against sampling (no ONNX here)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.prune.obspa import moments as mom
from edgekit.prune.obspa import obs as om

CASES = [(0.3, 1.0), (-1.5, 0.7), (2.0, 3.0), (0.0, 0.2), (5.0, 2.0)]


@pytest.mark.parametrize("name,params", [
    ("relu", {}), ("clip", {"lo": 0.0, "hi": 6.0}), ("leakyrelu", {"alpha": 0.1}),
    ("silu", {}), ("gelu", {}), ("sigmoid", {}), ("hardswish", {}), ("tanh", {}), ("identity", {}),
])
def test_activation_moments_match_monte_carlo(name, params):
    rng = np.random.default_rng(1)
    mu = np.array([c[0] for c in CASES])
    sd = np.array([c[1] for c in CASES])
    z = mu + sd * rng.standard_normal((400_000, len(mu)))
    fz = mom.act_fn(name, **params)(z)
    m1, m2 = mom.act_moments(name, mu, sd, **params)
    # Monte-Carlo standard errors; 5 sigma keeps the test deterministic yet sharp.
    se1 = fz.std(axis=0) / np.sqrt(len(z))
    se2 = (fz ** 2).std(axis=0) / np.sqrt(len(z))
    assert np.all(np.abs(m1 - fz.mean(axis=0)) <= 5 * se1 + 1e-9)
    assert np.all(np.abs(m2 - (fz ** 2).mean(axis=0)) <= 5 * se2 + 1e-9)


def test_relu_closed_form_is_not_the_gaussian_moments():
    # guards against a formula that silently returns the input moments
    m1, m2 = mom.act_moments("relu", np.array([-1.0]), np.array([1.0]))
    assert 0.0 < m1[0] < 0.2 and m2[0] < 0.5


def test_correlated_moments_match_monte_carlo():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 6))
    cov = a @ a.T / 6 + 0.1 * np.eye(6)
    mean = rng.standard_normal(6)
    m, c = mom.correlated_act_moments("relu", mean, cov, n_samples=20000, seed=3)
    z = rng.multivariate_normal(mean, cov, size=300_000)
    x = np.maximum(z, 0)
    assert np.allclose(m, x.mean(0), atol=0.01)
    assert np.allclose(c, np.cov(x.T), atol=0.03 * np.abs(np.cov(x.T)).max())
    # off-diagonal correlation must actually be there
    assert np.abs(c - np.diag(np.diag(c))).max() > 0.05


def test_conv_output_cov_matches_direct_computation():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 2, 2))
    cin = np.diag([1.0, 2.0, 0.5])
    # white-in-space inputs: each of the 4 positions independent with channel covariance cin
    x = rng.standard_normal((200_000, 3, 4)) * np.sqrt(np.diag(cin))[None, :, None]
    y = np.einsum("ock,nck->no", w.reshape(4, 3, 4), x)
    assert np.allclose(mom.conv_output_cov(w, cin), np.cov(y.T), rtol=0.05, atol=0.1)


def _synthetic_layer(seed=0, n=12, rows=20):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((n, 5))
    cov = basis @ basis.T + 0.05 * np.eye(n)  # strongly correlated channels
    mean = rng.uniform(0.0, 2.0, n)
    w = rng.standard_normal((rows, n))
    return w, mean, cov


def test_obs_update_reduces_expected_output_error():
    w, mean, cov = _synthetic_layer()
    keep = [0, 2, 3, 5, 7, 8, 11]
    drop = [i for i in range(w.shape[1]) if i not in keep]
    plain = w.copy()
    plain[:, drop] = 0.0
    e_plain = om.expected_output_error(w, np.zeros(len(w)), plain, mean, cov)
    wk, db = om.compensate(w, mean, cov, keep, redistribute=False)
    full = np.zeros_like(w)
    full[:, keep] = wk
    e_mean = om.expected_output_error(w, db, full, mean, cov)
    wk, db = om.compensate(w, mean, cov, keep, damp=1e-8)
    full = np.zeros_like(w)
    full[:, keep] = wk
    e_obs = om.expected_output_error(w, db, full, mean, cov)
    assert e_mean < e_plain  # folding the means into the bias helps
    assert e_obs < 0.5 * e_mean  # redistributing to correlated kept channels helps a lot more
    # and it is the least-squares optimum: any perturbation of the kept weights is worse
    rng = np.random.default_rng(9)
    for _ in range(5):
        pert = full + 1e-2 * rng.standard_normal(full.shape) * (np.arange(w.shape[1]) != -1)
        pert[:, drop] = 0.0
        db2 = (w - pert) @ mean
        assert om.expected_output_error(w, db2, pert, mean, cov) > e_obs


def test_greedy_cumulative_error_equals_joint_least_squares_error():
    w, mean, cov = _synthetic_layer(seed=5)
    order, cum = om.obs_order([(w.T @ w, cov)], damp=1e-8)
    assert np.all(np.diff(cum) >= -1e-9)
    for k in (1, 4, 8):
        drop = order[:k]
        keep = [i for i in range(w.shape[1]) if i not in set(drop.tolist())]
        wk, db = om.compensate(w, mean, cov, keep, damp=1e-8)
        full = np.zeros_like(w)
        full[:, keep] = wk
        assert om.expected_output_error(w, db, full, mean, cov) == pytest.approx(cum[k - 1], rel=1e-5)


def test_obs_removes_a_duplicate_channel_first_and_at_no_cost():
    rng = np.random.default_rng(3)
    n = 6
    a = rng.standard_normal((n, n))
    cov = a @ a.T + np.eye(n)
    # channel 5 is an exact copy of channel 1 and has the largest weights: magnitude keeps it
    t = np.eye(n)
    t[5] = t[1]
    cov = t @ cov @ t.T
    w = rng.standard_normal((8, n))
    w[:, 5] *= 10
    order, cum = om.obs_order([(w.T @ w, cov)], damp=1e-9)
    assert order[0] in (1, 5)
    assert cum[0] < 1e-4 * np.einsum("ri,ij,rj->", w, cov, w)


def test_reconstruction_recovers_a_linear_combination():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((50_000, 4)) + np.array([1.0, 2.0, 0.0, -1.0])
    x = np.concatenate([x, (2 * x[:, 0] - x[:, 2] + 3)[:, None]], axis=1)
    drop, r, c0 = om.reconstruction(x.mean(0), np.cov(x.T), keep=[0, 1, 2, 3], damp=1e-9)
    assert drop.tolist() == [4]
    assert np.allclose(r, [[2, 0, -1, 0]], atol=1e-3) and np.allclose(c0, [3], atol=1e-2)


def test_block_removal_equals_joint_least_squares():
    # a channel feeding two columns (Flatten into a Linear) is removed as one block
    w, mean, cov = _synthetic_layer(seed=11, n=12)
    cols = [[2 * j, 2 * j + 1] for j in range(6)]
    order, cum = om.obs_order([(w.T @ w, cov, cols)], damp=1e-9)
    drop = sorted(c for j in order[:2] for c in cols[j])
    keep = [i for i in range(12) if i not in drop]
    wk, db = om.compensate(w, mean, cov, keep, damp=1e-9)
    full = np.zeros_like(w)
    full[:, keep] = wk
    assert om.expected_output_error(w, db, full, mean, cov) == pytest.approx(cum[1], rel=1e-5)


def test_depthwise_output_keeps_input_correlation():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 1, 3, 3))
    a = rng.standard_normal((3, 3))
    cin = a @ a.T + 0.1 * np.eye(3)
    x = rng.multivariate_normal(np.zeros(3), cin, size=(100_000, 9))  # (n, positions, channels)
    y = np.einsum("ck,nkc->nc", w.reshape(3, 9), x)
    assert np.allclose(mom.conv_output_cov(w, cin, group=3), np.cov(y.T), rtol=0.05, atol=0.15)


def _generic_order(blocks):
    # a zero-Gram consumer whose channels span two columns forces the block (generic) path of
    # obs_order without changing any saliency
    n_in = blocks[0][0].shape[0]
    cols = blocks[0][2]
    dummy = (np.zeros((n_in + 1, n_in + 1)), np.eye(n_in + 1), [[c[0], n_in] if c else [] for c in cols])
    return om.obs_order(list(blocks) + [dummy])


@pytest.mark.parametrize("unread", [False, True])
def test_single_column_fast_path_equals_block_path(unread):
    rng = np.random.default_rng(7)
    n = 40
    a = rng.standard_normal((n, n))
    cov = a @ a.T / n + 0.05 * np.eye(n)
    w1, w2 = rng.standard_normal((20, n)), rng.standard_normal((9, n))
    cols = [[] if (unread and j % 4 == 0) else [j] for j in range(n)]
    blocks = [(w1.T @ w1, cov, cols), (w2.T @ w2, cov, [[j] for j in range(n)])]
    o_fast, c_fast = om.obs_order(blocks)
    o_ref, c_ref = _generic_order(blocks)
    assert (o_fast == o_ref).all()
    assert np.allclose(c_fast, c_ref, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(c_fast) >= -1e-12) and c_fast[-1] > 0


def test_consumers_of_one_input_merge_exactly():
    # two consumers reading the same tensor (same covariance object) == one with the summed Gram
    rng = np.random.default_rng(8)
    n = 10
    a = rng.standard_normal((n, n))
    cov = a @ a.T / n + 0.1 * np.eye(n)
    w1, w2 = rng.standard_normal((6, n)), rng.standard_normal((5, n))
    o1, c1 = om.obs_order([(w1.T @ w1, cov), (w2.T @ w2, cov)])
    o2, c2 = om.obs_order([(w1.T @ w1 + w2.T @ w2, cov.copy())])
    assert (o1 == o2).all() and np.allclose(c1, c2)
    # and a different covariance is not merged (the order generally changes)
    o3, c3 = om.obs_order([(w1.T @ w1, cov), (w2.T @ w2, np.eye(n))])
    assert not np.allclose(c1, c3)


@pytest.mark.parametrize("name,params", [("relu", {}), ("clip", {"lo": 0.0, "hi": 1.0}), ("silu", {})])
def test_hermite_covariance_is_accurate_and_psd(name, params):
    rng = np.random.default_rng(9)
    a = rng.standard_normal((7, 7))
    cov = a @ a.T / 7 + 0.1 * np.eye(7)
    mean = rng.standard_normal(7)
    z = rng.multivariate_normal(mean, cov, size=400_000)
    ref = np.cov(mom.act_fn(name, **params)(z).T)
    _, c_h = mom.correlated_act_moments(name, mean, cov, method="hermite", **params)
    assert np.abs(c_h - ref).max() <= 0.015 * np.abs(ref).max()
    assert np.linalg.eigvalsh(c_h).min() > -1e-10
    # the first Mehler term alone (linearisation) is clearly worse: the higher terms matter
    _, c_1 = mom.correlated_act_moments(name, mean, cov, method="hermite", order=1, **params)
    assert np.abs(c_1 - ref).max() > np.abs(c_h - ref).max()


def test_conv_output_cov_with_spatially_correlated_inputs():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((3, 2, 1, 3))  # 1x3 kernel: taps along a line
    rho = 0.6
    r = mom.spatial_kernel((1, 3), rho)
    assert np.allclose(r[0], [1.0, rho, rho ** 2])
    cin = np.array([[1.0, 0.3], [0.3, 0.5]])
    # inputs with covariance C (x) R over (channel, tap)
    full = np.kron(cin, r)
    x = rng.multivariate_normal(np.zeros(6), full, size=300_000).reshape(-1, 2, 3)
    y = np.einsum("ock,nck->no", w.reshape(3, 2, 3), x)
    got = mom.conv_output_cov(w, cin, spatial=rho)
    assert np.allclose(got, np.cov(y.T), rtol=0.05, atol=0.05)
    assert not np.allclose(got, mom.conv_output_cov(w, cin), rtol=0.05, atol=0.05)


def test_depthwise_fast_path_equals_dense_expansion():
    rng = np.random.default_rng(11)
    c, mult = 4, 2
    w = rng.standard_normal((c * mult, 1, 3, 3))
    a = rng.standard_normal((c, c))
    cin = a @ a.T / c + 0.1 * np.eye(c)
    r = mom.spatial_kernel((3, 3), 0.5)
    dense = np.zeros((c * mult, c, 9))
    for o in range(c * mult):
        dense[o, o // mult] = w[o, 0].reshape(-1)
    ref = np.einsum("ock,cd,kl,pdl->op", dense, cin, r, dense)
    assert np.allclose(mom.conv_output_cov(w, cin, group=c, spatial=0.5), ref)


def test_chunked_greedy_on_wide_groups_is_exact_at_block_ends_and_near_greedy(monkeypatch):
    """Wide groups are ordered several channels per step: the cumulative error at the end of each
    block is still the joint least-squares error of the removed set, and the removal order costs
    little more than the one-at-a-time greedy."""
    rng = np.random.default_rng(11)
    n = 96
    a = rng.standard_normal((n, n // 2))
    cov = a @ a.T / n + 0.05 * np.eye(n)  # strongly correlated: the greedy matters
    w = rng.standard_normal((30, n))
    mean = rng.standard_normal(n)
    monkeypatch.setattr(om, "CHUNK_MIN", 10 ** 9)
    o_ref, c_ref = om.obs_order([(w.T @ w, cov)], damp=1e-6)
    monkeypatch.setattr(om, "CHUNK_MIN", 64)
    monkeypatch.setattr(om, "CHUNK_DIV", 8)
    o_ch, c_ch = om.obs_order([(w.T @ w, cov)], damp=1e-6)
    assert sorted(o_ch.tolist()) == list(range(n)) and np.all(np.diff(c_ch) >= -1e-9)
    ends, step = [], 0
    while step < n:
        step += max(1, (n - step) // 8)
        ends.append(step)
    assert ends[:2] == [12, 22]  # 96 // 8 channels at once, then 84 // 8, ...
    for k in (ends[0], ends[1], ends[4], ends[6]):
        drop = set(o_ch[:k].tolist())
        keep = [i for i in range(n) if i not in drop]
        wk, db = om.compensate(w, mean, cov, keep, damp=1e-6)
        full = np.zeros_like(w)
        full[:, keep] = wk
        err = om.expected_output_error(w, db, full, mean, cov)
        assert err == pytest.approx(c_ch[k - 1], rel=1e-4)
        assert err <= 1.3 * c_ref[k - 1]


def _joint_error(blocks, drop):
    """Sum over consumers of tr(G_SS P_SS^-1): the error left after removing ``drop`` jointly."""
    err = 0.0
    for g, cov, cols in blocks:
        p = np.linalg.inv(om.damp_cov(cov))
        cs = np.array([cols[j] for j in drop if cols[j] >= 0])
        if len(cs):
            err += float(np.trace(np.linalg.solve(p[np.ix_(cs, cs)], g[np.ix_(cs, cs)])))
    return err


def test_wide_group_order_is_near_the_exact_greedy_on_correlated_inputs(monkeypatch):
    """The block greedy of wide groups (float32 products) removes sets whose joint error stays within
    10 % of the one-at-a-time greedy's, and its cumulative errors are exact at the block ends."""
    rng = np.random.default_rng(3)
    n = 288
    blocks = []
    for extra in (0, 40):  # the second consumer reads a concat: 40 more columns that always stay
        m = n + extra
        a = rng.standard_normal((m, m // 3))
        a[1:n // 2:2] = a[0:n // 2 - 1:2] + 0.05 * rng.standard_normal((n // 4, m // 3))  # near-twins
        cov = a @ a.T / m + 0.01 * np.diag(rng.uniform(0.2, 2.0, m))
        w = rng.standard_normal((48, m)) * rng.uniform(0.1, 2.0, m)
        cols = np.arange(n) + extra
        if extra:
            cols[::17] = -1  # channels this consumer does not read
        blocks.append((w.T @ w, cov, cols))
    monkeypatch.setattr(om, "WIDE_F32_MIN", 256)
    o_wide, c_wide = om.obs_order(blocks)
    # (ranking by single saliencies alone takes both channels of many twins: 1.24x the error at 50 %)
    monkeypatch.setattr(om, "CHUNK_MIN", 10 ** 9)
    o_ref, c_ref = om.obs_order(blocks)
    assert sorted(o_wide.tolist()) == list(range(n)) and np.all(np.diff(c_wide) >= -1e-6 * c_wide[-1])
    for frac in (0.1, 0.2, 0.3, 0.5):
        k = int(frac * n)
        e_wide, e_ref = _joint_error(blocks, o_wide[:k]), _joint_error(blocks, o_ref[:k])
        assert e_wide <= 1.1 * e_ref
    step = n // om.CHUNK_DIV  # end of the first block: the block's joint error, exactly
    assert c_wide[step - 1] == pytest.approx(_joint_error(blocks, o_wide[:step]), rel=1e-4)


def test_wide_group_order_is_exact_for_independent_channels(monkeypatch):
    """With uncorrelated inputs removing a channel changes no other saliency: the block greedy is
    the sort by single-channel OBS saliency and its cumulative errors are the running sums."""
    rng = np.random.default_rng(4)
    n = 300
    var = rng.uniform(0.1, 3.0, n)
    w = rng.standard_normal((20, n))
    g = w.T @ w
    monkeypatch.setattr(om, "WIDE_F32_MIN", 256)
    order, cum = om.obs_order([(g, np.diag(var))], damp=1e-2)
    sal = np.diag(g) * (var + 1e-2 * var.mean())  # G_jj / P_jj with P the inverse damped covariance
    assert np.array_equal(order, np.argsort(sal, kind="stable"))
    assert np.allclose(cum, np.cumsum(sal[order]), rtol=1e-5)


def test_precision_woodbury_and_reuse_in_the_update():
    """A covariance given as low rank plus diagonal is inverted by Woodbury to the same matrix, and
    the compensation computed from that inverse equals the direct least-squares one."""
    rng = np.random.default_rng(5)
    n, r = 60, 9
    u = rng.standard_normal((r, n))
    diag = rng.uniform(0.05, 1.0, n)
    cov = 0.7 * u.T @ u + np.diag(diag)
    p = om.precision(cov, 1e-2, lowrank=(u, 0.7, diag))
    assert np.allclose(p, np.linalg.inv(om.damp_cov(cov, 1e-2)), rtol=1e-8, atol=1e-10)
    w = rng.standard_normal((12, n))
    mean = rng.standard_normal(n)
    keep = rng.choice(n, 40, replace=False)
    w_ref, db_ref = om.compensate(w, mean, cov, keep)
    w_p, db_p = om.compensate(w, mean, cov, keep, prec=p)
    assert np.allclose(w_p, w_ref) and np.allclose(db_p, db_ref)
    p_before = p.copy()  # a precision passed to the greedy is read, never updated in place
    om.obs_order([(w.T @ w, cov, None, p)])
    assert np.array_equal(p, p_before)


@pytest.mark.parametrize("n,k", [(40, 1), (40, 9), (300, 1), (300, 4)])
def test_normalised_gram_equals_the_gram_of_the_normalised_weight(n, k):
    """The one-pass normalised Gram matrix (float32 for wide inputs) is ``gram(W * row_normaliser)``."""
    rng = np.random.default_rng(n + k)
    n_out = 24
    wmat = rng.standard_normal((n_out * k, n)) * rng.uniform(0.1, 3.0, n)
    a = rng.standard_normal((n, n // 2))
    cov = a @ a.T / n + 0.1 * np.eye(n)
    w = wmat * om.row_normaliser(wmat, cov, n_out)[:, None]
    ref = w.T @ w
    got = om.normalised_gram(wmat, cov, n_out)
    tol = 1e-12 if n < om.CHUNK_MIN else 2e-5
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()
    # every output channel has unit variance / n_out after the normalisation: trace(G C) == 1
    assert float(np.trace(got @ cov)) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("n,r", [(60, 9), (300, 40), (300, 250)])
@pytest.mark.parametrize("max_rank", [1.0, 0.0, om.WOODBURY_MAX_RANK])
def test_precision_woodbury_matches_the_inverse_for_wide_inputs(n, r, max_rank, monkeypatch):
    """The Cholesky form of Woodbury (float32 product for wide inputs) is the damped inverse, and
    so is the plain inverse taken instead when the rank is not small (``max_rank`` 1: Woodbury
    always, 0: never)."""
    monkeypatch.setattr(om, "WOODBURY_MAX_RANK", max_rank)
    rng = np.random.default_rng(r)
    u = rng.standard_normal((r, n)) * rng.uniform(0.2, 2.0, n)
    diag = rng.uniform(0.05, 1.0, n)
    cov = 0.6 * u.T @ u + np.diag(diag)
    p = om.precision(cov, 1e-2, lowrank=(u, 0.6, diag))
    ref = np.linalg.inv(om.damp_cov(cov, 1e-2))
    tol = 1e-9 if n < om.CHUNK_MIN else 1e-5
    assert np.abs(p - ref).max() <= tol * np.abs(ref).max()
    assert np.allclose(p, p.T, atol=tol * np.abs(ref).max())


def test_wide_compensation_matches_the_float64_least_squares():
    rng = np.random.default_rng(8)
    n = 300
    a = rng.standard_normal((n, n // 3))
    cov = a @ a.T / n + 0.05 * np.eye(n)
    w = rng.standard_normal((50, n))
    mean = rng.standard_normal(n)
    keep = np.sort(rng.choice(n, 200, replace=False))
    drop, r, c0 = om.reconstruction(mean, cov, keep)
    w_ref = w[:, keep] + w[:, drop] @ r
    w_k, db = om.compensate(w, mean, cov, keep)
    assert np.abs(w_k - w_ref).max() <= 1e-5 * np.abs(w_ref).max()
    assert np.allclose(db, w[:, drop] @ c0)


def test_channel_columns_fast_path_equals_the_general_mapping():
    """One column (or none) per channel, given as lists or ints, maps as the general path does."""
    rng = np.random.default_rng(9)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        cols_list = [[int(c)] if c >= 0 else [] for c in rng.integers(-1, 50, n)]
        cols_int = [c[0] if c else -1 for c in cols_list]
        cols_neg = [c if c else [-1] for c in cols_list]
        ref = [np.asarray(c, dtype=np.int64) for c in cols_list]
        for cols in (cols_list, cols_int, cols_neg):
            got = om._channel_columns(cols, 50)
            assert len(got) == n
            assert all(np.array_equal(g, r_) and g.dtype == np.int64 for g, r_ in zip(got, ref))
    multi = [[0, 1], [], [5]]  # several columns per channel: the general path
    assert [g.tolist() for g in om._channel_columns(multi, 6)] == [[0, 1], [], [5]]
    assert [g.tolist() for g in om._channel_columns(None, 3)] == [[0], [1], [2]]


@pytest.mark.parametrize("n,cols_per", [(40, 1), (300, 1), (600, 1), (30, 2)])
def test_stopped_greedy_keeps_the_full_greedys_prefix(n, cols_per):
    """``stop_after=k``: at least ``k`` entries exact (the full greedy's order and errors: one at a
    time for narrow groups, a block at a time for wide ones, blocks of columns for multi-column
    channels), the rest a permutation of the remaining channels with errors above them."""
    rng = np.random.default_rng(n)
    m = n * cols_per
    x = rng.standard_normal((4 * m, m))
    x[:, 1:] += 0.6 * x[:, :-1]
    cov = np.cov(x.T)
    w = rng.standard_normal((50, m))
    cols = None if cols_per == 1 else [list(range(cols_per * j, cols_per * (j + 1))) for j in range(n)]
    blocks = [(w.T @ w, cov) if cols is None else (w.T @ w, cov, cols)]
    order, cum = om.obs_order(blocks)
    for k in (1, n // 5, n // 2):
        o2, c2, exact = om.obs_order(blocks, stop_after=k)
        assert k <= exact <= n
        assert np.array_equal(o2[:exact], order[:exact]) and np.allclose(c2[:exact], cum[:exact])
        assert sorted(o2.tolist()) == list(range(n))
        assert np.all(np.diff(c2) >= 0)
        if exact < n:
            assert c2[exact] > c2[exact - 1]
    if n >= om.CHUNK_MIN:  # wide: one block step covers k <= live // CHUNK_DIV
        assert om.obs_order(blocks, stop_after=n // 5)[2] == n // om.CHUNK_DIV
