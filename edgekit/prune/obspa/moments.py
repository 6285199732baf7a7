"""Moments of activations under a Gaussian pre-activation model (data-free statistics).

A BatchNorm layer in inference mode maps its input to ``gamma * (x - running_mean) /
sqrt(running_var + eps) + beta``; if the running statistics describe the data (they do, they were
measured on it during training), each output channel has mean ``beta`` and variance ``gamma**2``.
Assuming the channel is Gaussian, the moments *after* the following activation (ReLU, ReLU6,
SiLU, GELU, ...) follow in closed form or by one-dimensional quadrature. These moments are the
Hessian proxy of the OBS update in :mod:`edgekit.prune.obspa.obs`: ``H = E[x x^T]`` of the
consumer's input, split into mean ``m`` and centred covariance ``C``.

Everything here is plain NumPy, vectorised over channels, with no data.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np

_SQRT2 = math.sqrt(2.0)
_erf_vec = np.vectorize(math.erf, otypes=[np.float64])


def norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (NumPy has no erf; ``math.erf`` vectorised is exact and fast enough
    for per-channel vectors)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos_inf = np.isposinf(x)
    neg_inf = np.isneginf(x)
    fin = ~(pos_inf | neg_inf)
    out[pos_inf] = 1.0
    out[neg_inf] = 0.0
    if fin.any():
        out[fin] = 0.5 * (1.0 + _erf_vec(x[fin] / _SQRT2))
    return out


def norm_pdf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = np.exp(-0.5 * np.square(x)) / math.sqrt(2.0 * math.pi)
    return np.where(np.isfinite(x), out, 0.0)


def clip_moments(mu, sigma, lo: float = 0.0, hi: float = math.inf) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and second moment of ``clip(z, lo, hi)`` for ``z ~ N(mu, sigma^2)``, elementwise.

    ReLU is ``lo=0, hi=inf``; ReLU6 is ``lo=0, hi=6``. With ``t = (z - mu)/sigma`` and
    ``a = (lo-mu)/sigma``, ``b = (hi-mu)/sigma``, the part inside ``[lo, hi]`` integrates to
    ``mu*dPhi + sigma*(phi(a)-phi(b))`` (first moment) and
    ``(mu^2+sigma^2)*dPhi + sigma*((lo+mu)*phi(a) - (hi+mu)*phi(b))`` (second moment); the clipped
    tails add ``lo*Phi(a) + hi*(1-Phi(b))`` and the same with squares.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.maximum(np.abs(np.asarray(sigma, dtype=np.float64)), 1e-12)
    a = (lo - mu) / sigma
    b = (hi - mu) / sigma
    pa, pb = norm_pdf(a), norm_pdf(b)
    ca, cb = norm_cdf(a), norm_cdf(b)
    d = cb - ca
    lo_term = lo * ca if math.isfinite(lo) else 0.0
    hi_term = hi * (1.0 - cb) if math.isfinite(hi) else 0.0
    lo_sq = lo * lo * ca if math.isfinite(lo) else 0.0
    hi_sq = hi * hi * (1.0 - cb) if math.isfinite(hi) else 0.0
    # (lo+mu)*phi(a) is 0 when lo = -inf (phi(-inf) = 0); avoid inf*0.
    lo_pdf = (lo + mu) * pa if math.isfinite(lo) else 0.0
    hi_pdf = (hi + mu) * pb if math.isfinite(hi) else 0.0
    m1 = lo_term + mu * d + sigma * (pa - pb) + hi_term
    m2 = lo_sq + (mu * mu + sigma * sigma) * d + sigma * (lo_pdf - hi_pdf) + hi_sq
    return m1, m2


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _erf_np(x):
    return _erf_vec(x)


# Elementwise activation functions by name (ONNX op names lower-cased, plus fused patterns).
ACTIVATIONS: Dict[str, Callable[..., np.ndarray]] = {
    "identity": lambda z, **k: z,
    "relu": lambda z, **k: np.maximum(z, 0.0),
    "clip": lambda z, lo=-math.inf, hi=math.inf, **k: np.clip(z, lo, hi),
    "leakyrelu": lambda z, alpha=0.01, **k: np.where(z > 0, z, alpha * z),
    "sigmoid": lambda z, **k: _sigmoid(z),
    "tanh": lambda z, **k: np.tanh(z),
    "silu": lambda z, **k: z * _sigmoid(z),
    "hardsigmoid": lambda z, alpha=0.2, beta=0.5, **k: np.clip(alpha * z + beta, 0.0, 1.0),
    "hardswish": lambda z, **k: z * np.clip(z / 6.0 + 0.5, 0.0, 1.0),
    "gelu": lambda z, **k: 0.5 * z * (1.0 + np.tanh(0.7978845608028654 * (z + 0.044715 * z ** 3))),
    "elu": lambda z, alpha=1.0, **k: np.where(z > 0, z, alpha * (np.exp(np.minimum(z, 0.0)) - 1.0)),
    "softplus": lambda z, **k: np.logaddexp(0.0, z),
}


def act_fn(name: str, **params) -> Callable[[np.ndarray], np.ndarray]:
    if name not in ACTIVATIONS:
        raise KeyError(name)
    f = ACTIVATIONS[name]
    return lambda z: f(z, **params)


_GH_CACHE: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}


def _gauss_hermite(n: int):
    if n not in _GH_CACHE:
        x, w = np.polynomial.hermite_e.hermegauss(n)  # weight exp(-x^2/2)
        _GH_CACHE[n] = (x, w / math.sqrt(2.0 * math.pi))
    return _GH_CACHE[n]


def act_moments(name: str, mu, sigma, n_points: int = 96, **params) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and second moment of ``act(z)``, ``z ~ N(mu, sigma^2)`` per channel.

    Closed form for ReLU / clip (ReLU6) / LeakyReLU / identity; Gauss-Hermite quadrature with
    ``n_points`` nodes for the smooth ones (SiLU, GELU, sigmoid, ...) — exact to ~1e-6 for them.
    Piecewise functions with kinks away from 0 (hardswish) get more nodes automatically.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.abs(np.asarray(sigma, dtype=np.float64))
    if name == "identity":
        return mu.copy(), mu * mu + sigma * sigma
    if name == "relu":
        return clip_moments(mu, sigma, 0.0, math.inf)
    if name == "clip":
        return clip_moments(mu, sigma, params.get("lo", -math.inf), params.get("hi", math.inf))
    if name == "leakyrelu":
        s = float(params.get("alpha", 0.01))
        r1, r2 = clip_moments(mu, sigma, 0.0, math.inf)
        m1 = s * mu + (1.0 - s) * r1
        m2 = r2 + s * s * (mu * mu + sigma * sigma - r2)
        return m1, m2
    f = act_fn(name, **params)
    n = n_points * (3 if name in ("hardswish", "hardsigmoid", "elu") else 1)
    x, w = _gauss_hermite(n)
    z = mu[..., None] + sigma[..., None] * x  # (C, n)
    fz = f(z)
    return fz @ w, (fz * fz) @ w


def hermite_coefficients(name: str, mu, sigma, order: int = 6, n_points: int = 96, **params) -> np.ndarray:
    """``E[act(mu + sigma z) He_k(z)]`` for ``k = 1..order``, ``z ~ N(0, 1)``, per channel: ``(C, order)``.

    By Mehler's formula two unit Gaussians with correlation ``rho`` give
    ``Cov(f(z1), g(z2)) = sum_k rho^k / k! * E[f He_k] E[g He_k]``; these are the coefficients.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.abs(np.asarray(sigma, dtype=np.float64))
    n = n_points * 3  # kinks (ReLU, clip) converge slowly
    x, w = _gauss_hermite(n)
    fz = act_fn(name, **params)(mu[:, None] + sigma[:, None] * x)  # (C, n)
    he = [np.ones_like(x), x.copy()]
    for k in range(1, order):
        he.append(x * he[k] - k * he[k - 1])  # probabilists' Hermite recurrence
    basis = np.stack(he[1:order + 1], axis=1)  # (n, order)
    return fz @ (basis * w[:, None])


