"""Image priors for synthetic inputs when the graph has no BatchNorm, and how to choose among them.

With BN folded into the convolutions, nothing in the graph re-normalises the activations: the
synthetic inputs themselves must look like the training data for the layer statistics to be
right. Smooth Gaussian noise does not (measured on digits models trained with other recipes,
bench/prune_datafree.py --recipes: obspa-seq lost 18-43 points at 0.67 FLOPs). This module makes
candidate input sets from generic image priors, each standardised over the whole set (mean 0,
std 1, as a normalised input is), mapped back through a normalisation found at the graph input
(:func:`input_normalisation`), and scores each by what the network says about it
(:func:`network_score`): confident and diverse predictions.

Priors (``PRIORS``): ``smooth`` (box-blurred noise, the old default), ``pink`` (1/f spectrum),
``blobs`` (piecewise-smooth regions), ``strokes`` / ``strokes-dark`` (sparse curved strokes on a
flat background, bright or dark).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from onnx import numpy_helper

from edgekit.prune.obspa.synthetic import smooth_noise

PRIORS = ("smooth", "pink", "blobs", "strokes", "strokes-dark")
# The picked prior's pool holds this many times the samples kept (the network keeps the most
# confident of each class); each prior's trial set has n / 4 samples, at least TRIAL_LEAST.
# bench/prune_datafree.py --recipes: 4 took the digits MobileNetV2 from 7.8 to 2.0 points lost.
POOL_FACTOR = 4
TRIAL_FRACTION = 0.25
TRIAL_LEAST = 4
# The piecewise-smooth prior, the most generic model of natural images, is kept unless another
# beats its trial score by this much: the trial score of 16 samples varies by about 0.03 from
# seed to seed (digits VGG: blobs 0.51 vs strokes-dark 0.55 on one seed, 0.04-0.09 ahead on
# three others; strokes-dark then lost 25 points, blobs none).
PREFERRED, PREFER_MARGIN = "blobs", 0.05


def _const(model, name: str) -> Optional[np.ndarray]:
    for i in model.graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def input_normalisation(model, in_name: str, channels: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(mean, std)`` per channel when the graph starts with an affine normalisation of its input
    (a chain of Sub / Add / Div / Mul by constants, as ``(x - mean) / std`` exports): the graph's
    own statement of its input distribution. None when the input goes elsewhere first."""
    users: Dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    scale, shift = np.ones(channels), np.zeros(channels)  # normalised = raw * scale + shift
    t, found = in_name, False
    while len(users.get(t, [])) == 1:
        n = users[t][0]
        if n.op_type not in ("Sub", "Add", "Div", "Mul") or len(n.input) != 2 or n.input[0] != t:
            break
        c = _const(model, n.input[1])
        if c is None or c.size not in (1, channels):
            break
        c = c.astype(np.float64).reshape(-1)
        if n.op_type == "Sub":
            shift = shift - c
        elif n.op_type == "Add":
            shift = shift + c
        elif n.op_type == "Mul":
            scale, shift = scale * c, shift * c
        else:
            if np.any(c == 0):
                break
            scale, shift = scale / c, shift / c
        t, found = n.output[0], True
    if not found or np.any(np.abs(scale) < 1e-12):
        return None
    return -shift / scale, 1.0 / scale  # raw = normalised * std + mean


def _pink(rng, n: int, c: int, h: int, w: int) -> np.ndarray:
    """Noise with a 1/f amplitude spectrum (natural images' average spectrum)."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.sqrt(fy ** 2 + fx ** 2), 1.0 / max(h, w))
    spec = (rng.standard_normal((n, c, h, w // 2 + 1)) + 1j * rng.standard_normal((n, c, h, w // 2 + 1))) * amp
    return np.fft.irfft2(spec, s=(h, w)).astype(np.float32)


def _blobs(rng, n: int, c: int, h: int, w: int) -> np.ndarray:
    """Piecewise-smooth images: a few ellipses of random level over a random background, edges
    softened by one pixel."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, c, h, w), np.float32)
    for i in range(n):
        img = np.broadcast_to(rng.uniform(-1, 1, (c, 1, 1)), (c, h, w)).astype(np.float32).copy()
        for _ in range(int(rng.integers(2, 6))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.1, 0.4) * h, rng.uniform(0.1, 0.4) * w
            d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
            a = np.clip((1.0 - d) * min(ry, rx), 0.0, 1.0)  # soft edge of about one pixel
            img += (rng.uniform(-1, 1, (c, 1, 1)) - img) * a
        out[i] = img
    return out


