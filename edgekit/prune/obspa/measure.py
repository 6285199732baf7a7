"""The statistics pass: the model run under ONNX Runtime, the mean and covariance of every
consumer input measured on its outputs.

:func:`measure_moments` captures the inputs of the channel-mixing layers (and, for obspa-seq, their
outputs and the batch statistics of a :func:`~edgekit.prune.obspa.synthetic.batch_stat_bn` graph)
in runs of at most :data:`CHUNK_ELEMENTS` captured values (:func:`sample_chunks`), keeps a regular
subset of rows of each (:func:`_rows`) and shrinks covariances measured on few rows
(:func:`shrink_cov`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

from edgekit.errors import CalibrationError
from edgekit.graph.view import attr
from edgekit.prune.obspa.batch import with_dynamic_batch
from edgekit.prune.obspa.layers import ModelWeights, Moments
from edgekit.prune.obspa.synthetic import MIN_SYNTHETIC, bn_batch_stat_names, checked_calib, input_dtype
from edgekit.runtime.onnxruntime import ort_session

# Captured elements (float32) one ONNX Runtime run of the statistics pass may return: more samples
# than fit go in several runs, so memory stays bounded on big models / many calibration samples
# (2**26 elements = 256 MiB). Digits-size models run in one go (a MobileNetV2 at 32x32 returns
# ~0.7M elements per sample for obspa-seq); an ImageNet MobileNetV2 at 224x224 ~13M.
CHUNK_ELEMENTS = 2 ** 26
# Rows (pixels x samples) used for one covariance at most: max(MAX_COV_ROWS, COV_ROWS_PER_CHANNEL *
# channels); more only add time, not precision (neighbouring pixels are strongly correlated).
# 8192 / 8 would save 0.3-0.4 s on an ImageNet MobileNetV2 with the same output error (~1 %) there,
# but it moves digits accuracies of bench/prune_datafree.py by up to 0.9 points (its models see
# more rows than that): kept at 32768 / 32.
MAX_COV_ROWS = 32768
COV_ROWS_PER_CHANNEL = 32


def ort_threads() -> int:
    """ONNX Runtime intra-op threads for obspa's own forward passes: ``OMP_NUM_THREADS`` when the
    user set it (the same limit NumPy's BLAS obeys), otherwise 0 = ONNX Runtime's default (all
    physical cores)."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "0")), 0)
    except ValueError:
        return 0


def session(model):
    """An ONNX Runtime session for obspa's own passes (:func:`ort_threads` threads; failures come
    back as exceptions, with no log)."""
    return ort_session(model, intra_threads=ort_threads(), log_level=4)


@dataclass
class Measured:
    """What one statistics pass measured: the moments of every consumer input and, when asked
    for, the arrays obspa-seq refits to (``raw``: layer inputs and outputs; ``raw_bn``: batch
    means / variances keyed by the BatchNorm's running mean / var initializer)."""

    moments: Dict[str, Moments] = field(default_factory=dict)
    raw: Dict[str, np.ndarray] = field(default_factory=dict)
    raw_bn: Dict[str, np.ndarray] = field(default_factory=dict)
    one_by_one: bool = False  # the graph fixes its batch size: one sample per run


def measure_moments(weights: ModelWeights, x: np.ndarray, shapes: Dict[str, Tuple], model=None, source: str = "calib",
            private: bool = False, keep_raw: bool = False, raw_samples: int = 0) -> Measured:
    """Mean/covariance of every consumer input of ``weights.model`` on the samples ``x``, run
    through ``model`` (None: that model itself).

    ``private=True``: ``model`` is a throw-away copy that may be modified in place (saves a copy of
    all the weights on big models). ``keep_raw`` (a :func:`batch_stat_bn` model): also keep the
    arrays of :attr:`Measured.raw` and :attr:`Measured.raw_bn`, of the first ``raw_samples``
    samples."""
    base = weights.model if model is None else model
    own = model is not None and private
    wanted, n_moments, bn_dest = _capture_names(weights, base, keep_raw)
    m = with_dynamic_batch(base, copy=not own, shapes=shapes)
    have = {o.name for o in m.graph.output}
    _add_outputs(m, wanted, have)
    inputs = list(weights.inputs)
    if len(inputs) != 1:
        raise CalibrationError("calibration needs a model with exactly one input")
    in_name = inputs[0]
    x = checked_calib(x, input_dtype(base, in_name)) if source == "calib" else \
        np.asarray(x, dtype=input_dtype(base, in_name))
    n_all = len(x)
    chunks = sample_chunks(n_all, elements_per_sample(shapes, wanted),
                           first=raw_samples if keep_raw else None,
                           least=MIN_SYNTHETIC if source == "synthetic" else 1)
    base_outs = None if own else base  # own: m is base itself with the extra outputs
    sess, first_outs, one_by_one = _open(m, base_outs, wanted, have, in_name, x[chunks[0][0]:chunks[0][1]])
    out = Measured(one_by_one=one_by_one)
    # Rows of every consumer input, gathered chunk by chunk (the same regular subset of the
    # (sample, position) grid as one run over all samples would pick), then the moments.
    parts: Dict[str, List[np.ndarray]] = {t: [] for t in wanted[:n_moments]}
    for k, (i0, i1) in enumerate(chunks):
        if k == 0:
            outs = first_outs
            first_outs = None
        elif one_by_one:
            outs = _run_one_by_one(sess, wanted, in_name, x[i0:i1])
        else:
            outs = sess.run(wanted, {in_name: x[i0:i1]})
        if keep_raw and k == 0 and not one_by_one:  # obspa-seq's targets: the first chunk's samples
            for t, v in zip(wanted, outs):
                if t in bn_dest:
                    out.raw_bn[bn_dest[t]] = np.asarray(v, dtype=np.float32).reshape(-1)
                else:
                    out.raw[t] = v
        for t, v in zip(wanted[:n_moments], outs[:n_moments]):
            rows = _rows(np.asarray(v, dtype=np.float32), start=i0, total=n_all)
            if rows is not None:
                parts[t].append(rows)
        del outs
    for t, ps in parts.items():
        if not ps or len(ps) != len(chunks):
            continue
        flat = ps[0] if len(ps) == 1 else np.concatenate(ps)
        ps.clear()
        out.moments[t] = _row_moments(flat, source)
    return out


def _capture_names(weights: ModelWeights, base, keep_raw: bool) -> Tuple[List[str], int, Dict[str, str]]:
    """``(wanted, n_moments, bn_dest)``: the tensors to capture, the first ``n_moments`` of them
    the consumer inputs to measure; with ``keep_raw`` also every layer's input and output and the
    batch statistics ``base`` computes, ``bn_dest`` mapping those to the running statistics they
    stand for."""
    model, inits = weights.model, weights.inits
    wanted = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input and n.input[0] not in inits:
            if n.op_type == "Conv" and int(attr(n, "group", 1)) != 1:
                continue  # grouped / depthwise convs mix no channels: never compensated
            wanted.append(n.input[0])
    wanted = sorted(set(wanted))
    n_moments = len(wanted)
    bn_dest: Dict[str, str] = {}
    if keep_raw:
        raw = {t for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
               for t in (n.input[0], n.output[0]) if t not in inits}
        for k, n in enumerate(model.graph.node):  # the names batch_stat_bn gives its statistics
            if n.op_type == "BatchNormalization" and len(n.input) >= 5:
                mu, var = bn_batch_stat_names(k)
                bn_dest[mu], bn_dest[var] = n.input[3], n.input[4]
        have_t = {o for n in base.graph.node for o in n.output}
        wanted += sorted(raw - set(wanted)) + [t for t in bn_dest if t in have_t]
    return wanted, n_moments, bn_dest


def _add_outputs(m, names: List[str], have) -> None:
    """Make the tensors ``names`` graph outputs of ``m`` (those not in ``have`` already)."""
    for t in names:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))