def correlated_act_moments(name: str, mean: np.ndarray, cov: np.ndarray, n_samples: int = 2048,
                           seed: int = 0, method: str = "hermite", order: int = 6,
                           **params) -> Tuple[np.ndarray, np.ndarray]:
    """Mean vector and centred covariance of ``act(z)`` for ``z ~ N(mean, cov)``.

    The per-channel mean and variance are exact (:func:`act_moments`). The cross-channel
    covariance: ``method="hermite"`` (default) sums the first ``order`` terms of Mehler's series
    (:func:`hermite_coefficients`) — deterministic, ``O(order C^2)``, and positive semi-definite
    (every term is a Schur product of PSD matrices; the exact diagonal only adds the positive
    remainder); ``method="mc"`` estimates the correlation from ``n_samples`` Monte-Carlo samples
    rescaled by the exact standard deviations.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    sd_in = np.sqrt(np.maximum(np.diag(cov), 0.0))
    m1, m2 = act_moments(name, mean, sd_in, **params)
    var = np.maximum(m2 - m1 * m1, 0.0)
    c = len(mean)
    offdiag = np.abs(cov - np.diag(np.diag(cov))).max() if c > 1 else 0.0
    if c == 1 or offdiag == 0.0:
        return m1, np.diag(var)
    if method == "hermite":
        rho = cov_to_corr(cov)
        coef = hermite_coefficients(name, mean, sd_in, order=order, **params)
        out = np.zeros((c, c))
        rk = np.ones((c, c))
        fact = 1.0
        for k in range(order):
            rk = rk * rho
            fact *= k + 1
            ck = coef[:, k]
            out += rk * np.outer(ck, ck) / fact
        out[np.diag_indices(c)] = var
        return m1, out
    if method != "mc":
        raise ValueError(f"unknown method {method!r}")
    rng = np.random.default_rng(seed)
    # Cholesky with a little jitter (PSD-but-singular covariances are common: dead channels).
    jitter = 1e-6 * max(float(np.mean(np.diag(cov))), 1e-12)
    try:
        root = np.linalg.cholesky(cov + jitter * np.eye(c))
    except np.linalg.LinAlgError:
        evals, evecs = np.linalg.eigh(cov)
        root = evecs * np.sqrt(np.maximum(evals, 0.0))
    half = n_samples // 2
    g = rng.standard_normal((half, c))
    g = np.concatenate([g, -g])  # antithetic pairs: the first moment of z is exact
    z = mean + g @ root.T
    fz = act_fn(name, **params)(z)
    fz -= fz.mean(axis=0)
    s = fz.T @ fz / len(fz)
    sd = np.sqrt(np.maximum(np.diag(s), 1e-30))
    corr = s / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    sd_exact = np.sqrt(var)
    return m1, corr * np.outer(sd_exact, sd_exact)


_SPATIAL_CACHE: Dict[Tuple, np.ndarray] = {}


def spatial_kernel(kernel_shape, rho: float) -> np.ndarray:
    """Correlation between the input pixels under two kernel taps: ``rho ** L1-distance``
    (``rho = 0``: spatially white inputs; real feature maps are smooth, ``rho`` ~ 0.5-0.9)."""
    key = (tuple(int(k) for k in kernel_shape), float(rho))
    if key not in _SPATIAL_CACHE:
        _SPATIAL_CACHE[key] = _spatial_kernel(key[0], key[1])
        _SPATIAL_CACHE[key].setflags(write=False)
    return _SPATIAL_CACHE[key]


def _spatial_kernel(kernel_shape, rho: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(k) for k in kernel_shape], indexing="ij")
    pos = np.stack([g.reshape(-1) for g in grids], axis=1) if grids else np.zeros((1, 0))
    dist = np.abs(pos[:, None, :] - pos[None, :, :]).sum(axis=-1)
    return np.power(float(rho), dist) if rho > 0 else np.eye(len(pos))


def conv_output_cov(weight: np.ndarray, in_cov: np.ndarray, group: int = 1, spatial: float = 0.0) -> np.ndarray:
    """Channel covariance of a conv (or linear) output for inputs with channel covariance
    ``in_cov`` and spatial correlation ``spatial ** distance`` between pixels (the same for every
    channel pair): ``sum_{p,q} W_p C W_q^T R_pq`` over kernel taps ``p, q``.

    ``weight`` is ONNX-laid-out ``[O, C/group, *kernel]`` (a Linear is ``[O, C]``). With
    ``spatial=0`` the inputs are white across space, which over-states how independent
    neighbouring pixels are: two depthwise filters then look uncorrelated although on smooth maps
    both mostly respond to the local mean. The callers use the *correlation* this implies.
    """
    w = np.asarray(weight, dtype=np.float64)
    o, cg = w.shape[0], w.shape[1]
    k = int(np.prod(w.shape[2:])) if w.ndim > 2 else 1
    r = spatial_kernel(w.shape[2:], spatial) if (w.ndim > 2 and spatial > 0) else None
    w = w.reshape(o, cg, k)
    if group > 1:
        og = o // group
        ch = np.arange(o) // og  # input group of every output
        if cg == 1:
            # depthwise (any multiplier): cov(y_i, y_j) = C[ch_i, ch_j] * w_i R w_j^T
            w2 = w[:, 0, :]
            spat = w2 @ (r if r is not None else np.eye(k)) @ w2.T
            return in_cov[np.ix_(ch, ch)] * spat
        # Grouped: expand to a dense (block-diagonal) weight. Outputs of different groups are
        # still correlated when their input channels are.
        dense = np.zeros((o, cg * group, k))
        for g in range(group):
            dense[g * og:(g + 1) * og, g * cg:(g + 1) * cg] = w[g * og:(g + 1) * og]
        w = dense
    t = np.einsum("ock,cd->odk", w, in_cov, optimize=True)
    if r is not None:
        t = t @ r
    return t.reshape(o, -1) @ w.reshape(o, -1).T


def cov_to_corr(cov: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-30))
    corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def shrink_corr(corr: np.ndarray, alpha: float) -> np.ndarray:
    """``(1-alpha) I + alpha corr``: alpha=0 is the diagonal (independent channels) model."""
    return (1.0 - alpha) * np.eye(len(corr)) + alpha * corr


def bn_output_moments(gamma, beta, corr: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a BatchNorm output: ``N(beta, diag|gamma| corr diag|gamma|)``."""
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if corr is None:
        return beta.copy(), np.diag(gamma * gamma)
    g = np.abs(gamma)
    return beta.copy(), corr * np.outer(g, g)