def _strokes(rng, n: int, c: int, h: int, w: int) -> np.ndarray:
    """Sparse strokes on a flat background (0 background, 1 ink): one to three quadratic curves
    of random thickness through the middle of the image, edges anti-aliased."""
    pts = np.stack(np.mgrid[0:h, 0:w], -1).reshape(-1, 2).astype(np.float32) + 0.5
    s = np.linspace(0.0, 1.0, 24, dtype=np.float32)[:, None]
    size = np.array([h, w], np.float32)
    out = np.zeros((n, c, h, w), np.float32)
    for i in range(n):
        ink = np.zeros(h * w, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            p0, p1, p2 = (rng.uniform(0.15, 0.85, (3, 2)) * size).astype(np.float32)
            curve = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s ** 2 * p2  # [24, 2]
            d = np.sqrt(((pts[:, None, :] - curve[None]) ** 2).sum(-1)).min(1)
            half = rng.uniform(0.04, 0.09) * min(h, w)
            ink = np.maximum(ink, np.clip(half + 0.5 - d, 0.0, 1.0))
        out[i] = ink.reshape(h, w)[None]
    return out


def prior_images(kind: str, rng, shape, smooth: int = 3) -> np.ndarray:
    """``shape`` (N, C, H, W) samples of prior ``kind``, standardised over the whole set (mean 0,
    std 1 overall: per-image structure kept, as a dataset-normalised input has)."""
    n, c, h, w = (int(d) for d in shape)
    if kind == "smooth":
        return smooth_noise(rng, (n, c, h, w), smooth)
    if kind == "pink":
        x = _pink(rng, n, c, h, w)
    elif kind == "blobs":
        x = _blobs(rng, n, c, h, w)
    elif kind in ("strokes", "strokes-dark"):
        x = _strokes(rng, n, c, h, w)
        if c > 1:  # colour images: random background and ink colours per sample
            bg, fg = rng.uniform(0, 1, (2, n, c, 1, 1)).astype(np.float32)
            x = bg + (fg - bg) * x
        if kind == "strokes-dark":
            x = 1.0 - x
    else:
        raise ValueError(f"unknown prior {kind!r}")
    x = x - x.mean(dtype=np.float64)
    return (x / max(float(x.std(dtype=np.float64)), 1e-12)).astype(np.float32)


def network_score(logits: np.ndarray) -> float:
    """How much a set of inputs looks like data to the network: the mean top-1 probability
    (confident) times the entropy of the mean prediction over the log of the classes (diverse:
    noise tends to drive every sample to the same class). 0 for an output that is not a 2-D
    class score array."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[1] < 2 or not np.isfinite(z).all():
        return 0.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean = p.mean(0)
    diverse = float(-(mean * np.log(np.maximum(mean, 1e-12))).sum() / np.log(z.shape[1]))
    return float(p.max(1).mean()) * diverse


def channel_axis_first(x: np.ndarray, channel_axis: int) -> np.ndarray:
    """``x`` (channels-first) with its channels moved to ``channel_axis``."""
    return x if channel_axis == 1 else np.ascontiguousarray(np.moveaxis(x, 1, channel_axis))


def denormalise(x: np.ndarray, norm: Optional[Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Normalised-domain samples (channels-first) mapped to the raw input a graph normalising with
    ``norm`` expects."""
    if norm is None:
        return x
    mean, std = norm
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * std.reshape(shape) + mean.reshape(shape)).astype(x.dtype)