def _open(m, base, wanted: List[str], have, in_name: str, first_x: np.ndarray):
    """``(session, outputs of the first run, one_by_one)``: a session of ``m`` (the dynamic-batch
    graph) and its run on ``first_x``; where that fails, a session of ``base`` as it is with the
    extra outputs (None: ``m`` is ``base`` already), run one sample at a time."""
    try:
        sess = session(m)
        return sess, sess.run(wanted, {in_name: first_x}), False
    except Exception:
        # The batch size is baked into the graph (a Reshape/Concat with a constant batch, as
        # in many transformer exports): feed the samples one by one to the model as it is.
        m1 = m
        if base is not None:
            m1 = onnx.ModelProto()
            m1.CopyFrom(base)
            _add_outputs(m1, wanted, have)
        try:
            sess = session(m1)
            return sess, _run_one_by_one(sess, wanted, in_name, first_x), True
        except Exception as exc:
            raise CalibrationError(f"calibration data does not fit the model: {exc}"[:300],
                                   hint="give an array shaped like the model input, batch first") from exc


def _run_one_by_one(sess, wanted, in_name, x):
    per = [sess.run(wanted, {in_name: x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([p[j] for p in per]) for j in range(len(wanted))]


def _row_moments(flat: np.ndarray, source: str) -> Moments:
    """Mean and covariance of the ``(rows, channels)`` samples ``flat`` (float32 products: 2x
    faster, ample for moments), shrunk when there are fewer rows than channels."""
    mean = flat.mean(axis=0, dtype=np.float64)
    d = flat - mean.astype(np.float32)
    cov = (d.T @ d).astype(np.float64) / max(len(flat) - 1, 1)
    lowrank = None
    if len(flat) < flat.shape[1]:  # fewer rows than channels (pooled tensors, few samples)
        cov, lam = shrink_cov(d, cov, return_weight=True)
        # shrunk cov = (1 - lam) d^T d / (rows - 1) + lam diag: low rank plus diagonal
        lowrank = (d.astype(np.float64) / math.sqrt(max(len(flat) - 1, 1)), 1.0 - lam,
                   lam * np.diag(cov))
    return Moments(mean, cov, source, lowrank)


def elements_per_sample(shapes: Dict[str, Tuple], names) -> int:
    """Elements one input sample makes in the captured tensors (0: some layer's shape is
    unknown; tensors shape inference does not know, the per-channel batch statistics of
    :func:`batch_stat_bn`, are small and not counted)."""
    total = 0
    for t in names:
        sh = shapes.get(t)
        if sh is None:
            continue
        if len(sh) < 2 or any(d is None or d <= 0 for d in sh[1:]):
            return 0
        total += int(np.prod(sh[1:]))
    return total


def sample_chunks(n: int, per_sample: int, first: Optional[int] = None, least: int = 1
                  ) -> List[Tuple[int, int]]:
    """``[(start, stop), ...]`` runs covering ``n`` samples, each returning at most
    ``CHUNK_ELEMENTS`` captured elements (``per_sample`` each; 0 = unknown: one run), but at least
    ``least`` samples per run (a batch-statistics BatchNorm needs a few). ``first``: the first run
    holds exactly that many samples (obspa-seq's refit samples, which must share one set of batch
    statistics), whatever its size."""
    if n <= 0:
        return [(0, 0)]
    size = n if per_sample <= 0 else max(int(least), CHUNK_ELEMENTS // per_sample, 1)
    out = []
    start = 0
    if first is not None and 0 < first <= n:
        out.append((0, int(first)))
        start = int(first)
    while start < n:
        stop = min(n, start + size)
        if 0 < n - stop < least:  # no short tail run
            stop = n
        out.append((start, stop))
        start = stop
    return out


def _rows(v: np.ndarray, start: int = 0, total: Optional[int] = None) -> Optional[np.ndarray]:
    """A captured activation as ``(rows, channels)``: channel axis 1 of a 4-D (NCHW) tensor, last
    axis of a 2-D / 3-D one; at most ``max(MAX_COV_ROWS, COV_ROWS_PER_CHANNEL * channels)`` rows,
    a regular subset of the ``(sample, pixel)`` positions when there are more (picked before the
    transpose, so only the rows kept are copied).

    ``v`` may be one run of several (:func:`sample_chunks`): it holds samples ``start ..`` of
    ``total`` (None: ``len(v)``), and gets the rows that a single run over all ``total`` samples
    would have picked among its own, so the chunks' rows together are that run's rows."""
    if v.ndim == 4:
        n, c = v.shape[:2]
        per = v.shape[2] * v.shape[3]
        src = v.reshape(n, c, per)
    elif v.ndim in (2, 3):
        n, c = v.shape[0], v.shape[-1]
        src = v.reshape(-1, c)
        per = len(src) // max(n, 1)
    else:
        return None
    total = n if total is None else int(total)
    grand = total * per
    cap = max(MAX_COV_ROWS, COV_ROWS_PER_CHANNEL * c)
    if grand <= cap:
        return np.moveaxis(src, 1, -1).reshape(-1, c) if v.ndim == 4 else src
    step = -(-grand // cap)
    lo = start * per
    first = -(-lo // step) * step  # the first picked position inside this run
    pos = np.arange(first, lo + n * per, step) - lo
    if v.ndim == 4:
        return src[pos // per, :, pos % per]
    return src[pos]


def shrink_cov(d: np.ndarray, cov: np.ndarray, return_weight: bool = False):
    """Ledoit-Wolf shrinkage of a sample covariance towards its diagonal.

    ``d`` are the centred samples (rows). With few rows per channel (a globally pooled tensor sees
    one row per image) the sample covariance is rank-deficient: every channel then looks exactly
    reconstructable from the others and OBS under-states the error of removing it. The shrinkage
    weight is estimated from the samples themselves (the variance of the entries of the sample
    covariance); with many rows it is ~0 and the covariance is left as measured.
    ``return_weight=True`` returns ``(shrunk cov, weight)``."""
    n = len(d)
    dg = np.diag(cov).copy()
    num = float(np.einsum("ij,ij->", cov, cov)) - float(dg @ dg)  # squared off-diagonal norm
    if n < 2 or num <= 0:
        return (cov, 0.0) if return_weight else cov
    # sum over samples of ||x x^T - S||_F^2 restricted to off-diagonal entries, over n^2
    sq = np.square(d.astype(np.float64, copy=False))
    row4 = np.square(sq.sum(axis=1)) - np.square(sq).sum(axis=1)  # ||x||^4 minus the diagonal part
    b2 = (float(row4.sum()) / n - num) / n
    lam = min(max(b2 / num, 0.0), 1.0)
    out = cov
    if lam > 0:
        out = (1.0 - lam) * cov
        out[np.diag_indices(len(dg))] += lam * dg
    return (out, lam) if return_weight else out
