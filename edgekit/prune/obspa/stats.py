"""``ObspaStats``: the statistics (mean and covariance) of every tensor a consumer of a model reads.

They are the Hessian proxy ``H = E[x x^T]`` of the OBS scoring and update: measured on
calibration data when given, else on synthetic inputs (:mod:`edgekit.prune.obspa.synthetic`) run
by :func:`edgekit.prune.obspa.measure.measure_moments`, else propagated in closed form
(:class:`edgekit.prune.obspa.analytic.AnalyticMoments`), memoised per tensor; and the notes and
warnings that tell the prune report where they came from.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from onnx import helper

from edgekit.errors import CalibrationError, UnsupportedError
from edgekit.graph.io import input_channel_axis
from edgekit.graph.shapes import infer_shapes
from edgekit.graph.view import QUANTIZED_OPS
from edgekit.prune.obspa.analytic import AnalyticMoments
from edgekit.prune.obspa.layers import ModelWeights, Moments
from edgekit.prune.obspa.batch import with_dynamic_batch
from edgekit.prune.obspa.measure import measure_moments, session
from edgekit.prune.obspa.priors import (
    PRIORS,
    Chosen,
    bn_mismatch,
    channel_axis_first,
    choose_inputs,
    denormalise,
    input_normalisation,
    prior_images,
)
from edgekit.prune.obspa.synthetic import (
    DEFAULT_SYNTHETIC,
    DEFAULT_SYNTHETIC_SMOOTH,
    MIN_SYNTHETIC,
    SYNTHETIC_MACS_BUDGET,
    assumed_image_shapes,
    batch_stat_bn,
    has_token_norm,
    input_dtype,
    samples_within,
    smooth_noise,
)

# Strength of the filter-similarity correlation model (0 = independent channels). Chosen by the
# measurement in bench/prune_datafree.py (the real correlations of trained nets are weaker than
# the spatially-white model says).
DEFAULT_ALPHA = 1.0
DEFAULT_DAMP = 0.01
# Correlation of neighbouring pixels assumed for feature maps (0 = spatially white), used for the
# channel correlations a conv / depthwise conv creates. Chosen by bench/prune_datafree.py.
DEFAULT_SPATIAL = 0.5
# Held-out synthetic inputs of the reliability estimate (no BN, no data): n / 2, at least this many.
CHECK_LEAST = 16
# With BN kept, image priors replace smooth noise when their BN-input statistics are closer to the
# running ones by this much (bn_mismatch, on BN_PRIOR_TRIAL samples per prior).
BN_PRIOR_MARGIN = 0.05
BN_PRIOR_TRIAL = 16
BN_PRIORS = "asis"


def check_not_quantized(model) -> None:
    ops = sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)
    if ops:
        raise UnsupportedError(
            f"obspa cannot compensate a quantised graph (found {', '.join(ops)}): its weight update "
            "would move weights off the INT8 grid",
            hint="prune the float model with --criterion obspa, then quantise; or use --criterion l1 here",
        )


class ObspaStats(ModelWeights):
    """Per-model statistics of every tensor a consumer reads (memoised), data-free or calibrated."""

    def __init__(self, model, alpha: float = DEFAULT_ALPHA, damp: float = DEFAULT_DAMP,
                 calib: Optional[np.ndarray] = None, n_samples: int = 2048,
                 spatial: Optional[float] = None, synthetic: Optional[int] = None,
                 synthetic_smooth: Optional[int] = None, keep_raw: bool = False,
                 raw_macs_budget: Optional[float] = None, raw_least: int = 1):
        check_not_quantized(model)
        super().__init__(model)
        self.alpha = float(alpha)
        self.damp = float(damp)
        self.spatial = DEFAULT_SPATIAL if spatial is None else float(spatial)
        self.synthetic = DEFAULT_SYNTHETIC if synthetic is None else int(synthetic)
        self.synthetic_smooth = DEFAULT_SYNTHETIC_SMOOTH if synthetic_smooth is None else int(synthetic_smooth)
        self.synthesized = False
        self.synthetic_used = 0
        # keep_raw: the synthetic pass also keeps, as arrays, every channel-mixing layer's input
        # and output (``raw``) and every BatchNorm's batch mean / variance keyed by its running
        # mean / var initializer (``raw_bn``): obspa-seq's targets, without running the graph again
        # of the first samples only, as many as ``raw_macs_budget`` multiply-accumulates of the graph
        # allow (at least ``raw_least``; None: all): the samples obspa-seq's refit runs on
        self.keep_raw = bool(keep_raw)
        self.raw_macs_budget = raw_macs_budget
        self.raw_least = int(raw_least)
        self.raw_samples = 0  # how many samples the arrays of raw hold
        self.raw: Dict[str, np.ndarray] = {}
        self.raw_bn: Dict[str, np.ndarray] = {}
        self.synthetic_x: Optional[np.ndarray] = None  # the synthetic inputs, kept with keep_raw
        # no BatchNorm: the image-prior inputs the network chose (priors.choose_inputs), with the
        # held-out ones of the reliability estimate; the normalisation found at the graph input
        self.chosen: Optional[Chosen] = None
        self.input_norm = None
        self.reliability = ""  # the report line of reliability.reliability_line, set after the prune
        # the statistics pass had to feed one sample per run (the graph fixes its batch size in a
        # way free_batch_shapes does not undo): batch statistics are then per sample
        self.one_by_one = False
        self.n_samples = int(n_samples)
        self.shapes = self._shapes()
        # symbolic height / width of an image input: the synthetic pass assumes a size, and the
        # shapes are those of that size (the samples per run, the MACs budget, Flatten mappings)
        self.assumed_size: Optional[Tuple[int, ...]] = None
        if calib is None and self.synthetic > 0:
            self._assume_image_size()
        self._cache: Dict[str, Optional[Moments]] = {}
        self.analytic = AnalyticMoments(self, self.shapes, self.moments, self.alpha, self.spatial, self.n_samples)
        self.has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
        self.has_token_norm = has_token_norm(model)
        self.calibrated = calib is not None
        self.calib_moments: Dict[str, Moments] = {}
        if calib is not None:
            self._collect_calib(calib)
        elif self.synthetic > 0:
            self.synthesized = self.collect_synthetic(self.synthetic)

    @property
    def unknown_ops(self) -> set:
        """Ops the closed-form moments have no rule for (met so far)."""
        return self.analytic.unknown_ops

    def _shapes(self) -> Dict[str, Tuple]:
        """Static shapes of the model's tensors, where inference knows them (else the inputs')."""
        shapes: Dict[str, Tuple] = {}
        try:  # without copying the weights (graph.shapes), which dominates on big models
            shapes.update(infer_shapes(self.model))
        except Exception:  # shapes are only a help (Flatten of spatial maps)
            for vi in self.model.graph.input:
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                        for d in vi.type.tensor_type.shape.dim)
        return shapes

    def _assume_image_size(self) -> None:
        """With one 4-D input whose channels are known but whose height / width are symbolic, take
        them as :data:`ASSUMED_IMAGE_SIZE` for the synthetic pass (the batch stays symbolic) and
        use the shapes of that size."""
        if len(self.inputs) != 1:
            return
        vi = next(iter(self.inputs.values()))
        got = assumed_image_shapes(self.model, vi)
        if got is None:
            return
        shapes, shape, self.assumed_size = got
        self.shapes.update(shapes)
        self.shapes[vi.name] = shape

    def report_lines(self, sources: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
        """``(notes, warnings)`` about where the statistics came from, for the prune report.

        ``sources`` are the per-group statistics sources (:attr:`GroupDecision.source`).
        """
        notes = self._source_notes()
        counts: Dict[str, int] = {}
        for s in sources:
            counts[s] = counts.get(s, 0) + 1
        if counts:
            notes.append("obspa statistics per group: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        warns = []
        if self.reliability:  # no BN, no data, the inputs chosen by the network: the measured estimate
            warns.append(self.reliability)
        elif self.chosen is not None and not self.has_token_norm and not self.has_bn:
            warns.append("obspa: no BatchNormalization and no --calib: statistics from image-prior inputs the network "
                         "chose; the report estimates the result's reliability (--calib with unlabelled inputs fixes it)")
        elif not self.has_bn and not self.calibrated and not self.has_token_norm:
            warns.append(self._no_bn_warning())
        if self.unknown_ops:
            warns.append("obspa: no Gaussian statistics through " + ", ".join(sorted(self.unknown_ops))
                         + "; groups behind them fall back to consumer-weight magnitude without compensation")
        if counts.get("none"):
            warns.append(f"obspa: {counts['none']} group(s) had no statistics: magnitude fallback, not compensated")
        return notes, warns

    def _source_notes(self) -> List[str]:
        notes = []
        if self.calibrated:
            notes.append("obspa: Hessian from calibration data (mean/covariance of each consumer input)")
        elif self.synthesized and self.chosen is not None:
            c = self.chosen
            where = ("mapped through the normalisation at the graph input" if self.input_norm is not None
                     else "standardised (no normalisation in the graph: the input is assumed normalised)")
            notes.append(f"obspa: Hessian from {self.synthetic_used} synthetic '{c.prior}' image-prior inputs, "
                         f"chosen by the network among {', '.join(f'{k} {v:.2f}' for k, v in c.scores.items())} "
                         f"(confident, diverse predictions), {where}, run through the model as it is; "
                         + ("their BatchNorm-input statistics match the running ones better than smooth noise; "
                            if self.has_bn else "no BatchNorm, ") + "no real data")
        elif self.synthesized and self.has_bn:
            notes.append(f"obspa: Hessian from {self.synthetic_used} synthetic smooth-noise inputs run with "
                         "batch-statistics BatchNorm (no real data)")
        elif self.synthesized and self.has_token_norm:
            notes.append(f"obspa: Hessian from {self.synthetic_used} synthetic smooth-noise inputs run through the "
                         "model as it is (no BatchNorm; its LayerNorm/GroupNorm keep activations normalised; "
                         "no real data)")
        elif self.synthesized:
            notes.append(f"obspa: Hessian from {self.synthetic_used} synthetic smooth-noise inputs run through the "
                         "model as it is (no normalisation layer; no real data)")
        if self.synthesized and self.assumed_size:
            notes.append("obspa: the input's height / width are symbolic; the synthetic inputs are "
                         f"{'x'.join(str(d) for d in self.assumed_size)} (assumed)")
        return notes

    def _no_bn_warning(self) -> str:
        folded = any(n.op_type == "Conv" and len(n.input) > 2 and n.input[2] for n in self.model.graph.node)
        what = ("no BatchNormalization node: BN looks folded into the conv weights/biases"
                if folded else "no BatchNormalization in the graph")
        if self.synthesized:
            how = ("statistics come from synthetic inputs run through the model as it is, which assumes "
                   "inputs normalised to zero mean and unit variance and matches no training statistics: "
                   "expect a larger accuracy drop than with BN (bench/prune_datafree.py --folded)")
        else:
            how = ("statistics are weight-only estimates propagated from a standardised input, which are "
                   "much weaker than BN statistics: expect a larger accuracy drop")
        return (f"obspa: {what}; {how}. Export with BN kept (edgekit export --keep-bn, or "
                "torch.onnx.export(..., training=TrainingMode.PRESERVE), or with dynamo=True, "
                "optimize=False: its optimiser folds BN) or pass --calib")

    def moments(self, tensor: str) -> Optional[Moments]:
        """The statistics of ``tensor``: measured where the statistics pass captured it, else in
        closed form (None where there are none)."""
        if tensor in self.calib_moments:
            return self.calib_moments[tensor]
        if tensor not in self._cache:
            self._cache[tensor] = None  # cycle guard
            try:
                self._cache[tensor] = self.analytic.compute(tensor)
            except (ValueError, np.linalg.LinAlgError, IndexError):
                self._cache[tensor] = None
        return self._cache[tensor]

    def collect_synthetic(self, n: int = 64, seed: int = 0) -> bool:
        """Data-free moments from the network itself: random inputs run through a copy of the
        graph whose BatchNorms normalise with the *batch* statistics (training-mode BN), so every
        BN output has exactly the mean ``beta`` and spread ``gamma`` the running statistics
        promise, while the correlations between channels, across space and across residual
        branches are those the actual weights create. A graph without BN (LayerNorm / GroupNorm,
        or BN folded into the convolutions) runs as it is: the inputs are standard-normal, the
        usual normalised input, and the weights set the activations' scale (measured on the
        digits convnets exported with BN folded: far closer than the weight-only propagation,
        bench/prune_datafree.py --folded). Returns False (analytic moments stay) when the graph
        has not exactly one input of static shape, or the run fails."""
        if len(self.inputs) != 1:
            return False
        name = next(iter(self.inputs))
        shape = self.shapes.get(name, ())
        if len(shape) < 2 or any(d is None or d <= 0 for d in shape[1:]):
            return False
        macs = self.macs_per_sample()
        # big models: fewer samples (high-resolution maps still give many rows per channel; the
        # covariances with few rows per channel are shrunk, see shrink_cov)
        n = samples_within(n, macs, SYNTHETIC_MACS_BUDGET, MIN_SYNTHETIC)
        self.synthetic_used = int(n)
        if self.keep_raw:
            self.raw_samples = n if self.raw_macs_budget is None else samples_within(
                n, macs, self.raw_macs_budget, self.raw_least)
        cax = input_channel_axis(self.model, name, shape)
        # image-prior inputs chosen by the network (with BN: only when their BN-input statistics
        # match the running ones clearly better than smooth noise does, see _bn_prior)
        x = self._prior_inputs(name, shape, int(n), cax, seed) if len(shape) == 4 else None
        as_is = self.has_bn and x is not None  # priors that match the BN statistics: the real network
        if x is None:
            rng = np.random.default_rng(seed)
            x = smooth_noise(rng, (int(n),) + tuple(int(d) for d in shape[1:]), self.synthetic_smooth, cax)
        if self.keep_raw:
            self.synthetic_x = x
        try:
            ranks = {k: len(v) for k, v in self.shapes.items()}
            run_model = None if as_is else batch_stat_bn(self.model, ranks)
            self._collect_calib(x, model=run_model, source="synthetic", private=run_model is not None,
                                keep_raw=self.keep_raw)
        except CalibrationError:
            self.calib_moments, self.raw, self.raw_bn, self.raw_samples = {}, {}, {}, 0
            return False
        if any(not (np.isfinite(m.mean).all() and np.isfinite(m.cov).all()) for m in self.calib_moments.values()):
            self.calib_moments, self.raw, self.raw_bn, self.raw_samples = {}, {}, {}, 0  # e.g. a batch-1-only
            return False  # graph: batch statistics are degenerate
        return True

    def _prior_inputs(self, name: str, shape, n: int, cax: int, seed: int) -> Optional[np.ndarray]:
        """Image-prior inputs chosen by the network (:func:`choose_inputs`) for a graph without
        BatchNorm, in the domain a normalisation at its input expects; None (smooth noise then)
        when the network gives no class scores to choose by."""
        chw = tuple(int(shape[a]) for a in range(1, 4) if a != cax)
        chw = (int(shape[cax]),) + chw
        norm = input_normalisation(self.model, name, chw[0])
        dtype = input_dtype(self.model, name)
        try:
            sess = session(with_dynamic_batch(self.model, shapes=self.shapes))
        except Exception:
            return None
        out = sess.get_outputs()[0].name

        def run(x):  # in runs of a few samples: bounded memory on big models
            return np.concatenate([sess.run([out], {name: x[i:i + 16].astype(dtype)})[0]
                                   for i in range(0, len(x), 16)])

        kinds = PRIORS
        if self.has_bn:
            best = self._bn_prior(name, chw, cax, norm, dtype, seed)
            if best is None:
                return None
            kinds = (best,)
        got = choose_inputs(run, chw, n, max(CHECK_LEAST, n // 2), norm, cax, np.random.default_rng(seed),
                            self.synthetic_smooth, kinds=kinds)
        if got is None:
            return None
        self.chosen, self.input_norm = got, norm
        return got.x

    def _bn_prior(self, name: str, chw, cax: int, norm, dtype, seed: int) -> Optional[str]:
        """With BN kept: the prior whose inputs, run through the model as it is, give BN inputs
        closest to the running statistics (:func:`bn_mismatch`), when it beats smooth noise by
        :data:`BN_PRIOR_MARGIN`; None (smooth noise through batch-statistics BN, as before) otherwise.
        Measured: smooth noise matches edgekit's own digits models (0.06-0.1), blobs the models of
        bench/_datafree_recipes.py (0.10-0.12 against 0.24-0.89 for smooth noise)."""
        bns = [n for n in self.model.graph.node if n.op_type == "BatchNormalization"
               and n.input[3] in self.inits and n.input[4] in self.inits]
        if not bns:
            return None
        m = with_dynamic_batch(self.model, shapes=self.shapes)
        have = {o.name for o in m.graph.output}
        for t in dict.fromkeys(n.input[0] for n in bns):
            if t not in have:
                m.graph.output.append(helper.make_empty_tensor_value_info(t))
        running = [(self.inits[n.input[3]], self.inits[n.input[4]]) for n in bns]
        try:
            sess = session(m)
            rng = np.random.default_rng(seed)
            miss = {}
            for kind in PRIORS:
                x = channel_axis_first(denormalise(prior_images(kind, rng, (BN_PRIOR_TRIAL,) + tuple(chw),
                                                                self.synthetic_smooth), norm), cax)
                vals = sess.run([n.input[0] for n in bns], {name: x.astype(dtype)})
                miss[kind] = bn_mismatch(vals, running)
        except Exception:
            return None
        best = min(PRIORS, key=lambda k: miss[k])
        return None if best == "smooth" or miss["smooth"] - miss[best] < BN_PRIOR_MARGIN else best

    def _collect_calib(self, x: np.ndarray, model=None, source: str = "calib", private: bool = False,
                       keep_raw: bool = False) -> None:
        """Measure mean/covariance of every consumer input on real data (:func:`measure_moments`), through
        ``model`` when given (``private``: a throw-away copy to change in place)."""
        got = measure_moments(self, x, self.shapes, model=model, source=source, private=private, keep_raw=keep_raw,
                      raw_samples=self.raw_samples)
        self.one_by_one = self.one_by_one or got.one_by_one
        self.calib_moments.update(got.moments)
        self.raw.update(got.raw)
        self.raw_bn.update(got.raw_bn)

    def macs_per_sample(self) -> float:
        """Multiply-accumulates of the Conv / Gemm / MatMul nodes for one input sample (0 when the
        shapes are unknown)."""
        total = 0.0
        for n in self.model.graph.node:
            if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2:
                continue
            w = self.inits.get(n.input[1])
            out = self.shapes.get(n.output[0])
            if w is None or not out or any(d is None for d in out[1:]):
                continue
            total += float(w.size) * float(np.prod(out[2:])) if n.op_type == "Conv" else float(w.size) * float(
                np.prod(out[1:-1]) if len(out) > 2 else 1.0)
        return total