def class_balanced(logits: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` rows of ``logits``: round-robin over the predicted classes, most confident
    first within each (a set the network finds data-like and that spans its classes)."""
    z = np.asarray(logits, np.float64)
    cls = z.argmax(1)
    margin = -np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))  # log of the top-1 probability
    queues = [list(np.flatnonzero(cls == c)[np.argsort(-margin[cls == c], kind="stable")]) for c in np.unique(cls)]
    out: list = []
    while len(out) < min(n, len(z)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return np.asarray(out, dtype=np.int64)


@dataclass
class Chosen:
    """The synthetic inputs :func:`choose_inputs` picked, and why."""

    x: np.ndarray  # the statistics inputs (as the graph takes them)
    check: np.ndarray  # held-out inputs of the same prior, for the reliability estimate
    check_logits: np.ndarray  # the original network's outputs on them
    prior: str
    scores: Dict[str, float]  # network_score of each prior's trial set
    score: float  # network_score of the picked set


def bn_mismatch(bn_inputs, running) -> float:
    """How far the per-channel mean / spread of the BatchNorm inputs ``bn_inputs`` (arrays, channel
    axis 1) are from the running statistics ``running`` (``(mean, var)`` pairs) that real data gave:
    the mean over BNs of ``((mu - rm)^2 + (sd - rsd)^2) / rvar`` (DeepInversion's matching loss,
    as a check). 0 = the inputs reproduce the training statistics."""
    out = []
    for v, (rm, rv) in zip(bn_inputs, running):
        v = np.asarray(v, np.float64)
        axes = (0,) + tuple(range(2, v.ndim))
        rv = np.maximum(np.asarray(rv, np.float64), 1e-12)
        mu, sd = v.mean(axes), v.std(axes)
        out.append(float(np.mean(((mu - rm) ** 2 + (sd - np.sqrt(rv)) ** 2) / rv)))
    return float(np.mean(out)) if out else float("inf")


def choose_inputs(run, shape, n: int, n_check: int, norm, channel_axis: int, rng, smooth: int = 3,
                  pool: Optional[int] = None, kinds: Tuple[str, ...] = PRIORS) -> Optional[Chosen]:
    """Synthetic inputs for a graph without BatchNorm, chosen by the network: every prior of
    :data:`PRIORS` gets a small trial set, the one with the best :func:`network_score` a pool of
    ``pool * n`` samples, of which :func:`class_balanced` keeps ``n`` (and ``n_check`` more, held out).
    ``run(x)`` returns the logits of inputs ``x``; ``shape``: (C, H, W). None when the network gives
    no class scores (then no prior is better than another) or a run fails."""
    trial = max(TRIAL_LEAST, int(n * TRIAL_FRACTION))
    pool = POOL_FACTOR if pool is None else int(pool)

    def make(kind, k):
        x = denormalise(prior_images(kind, rng, (k,) + tuple(shape), smooth), norm)
        return channel_axis_first(x, channel_axis)

    try:
        scores = {kind: network_score(run(make(kind, trial))) for kind in kinds}
        best = max(kinds, key=lambda k: scores[k] + (PREFER_MARGIN if k == PREFERRED else 0.0))
        if scores[best] <= 0:
            return None
        xs = make(best, max(pool * n, n + n_check))
        z = np.asarray(run(xs))
    except Exception:  # a graph that cannot run batched, or a non-class output
        return None
    if z.ndim != 2:
        return None
    idx = class_balanced(z, n + n_check)
    return Chosen(xs[idx[:n]], xs[idx[n:]], z[idx[n:]], best, scores, network_score(z[idx[:n]]))


__all__ = ["Chosen", "choose_inputs", "bn_mismatch", "class_balanced", "PRIORS", "input_normalisation", "prior_images", "network_score", "denormalise",
           "channel_axis_first"]
