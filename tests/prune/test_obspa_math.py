"""The data-free statistics and the OBS update, checked against sampling (no ONNX here)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.prune import moments as mom
from edgekit.prune import obspa_math as om

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
