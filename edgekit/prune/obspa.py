"""``obspa``: prune after training with neither fine-tuning nor data.

Two halves, both per coupled channel group of the graph-level pruner:

* **criterion** — a channel's score is the expected error it adds to the outputs of the layers
  that consume the group, *after* the best compensation (Optimal Brain Surgeon with a Hessian
  proxy ``H = E[x x^T]`` of the consumer's input), measured relative to each consumer output's
  own spread so that scores of different layers compare for a global threshold;
* **update** — before the channels are cut, each consumer's kept input columns absorb the removed
  ones' linear reconstruction (``x_S ~ R x_K + c0``) and its bias absorbs their expected value.

The Hessian proxy comes from the weights alone (:class:`ObspaStats`). By default, when the graph
has BatchNorm and no ``calib`` is given, it is *measured* on synthetic inputs: 64 smooth-noise
images (box-blurred Gaussian noise, a generic image prior) run through a copy of the graph whose
BatchNorms normalise with batch statistics (:func:`batch_stat_bn`), so every BN output has the mean
``beta`` and spread ``gamma`` its running statistics promise while the cross-channel, spatial and
residual-branch correlations are those the real weights create. That is what made the depthwise /
inverted-residual nets work (bench/prune_datafree.py: mobilenetv2 at 0.67 FLOPs 59.6% -> 96.0%).
The closed-form model below is the fallback (no BN, dynamic input shape) and the
``obspa-analytic`` criterion:

* a BatchNorm output channel is ``N(beta, gamma^2)`` (its running statistics were measured on the
  training data); channel *correlations* come from the producing conv's filters (two filters that
  look alike give correlated outputs): ``corr(sum_pq W_p C_in W_q^T R_pq)`` with neighbouring
  pixels correlated ``R = spatial ** distance`` (``DEFAULT_SPATIAL``), shrunk towards the
  identity by ``alpha``;
* activations map the Gaussian moments in closed form (ReLU, ReLU6, LeakyReLU) or by quadrature
  (SiLU, GELU, sigmoid, hardswish, ...), cross-channel covariances by Mehler's series
  (:func:`edgekit.prune.moments.correlated_act_moments`); sums (residuals) add moments; LayerNorm outputs are
  ``N(beta, gamma^2)`` per feature;
* with no BatchNorm (never had one, or folded into the conv) the moments are propagated through
  the conv weights from the previous known statistics (``weight-only``; graph inputs are taken as
  standardised). That is a weaker model, and the report says so per group;
* with ``calib`` (real inputs) the same update uses the measured mean and covariance instead.

Quantised graphs (QDQ or integer ops) are refused: the update moves weights off their INT8 grid.
Prune the float model, then quantise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import CalibrationError, UnsupportedError
from edgekit.graph.io import input_channel_axis
from edgekit.prune import moments as mom
from edgekit.prune import obspa_math as om

QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul"}
_PASS_THROUGH = {"Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "GlobalMaxPool", "Cast", "Pad", "Resize", "Upsample", "Squeeze", "Unsqueeze"}
_SIMPLE_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus",
                "HardSwish": "hardswish", "Gelu": "gelu"}

# Strength of the filter-similarity correlation model (0 = independent channels). Chosen by the
# measurement in bench/prune_datafree.py (the real correlations of trained nets are weaker than
# the spatially-white model says).
DEFAULT_ALPHA = 1.0
DEFAULT_DAMP = 0.01
# Correlation of neighbouring pixels assumed for feature maps (0 = spatially white), used for the
# channel correlations a conv / depthwise conv creates. Chosen by bench/prune_datafree.py.
DEFAULT_SPATIAL = 0.5
# Synthetic inputs (graphs with BN, no --calib): how many, and their spatial smoothness (box blur
# width). Chosen by bench/prune_datafree.py; 0 samples = analytic Gaussian moments only.
DEFAULT_SYNTHETIC = 64
DEFAULT_SYNTHETIC_SMOOTH = 3
# Multiply-accumulates the synthetic forward pass may spend (samples x MACs per sample): digits-size
# models get all DEFAULT_SYNTHETIC samples, an ImageNet ResNet-18 8, a ResNet-50 MIN_SYNTHETIC.
# A trade between the statistics' quality and time: as a command, obspa then takes 2.2-4.2x l1's time
# on ImageNet ResNet-18/50 and MobileNetV2 (bench/prune_datafree.py --time-onnx), 1.2x on digits models.
SYNTHETIC_MACS_BUDGET = 16e9
MIN_SYNTHETIC = 4
# An image input whose height / width are symbolic (exported with dynamic axes) gets synthetic
# inputs of this size (the usual ImageNet resolution; a multiple of 32, as detection backbones need).
ASSUMED_IMAGE_SIZE = 224


@dataclass
class Moments:
    mean: np.ndarray
    cov: np.ndarray
    source: str  # "bn", "ln", "weight-only", "assumed-input", "calib", combined with "+"
    # (u, a, diag) when cov == a * u.T @ u + diag(diag) with few rows u (fewer than channels): lets
    # obspa_math.precision invert it in O(n^2 r) (Woodbury)
    lowrank: Optional[tuple] = None


@dataclass
class Consumer:
    """A layer that mixes the group's channels: its input as a ``(rows, n_in)`` matrix."""

    node: object
    input_name: str
    kind: str  # conv | gemm | matmul
    wmat: np.ndarray
    n_out: int
    weight_name: str
    bias: Optional[np.ndarray]
    bias_name: Optional[str]
    # where the bias is an input: (node, input slot); the consumer itself, slot 2, for Conv / Gemm
    # (also when it has none yet), the Add after a MatMul; None: a bare MatMul, nowhere to put one
    bias_at: Optional[Tuple[object, int]] = None
    bias_scale: float = 1.0  # Gemm's beta: the stored bias is ``bias / bias_scale``


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def check_not_quantized(model) -> None:
    ops = sorted({n.op_type for n in model.graph.node} & QUANT_OPS)
    if ops:
        raise UnsupportedError(
            f"obspa cannot compensate a quantised graph (found {', '.join(ops)}): its weight update "
            "would move weights off the INT8 grid",
            hint="prune the float model with --criterion obspa, then quantise; or use --criterion l1 here",
        )


class ObspaStats:
    """Per-model statistics of every tensor a consumer reads (memoised), data-free or calibrated."""

    def __init__(self, model, alpha: float = DEFAULT_ALPHA, damp: float = DEFAULT_DAMP,
                 calib: Optional[np.ndarray] = None, n_samples: int = 2048,
                 spatial: Optional[float] = None, synthetic: Optional[int] = None,
                 synthetic_smooth: Optional[int] = None, keep_raw: bool = False,
                 raw_macs_budget: Optional[float] = None, raw_least: int = 1):
        from onnx import numpy_helper

        check_not_quantized(model)
        self.model = model
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
        # the statistics pass had to feed one sample per run (the graph fixes its batch size in a
        # way free_batch_shapes does not undo): batch statistics are then per sample
        self.one_by_one = False
        self.n_samples = int(n_samples)
        self.inits: Dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:  # Constant nodes hold weights too
            if n.op_type == "Constant" and n.output:
                v = _attr(n, "value")
                if v is not None:
                    self.inits[n.output[0]] = numpy_helper.to_array(v)
        self.node_consts: Dict[Tuple[int, int], np.ndarray] = {}  # (id(node), slot) -> updated value
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.users: Dict[str, list] = {}
        for n in model.graph.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.inputs = {i.name: i for i in model.graph.input if i.name not in self.inits}
        self.shapes: Dict[str, Tuple] = {}
        try:  # without copying the weights (graph.shapes), which dominates on big models
            from edgekit.graph.shapes import infer_shapes

            self.shapes.update(infer_shapes(model))
        except Exception:  # shapes are only a help (Flatten of spatial maps)
            for vi in model.graph.input:
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                             for d in vi.type.tensor_type.shape.dim)
        # symbolic height / width of an image input: the synthetic pass assumes a size, and the
        # shapes are those of that size (the samples per run, the MACs budget, Flatten mappings)
        self.assumed_size: Optional[Tuple[int, ...]] = None
        if calib is None and self.synthetic > 0:
            self._assume_image_size()
        self._cache: Dict[str, Optional[Moments]] = {}
        self.unknown_ops: set = set()
        self.has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
        self.has_token_norm = has_token_norm(model)
        self.calibrated = calib is not None
        self.calib_moments: Dict[str, Moments] = {}
        if calib is not None:
            self._collect_calib(calib)
        elif self.synthetic > 0:
            self.synthesized = self.collect_synthetic(self.synthetic)

    def _assume_image_size(self) -> None:
        """With one 4-D input whose channels are known but whose height / width are symbolic, take
        them as :data:`ASSUMED_IMAGE_SIZE` for the synthetic pass (the batch stays symbolic) and
        infer the shapes of that size."""
        if len(self.inputs) != 1:
            return
        vi = next(iter(self.inputs.values()))
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != 4:
            return
        known = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        cax = input_channel_axis(self.model, vi.name, known)
        spatial = [ax for ax in (1, 2, 3) if ax != cax]
        if not dims[cax].HasField("dim_value") or all(dims[ax].HasField("dim_value") for ax in spatial):
            return
        from edgekit.graph.shapes import infer_shapes, light_copy

        lm = light_copy(self.model)
        for v in lm.graph.input:
            if v.name == vi.name:
                for ax in spatial:
                    d = v.type.tensor_type.shape.dim[ax]
                    if not d.HasField("dim_value"):
                        d.dim_value = ASSUMED_IMAGE_SIZE
                shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
        try:
            shapes = infer_shapes(lm)
        except Exception:
            return
        self.shapes.update(shapes)
        self.shapes[vi.name] = shape
        self.assumed_size = tuple(int(shape[ax]) for ax in spatial)

    def report_lines(self, sources: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
        """``(notes, warnings)`` about where the statistics came from, for the prune report.

        ``sources`` are the per-group statistics sources (:attr:`GroupDecision.source`).
        """
        notes, warns = [], []
        if self.calibrated:
            notes.append("obspa: Hessian from calibration data (mean/covariance of each consumer input)")
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
        counts: Dict[str, int] = {}
        for s in sources:
            counts[s] = counts.get(s, 0) + 1
        if counts:
            notes.append("obspa statistics per group: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        if not self.has_bn and not self.calibrated and not self.has_token_norm:
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
            warns.append(f"obspa: {what}; {how}. Export with BN kept (edgekit export --keep-bn, or "
                         "torch.onnx.export(..., training=TrainingMode.PRESERVE), or with dynamo=True, "
                         "optimize=False: its optimiser folds BN) or pass --calib")
        if self.unknown_ops:
            warns.append("obspa: no Gaussian statistics through " + ", ".join(sorted(self.unknown_ops))
                         + "; groups behind them fall back to consumer-weight magnitude without compensation")
        if counts.get("none"):
            warns.append(f"obspa: {counts['none']} group(s) had no statistics: magnitude fallback, not compensated")
        return notes, warns

    # ---- weights -----------------------------------------------------------------------------
    def node_const(self, node, slot: int) -> Optional[np.ndarray]:
        """The constant ``node`` reads at input ``slot``, with this run's updates (kept per node:
        a tensor shared with other layers changes for this node only)."""
        v = self.node_consts.get((id(node), slot))
        if v is not None:
            return v
        return self.weight(node.input[slot]) if slot < len(node.input) and node.input[slot] else None

    def weight(self, name: str) -> Optional[np.ndarray]:
        """An initializer, also behind Identity / Cast nodes."""
        seen = 0
        while name not in self.inits and name in self.producer and seen < 4:
            n = self.producer[name]
            if n.op_type not in ("Identity", "Cast"):
                return None
            name = n.input[0]
            seen += 1
        w = self.inits.get(name)
        return None if w is None else np.asarray(w, dtype=np.float64)

    # ---- moments -----------------------------------------------------------------------------
    def moments(self, tensor: str) -> Optional[Moments]:
        if tensor in self.calib_moments:
            return self.calib_moments[tensor]
        if tensor not in self._cache:
            self._cache[tensor] = None  # cycle guard
            try:
                self._cache[tensor] = self._compute(tensor)
            except (ValueError, np.linalg.LinAlgError, IndexError):
                self._cache[tensor] = None
        return self._cache[tensor]

    def _compute(self, t: str) -> Optional[Moments]:
        if t in self.inputs:
            shape = self.shapes.get(t, ())
            c = shape[1] if len(shape) > 1 else None
            if not c:
                return None
            # Images are usually standardised per channel: zero mean, unit variance.
            return Moments(np.zeros(c), np.eye(c), "assumed-input")
        node = self.producer.get(t)
        if node is None:
            return None
        op = node.op_type
        if op == "BatchNormalization":
            return self._bn(node)
        if op == "LayerNormalization":
            gamma = self.weight(node.input[1])
            beta = self.weight(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if gamma is None or gamma.ndim != 1:
                return None
            beta = np.zeros_like(gamma) if beta is None else beta
            m, c = mom.bn_output_moments(gamma, beta)
            return Moments(m, c, "ln")
        if op in _SIMPLE_ACTS or op in ("Clip", "LeakyRelu", "HardSigmoid", "Elu"):
            return self._act(node)
        if op == "Mul":
            return self._mul(node)
        if op in ("Add", "Sum"):
            return self._add(node)
        if op in ("Conv", "Gemm", "MatMul"):
            return self._linear(node)
        if op == "Concat":
            axis = _attr(node, "axis", 1)
            rank = len(self.shapes.get(t, ()) or ())
            if axis not in (1, -1 if rank == 3 else 1):
                return None
            parts = [self.moments(i) for i in node.input]
            if any(p is None for p in parts):
                return None
            mean = np.concatenate([p.mean for p in parts])
            cov = np.zeros((len(mean), len(mean)))
            o = 0
            for p in parts:
                k = len(p.mean)
                cov[o:o + k, o:o + k] = p.cov
                o += k
            return Moments(mean, cov, "+".join(sorted({p.source for p in parts})))
        if op == "Flatten":
            src = self.moments(node.input[0])
            if src is None:
                return None
            ishape = self.shapes.get(node.input[0], ())
            hw = int(np.prod(ishape[2:])) if len(ishape) > 2 and all(ishape[2:]) else 1
            if hw == 1:
                return src
            return Moments(np.repeat(src.mean, hw), np.kron(src.cov, np.eye(hw)), src.source)
        if op in _PASS_THROUGH or op == "ReduceMean":
            return self.moments(node.input[0])
        self.unknown_ops.add(op)
        return None

    def _bn(self, node) -> Optional[Moments]:
        gamma = self.weight(node.input[1])
        beta = self.weight(node.input[2])
        if gamma is None or beta is None:
            return None
        corr = None
        if self.alpha > 0:
            prod = self.producer.get(node.input[0])
            if prod is not None and prod.op_type == "Conv":
                w = self.weight(prod.input[1])
                if w is not None and w.shape[0] == len(gamma):
                    group = int(_attr(prod, "group", 1))
                    src = self.moments(prod.input[0])
                    cin = src.cov if src is not None and len(src.cov) == w.shape[1] * group else np.eye(w.shape[1] * group)
                    corr = mom.shrink_corr(mom.cov_to_corr(mom.conv_output_cov(w, cin, group, self.spatial)), self.alpha)
        m, c = mom.bn_output_moments(gamma, beta, corr)
        return Moments(m, c, "bn")

    def _apply_act(self, name: str, src: Moments, **params) -> Moments:
        m, c = mom.correlated_act_moments(name, src.mean, src.cov, n_samples=self.n_samples, **params)
        return Moments(m, c, src.source)

    def _act(self, node) -> Optional[Moments]:
        src = self.moments(node.input[0])
        if src is None:
            return None
        op = node.op_type
        if op == "Clip":
            lo = _attr(node, "min", -math.inf)
            hi = _attr(node, "max", math.inf)
            if len(node.input) > 1 and node.input[1]:
                v = self.weight(node.input[1])
                lo = float(v) if v is not None else lo
            if len(node.input) > 2 and node.input[2]:
                v = self.weight(node.input[2])
                hi = float(v) if v is not None else hi
            return self._apply_act("clip", src, lo=float(lo), hi=float(hi))
        if op == "LeakyRelu":
            return self._apply_act("leakyrelu", src, alpha=float(_attr(node, "alpha", 0.01)))
        if op == "HardSigmoid":
            return self._apply_act("hardsigmoid", src, alpha=float(_attr(node, "alpha", 0.2)),
                                   beta=float(_attr(node, "beta", 0.5)))
        if op == "Elu":
            return self._apply_act("elu", src, alpha=float(_attr(node, "alpha", 1.0)))
        return self._apply_act(_SIMPLE_ACTS[op], src)

    def _mul(self, node) -> Optional[Moments]:
        # x * sigmoid(x) (SiLU / Swish) and x * hardsigmoid(x) (hardswish); other products (SE
        # gating, attention) have no Gaussian closed form here.
        a, b = node.input[0], node.input[1]
        for x, g in ((a, b), (b, a)):
            gn = self.producer.get(g)
            if gn is not None and gn.input and gn.input[0] == x:
                src = self.moments(x)
                if src is None:
                    return None
                if gn.op_type == "Sigmoid":
                    return self._apply_act("silu", src)
                if gn.op_type == "HardSigmoid":
                    return self._apply_act("hardswish", src)
        const = [self.weight(i) for i in node.input]
        if const[1] is not None and const[0] is None:
            src, k = self.moments(a), const[1]
        elif const[0] is not None and const[1] is None:
            src, k = self.moments(b), const[0]
        else:
            return None
        if src is None:
            return None
        k = _per_channel(k, len(src.mean))
        if k is None:
            return None
        return Moments(src.mean * k, src.cov * np.outer(k, k), src.source)

    def _add(self, node) -> Optional[Moments]:
        parts, consts = [], []
        for i in node.input:
            w = self.weight(i)
            if w is not None:
                consts.append(w)
            else:
                parts.append(self.moments(i))
        if not parts or any(p is None for p in parts):
            return None
        n = len(parts[0].mean)
        if any(len(p.mean) != n for p in parts):
            return None
        mean = sum(p.mean for p in parts)
        cov = sum(p.cov for p in parts)  # branches taken as independent
        for k in consts:
            kk = _per_channel(k, n)
            if kk is None:
                return None
            mean = mean + kk
        return Moments(mean, cov, "+".join(sorted({p.source for p in parts})))

    def _linear(self, node) -> Optional[Moments]:
        src = self.moments(node.input[0])
        cons = self.consumer(node, node.input[0])
        if src is None or cons is None:
            return None
        if cons.wmat.shape[1] != len(src.mean):
            return None
        k = cons.wmat.shape[0] // cons.n_out
        w3 = cons.wmat.reshape(cons.n_out, k, -1)
        mean = w3.sum(axis=1) @ src.mean
        if cons.bias is not None:
            mean = mean + cons.bias
        t = np.einsum("okc,cd->okd", w3, src.cov, optimize=True)
        cov = t.reshape(cons.n_out, -1) @ w3.reshape(cons.n_out, -1).T
        return Moments(mean, cov, "weight-only")

    # ---- consumers -----------------------------------------------------------------------------
    def consumer(self, node, input_name: str) -> Optional[Consumer]:
        """The consumer as a ``(rows, n_in)`` matrix, or None if it does not mix channels."""
        op = node.op_type
        if op == "Conv" and node.input[0] == input_name:
            w = self.node_const(node, 1)
            if w is None or int(_attr(node, "group", 1)) != 1:
                return None
            bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            bias = self.node_const(node, 2)  # also one an earlier group's update added
            return Consumer(node, input_name, "conv", om.consumer_matrix(w, "conv"), w.shape[0],
                            node.input[1], bias, bias_name, (node, 2))
        if op == "Gemm" and node.input[0] == input_name:
            w = self.node_const(node, 1)
            if w is None or w.ndim != 2 or int(_attr(node, "transA", 0)):
                return None
            kind = "gemm" if int(_attr(node, "transB", 0)) else "matmul"
            wmat = om.consumer_matrix(w, kind) * float(_attr(node, "alpha", 1.0))
            bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            bias = self.node_const(node, 2)
            beta = float(_attr(node, "beta", 1.0))
            if bias is not None:
                bias = _per_channel(bias * beta, wmat.shape[0])
                if bias is None:
                    return None  # a per-row C (M, N): no per-channel bias to compensate into
            return Consumer(node, input_name, kind, wmat, wmat.shape[0], node.input[1], bias, bias_name,
                            (node, 2), beta if beta != 0 else 1.0)
        if op == "MatMul" and node.input[0] == input_name:
            w = self.node_const(node, 1)
            if w is None or w.ndim != 2:
                return None
            # A Linear exported as MatMul + Add(bias): the Add's constant is the bias to update.
            bias_name, bias, bias_at = None, None, None
            users = self.users.get(node.output[0], [])
            if len(users) == 1 and users[0].op_type == "Add":
                slot = 1 if users[0].input[0] == node.output[0] else 0
                b = self.node_const(users[0], slot)
                if b is not None and b.size == w.shape[1]:
                    bias_name, bias = users[0].input[slot], np.asarray(b, dtype=np.float64).reshape(-1)
                    bias_at = (users[0], slot)
            return Consumer(node, input_name, "matmul", om.consumer_matrix(w, "matmul"), w.shape[1],
                            node.input[1], bias, bias_name, bias_at)
        return None

    # ---- calibration ----------------------------------------------------------------------------
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
        rng = np.random.default_rng(seed)
        x = smooth_noise(rng, (int(n),) + tuple(int(d) for d in shape[1:]), self.synthetic_smooth,
                         input_channel_axis(self.model, name, shape))
        if self.keep_raw:
            self.synthetic_x = x
        try:
            ranks = {k: len(v) for k, v in self.shapes.items()}
            self._collect_calib(x, model=batch_stat_bn(self.model, ranks), source="synthetic", private=True,
                                keep_raw=self.keep_raw)
        except CalibrationError:
            self.calib_moments, self.raw, self.raw_bn, self.raw_samples = {}, {}, {}, 0
            return False
        if any(not (np.isfinite(m.mean).all() and np.isfinite(m.cov).all()) for m in self.calib_moments.values()):
            self.calib_moments, self.raw, self.raw_bn, self.raw_samples = {}, {}, {}, 0  # e.g. a batch-1-only
            return False  # graph: batch statistics are degenerate
        return True

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

    def _collect_calib(self, x: np.ndarray, model=None, source: str = "calib", private: bool = False,
                       keep_raw: bool = False) -> None:
        """Measure mean/covariance of every consumer input on real data (one ONNX Runtime run).

        ``private=True``: ``model`` is a throw-away copy that may be modified in place (saves a
        copy of all the weights on big models). ``keep_raw`` (a :func:`batch_stat_bn` model): also
        keep the arrays of :attr:`raw` and :attr:`raw_bn`."""
        import onnx
        import onnxruntime as ort

        base = self.model if model is None else model
        own = model is not None and private

        wanted = []
        for n in self.model.graph.node:
            if n.op_type in ("Conv", "Gemm", "MatMul") and n.input and n.input[0] not in self.inits:
                if n.op_type == "Conv" and int(_attr(n, "group", 1)) != 1:
                    continue  # grouped / depthwise convs mix no channels: never compensated
                wanted.append(n.input[0])
        wanted = sorted(set(wanted))
        n_moments = len(wanted)
        bn_dest: Dict[str, str] = {}
        if keep_raw:
            raw = {t for n in self.model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
                   for t in (n.input[0], n.output[0]) if t not in self.inits}
            for k, n in enumerate(self.model.graph.node):  # the names batch_stat_bn gives its statistics
                if n.op_type == "BatchNormalization" and len(n.input) >= 5:
                    mu, var = bn_batch_stat_names(k)
                    bn_dest[mu], bn_dest[var] = n.input[3], n.input[4]
            have_t = {o for n in base.graph.node for o in n.output}
            wanted += sorted(raw - set(wanted)) + [t for t in bn_dest if t in have_t]
        m = with_dynamic_batch(base, copy=not own, shapes=self.shapes)
        have = {o.name for o in m.graph.output}
        for t in wanted:
            if t not in have:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
        inputs = list(self.inputs)
        if len(inputs) != 1:
            raise CalibrationError("calibration needs a model with exactly one input")
        so = ort.SessionOptions()
        so.intra_op_num_threads = ort_threads()
        so.log_severity_level = 4  # failures come back as exceptions (a baked batch is retried)
        x = checked_calib(x, input_dtype(base, inputs[0])) if source == "calib" else \
            np.asarray(x, dtype=input_dtype(base, inputs[0]))
        n_all = len(x)
        chunks = sample_chunks(n_all, self._elements_per_sample(wanted),
                               first=self.raw_samples if keep_raw else None,
                               least=MIN_SYNTHETIC if source == "synthetic" else 1)
        one_by_one = False
        try:
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            first_outs = sess.run(wanted, {inputs[0]: x[chunks[0][0]:chunks[0][1]]})
        except Exception:
            # The batch size is baked into the graph (a Reshape/Concat with a constant batch, as
            # in many transformer exports): feed the samples one by one to the model as it is.
            one_by_one = self.one_by_one = True
            if own:  # m is base itself with the extra outputs; one sample at a time runs as is
                m1 = m
            else:
                m1 = onnx.ModelProto()
                m1.CopyFrom(base)
                for t in wanted:
                    if t not in have:
                        m1.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
            try:
                sess = ort.InferenceSession(m1.SerializeToString(), so, providers=["CPUExecutionProvider"])
                first_outs = self._run_one_by_one(sess, wanted, inputs[0], x[chunks[0][0]:chunks[0][1]])
            except Exception as exc:
                raise CalibrationError(f"calibration data does not fit the model: {exc}"[:300],
                                       hint="give an array shaped like the model input, batch first") from exc
        # Rows of every consumer input, gathered chunk by chunk (the same regular subset of the
        # (sample, position) grid as one run over all samples would pick), then the moments.
        parts: Dict[str, List[np.ndarray]] = {t: [] for t in wanted[:n_moments]}
        for k, (i0, i1) in enumerate(chunks):
            if k == 0:
                outs = first_outs
                first_outs = None
            elif one_by_one:
                outs = self._run_one_by_one(sess, wanted, inputs[0], x[i0:i1])
            else:
                outs = sess.run(wanted, {inputs[0]: x[i0:i1]})
            if keep_raw and k == 0 and not one_by_one:  # obspa-seq's targets: the first chunk's samples
                for t, v in zip(wanted, outs):
                    if t in bn_dest:
                        self.raw_bn[bn_dest[t]] = np.asarray(v, dtype=np.float32).reshape(-1)
                    else:
                        self.raw[t] = v
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
            # float32 products: 2x faster, ample for moments
            mean = flat.mean(axis=0, dtype=np.float64)
            d = flat - mean.astype(np.float32)
            cov = (d.T @ d).astype(np.float64) / max(len(flat) - 1, 1)
            lowrank = None
            if len(flat) < flat.shape[1]:  # fewer rows than channels (pooled tensors, few samples)
                cov, lam = shrink_cov(d, cov, return_weight=True)
                # shrunk cov = (1 - lam) d^T d / (rows - 1) + lam diag: low rank plus diagonal
                lowrank = (d.astype(np.float64) / math.sqrt(max(len(flat) - 1, 1)), 1.0 - lam,
                           lam * np.diag(cov))
            self.calib_moments[t] = Moments(mean, cov, source, lowrank)

    @staticmethod
    def _run_one_by_one(sess, wanted, in_name, x):
        per = [sess.run(wanted, {in_name: x[i:i + 1]}) for i in range(len(x))]
        return [np.concatenate([p[j] for p in per]) for j in range(len(wanted))]

    def _elements_per_sample(self, names) -> int:
        """Elements one input sample makes in the captured tensors (0: some layer's shape is
        unknown; tensors shape inference does not know, the per-channel batch statistics of
        :func:`batch_stat_bn`, are small and not counted)."""
        total = 0
        for t in names:
            sh = self.shapes.get(t)
            if sh is None:
                continue
            if len(sh) < 2 or any(d is None or d <= 0 for d in sh[1:]):
                return 0
            total += int(np.prod(sh[1:]))
        return total


# Captured elements (float32) one ONNX Runtime run of the statistics pass may return: more samples
# than fit go in several runs, so memory stays bounded on big models / many calibration samples
# (2**26 elements = 256 MiB). Digits-size models run in one go (a MobileNetV2 at 32x32 returns
# ~0.7M elements per sample for obspa-seq); an ImageNet MobileNetV2 at 224x224 ~13M.
CHUNK_ELEMENTS = 2 ** 26


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


# Rows (pixels x samples) used for one covariance at most: max(MAX_COV_ROWS, COV_ROWS_PER_CHANNEL *
# channels); more only add time, not precision (neighbouring pixels are strongly correlated).
# 8192 / 8 would save 0.3-0.4 s on an ImageNet MobileNetV2 with the same output error (~1 %) there,
# but it moves digits accuracies of bench/prune_datafree.py by up to 0.9 points (its models see
# more rows than that): kept at 32768 / 32.
MAX_COV_ROWS = 32768
COV_ROWS_PER_CHANNEL = 32


def samples_within(n: int, macs: float, budget: float, least: int) -> int:
    """``n`` samples, or fewer when ``n * macs`` exceeds ``budget`` multiply-accumulates (at least
    ``least``; ``macs`` 0 = unknown: ``n``)."""
    if macs > 0 and n * macs > budget:
        return min(int(n), max(int(least), int(budget // macs)))
    return int(n)


def input_dtype(model, name: str):
    """NumPy element type of graph input ``name`` (float32 when it is not a float type ONNX Runtime
    would take as such): statistics inputs, synthetic or calibration ones, are fed in it (a
    float16 export takes float16)."""
    from edgekit.graph.io import model_input_specs

    for spec in model_input_specs(model):
        if spec.name == name and spec.dtype in ("float16", "float64"):
            return np.dtype(spec.dtype).type
    return np.float32


def ort_threads() -> int:
    """ONNX Runtime intra-op threads for obspa's own forward passes: ``OMP_NUM_THREADS`` when the
    user set it (the same limit NumPy's BLAS obeys), otherwise 0 = ONNX Runtime's default (all
    physical cores)."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "0")), 0)
    except ValueError:
        return 0


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


def checked_calib(x, dtype) -> np.ndarray:
    """Calibration inputs as an array of the model input's element type, or a
    :class:`CalibrationError`: a non-numeric array, NaN or infinite values, or values that do not
    fit the input type (a float16 input holds magnitudes up to 65504; beyond, the cast gives
    infinities). Either would turn the measured moments, and then every compensated weight, into
    NaN."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise CalibrationError(f"calibration data must be numeric, got dtype {a.dtype}",
                               hint="give a float array shaped like the model input, batch first")
    if a.size == 0:
        raise CalibrationError("calibration data is empty", hint="give at least one sample, batch first")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise CalibrationError(f"calibration data has {bad} NaN or infinite value(s)",
                               hint="clean the samples (or drop the bad ones) and try again")
    out = np.asarray(a, dtype=dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        top = float(np.abs(a.astype(np.float64)).max())
        raise CalibrationError(f"calibration values overflow the model input's type {out.dtype} "
                               f"(largest magnitude {top:.4g}, the type holds {float(np.finfo(out.dtype).max):.4g})",
                               hint="preprocess the samples the way the model expects (e.g. scaled / normalised)")
    return out


def smooth_noise(rng, shape, width: int = 3, channel_axis: int = 1) -> np.ndarray:
    """Standard normal noise box-blurred over the spatial axes by ``width`` pixels (circular), then
    re-standardised: a data-free stand-in for natural images, whose neighbouring pixels are
    strongly correlated (``width=3`` gives a neighbour correlation of 2/3; ``width<=1`` is white
    noise). The blur runs in float32 as in-place shifted adds; the draws themselves are float64
    ones (the same samples as ever for a given ``rng``, so the statistics do not move).

    The spatial axes are all but the batch and ``channel_axis``. A channels-last shape gets the
    samples of its channels-first twin, transposed (an NHWC export is fed what the NCHW export of
    the same network is fed)."""
    rank = len(shape)
    cax = channel_axis % rank if rank > 2 else 1
    if cax != 1:
        first = (shape[0], shape[cax]) + tuple(shape[a] for a in range(1, rank) if a != cax)
        return np.ascontiguousarray(np.moveaxis(smooth_noise(rng, first, width, 1), 1, cax))
    x = rng.standard_normal(shape).astype(np.float32)
    if width > 1 and len(shape) > 2:
        for ax in range(2, len(shape)):
            src = np.moveaxis(x, ax, -1)
            acc = src.copy()
            size = src.shape[-1]
            for tap in range(width):
                if tap == width // 2:
                    continue  # the centre tap is acc's initial value
                sh = (tap - width // 2) % size
                if sh == 0:  # a shift that wraps round to the centre (width > size)
                    acc += src
                    continue
                # circular shift by sh: acc[i] += src[i - sh]
                acc[..., sh:] += src[..., :size - sh]
                acc[..., :sh] += src[..., size - sh:]
            x = np.ascontiguousarray(np.moveaxis(acc, -1, ax))
        x -= x.mean(dtype=np.float64)
        x /= max(float(x.std(dtype=np.float64)), 1e-12)
    return x


def has_token_norm(model) -> bool:
    """Whether the graph normalises its activations without BatchNorm: LayerNormalization,
    GroupNormalization, InstanceNormalization, or a LayerNorm written out op by op (a ReduceMean
    whose output is subtracted from its own input). Synthetic inputs then meet the statistics the
    network was trained on after the first normalisation, so they are worth measuring."""
    kinds = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
             "SimplifiedLayerNormalization"}
    nodes = list(model.graph.node)
    if any(n.op_type in kinds for n in nodes):
        return True
    means = {n.output[0]: n.input[0] for n in nodes if n.op_type == "ReduceMean" and n.input and n.output}
    return any(n.op_type == "Sub" and len(n.input) == 2 and n.input[1] in means and means[n.input[1]] == n.input[0]
               for n in nodes)


def bn_prefix(k: int) -> str:
    """Prefix of the tensors :func:`batch_stat_bn` adds for the BatchNorm at node index ``k``."""
    return f"_obspa_bsbn{k}_"


def bn_batch_stat_names(k: int) -> Tuple[str, str]:
    """The batch mean and variance tensors of the BatchNorm at node index ``k`` in a
    :func:`batch_stat_bn` graph."""
    return bn_prefix(k) + "mu", bn_prefix(k) + "var"


def batch_stat_bn(model, ranks: Optional[Dict[str, int]] = None):
    """A copy in which every BatchNormalization normalises with the statistics of the batch it
    sees (over all axes but the channel axis 1) instead of its running statistics. ``ranks``:
    tensor ranks when already known (otherwise from ONNX shape inference)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=17)
    inits = {i.name: i for i in m.graph.initializer}
    if ranks is None:
        try:
            ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
                     for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
        except Exception:
            ranks = {}
    nodes = []
    for k, n in enumerate(m.graph.node):
        if n.op_type != "BatchNormalization" or n.input[1] not in inits or n.input[2] not in inits:
            nodes.append(n)
            continue
        rank = ranks.get(n.input[0], 4) or 4
        axes = [0] + list(range(2, rank))
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        pre = bn_prefix(k)
        shape = [1, -1] + [1] * (rank - 2)
        dt = numpy_helper.to_array(inits[n.input[1]]).dtype  # float16 models stay float16
        for src, dst in ((n.input[1], pre + "g"), (n.input[2], pre + "b")):
            arr = numpy_helper.to_array(inits[src]).astype(dt).reshape(shape)
            m.graph.initializer.append(numpy_helper.from_array(arr, dst))
        m.graph.initializer.append(numpy_helper.from_array(np.array(eps, dtype=dt), pre + "eps"))
        if opset >= 18:
            m.graph.initializer.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), pre + "axes"))
            red = lambda i, o: helper.make_node("ReduceMean", [i, pre + "axes"], [o], keepdims=1)
        else:
            red = lambda i, o: helper.make_node("ReduceMean", [i], [o], axes=axes, keepdims=1)
        nodes += [red(n.input[0], pre + "mu"),
                  helper.make_node("Sub", [n.input[0], pre + "mu"], [pre + "d"]),
                  helper.make_node("Mul", [pre + "d", pre + "d"], [pre + "d2"]),
                  red(pre + "d2", pre + "var"),
                  helper.make_node("Add", [pre + "var", pre + "eps"], [pre + "ve"]),
                  helper.make_node("Sqrt", [pre + "ve"], [pre + "sd"]),
                  helper.make_node("Div", [pre + "d", pre + "sd"], [pre + "z"]),
                  helper.make_node("Mul", [pre + "z", pre + "g"], [pre + "zg"]),
                  helper.make_node("Add", [pre + "zg", pre + "b"], [n.output[0]])]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def with_dynamic_batch(model, copy: bool = True, shapes: Optional[Dict[str, Tuple]] = None):
    """A copy whose inputs/outputs have a symbolic batch dimension, so any number of calibration
    samples can go through in one run (shape annotations of intermediates are dropped), with the
    batch a static export baked into Reshape targets and Resize sizes freed (:func:`free_batch_shapes`; ``shapes``:
    the static shapes of ``model``'s tensors when already known). ``copy=False`` changes ``model``
    itself and returns it."""
    import onnx

    m = model
    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    free_batch_shapes(m, shapes)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del m.graph.value_info[:]
    return m


def free_batch_shapes(model, shapes: Optional[Dict[str, Tuple]] = None) -> int:
    """Rewrite, in ``model`` itself, the constant shapes that hold the static batch size, so that
    a batch of several samples runs as several samples. A TorchScript export with a fixed input
    shape writes ``x.view(x.size(0), -1)`` or a channel shuffle's ``view(b, g, c // g, h, w)`` as
    ``Reshape(x, [1, ...])``, which fails or merges the samples on a batch; and ``F.interpolate``
    to a size (or the pruner, folding a Shape-derived size) as ``Resize(x, sizes=[1, C, H, W])``,
    which silently resizes the batch axis down to one sample.

    - Reshape, where the data's first dimension is the batch (static size equal to the model
      input's, read from ``shapes``, inferred when None): the target's first entry becomes -1
      (inferred) if it has no -1 yet, else 0 (copy the data's first dimension; not under
      ``allowzero=1``, where 0 means an empty axis). Where inference lost that dimension: 0, and
      only for targets without -1 / 0 (a wrong guess then fails instead of mixing samples).
    - Resize with constant sizes: the same sizes as scales (1 on the batch axis), where the data's
      static shape is known and the scales give back exactly those sizes.

    Returns how many nodes were rewritten."""
    from onnx import numpy_helper

    ins = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(ins) != 1 or not ins[0].type.tensor_type.shape.dim:
        return 0
    d0 = ins[0].type.tensor_type.shape.dim[0]
    batch = d0.dim_value if d0.HasField("dim_value") else 0
    if batch <= 0:
        return 0
    stored = {t.name: t for t in model.graph.initializer}
    const_nodes = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}

    def const(name):
        if name in stored:
            return numpy_helper.to_array(stored[name])
        node = const_nodes.get(name)
        v = _attr(node, "value") if node is not None else None
        return numpy_helper.to_array(v) if v is not None else None

    todo = []
    for n in model.graph.node:
        slot = 1 if n.op_type == "Reshape" else 3 if n.op_type == "Resize" else None
        if slot is None or len(n.input) <= slot or not n.input[slot]:
            continue
        t = const(n.input[slot])
        if t is not None and t.ndim == 1 and t.size >= 2 and int(t[0]) == batch:
            todo.append((n, t))
    if not todo:
        return 0
    if shapes is None:
        try:
            from edgekit.graph.shapes import infer_shapes

            shapes = infer_shapes(model)
        except Exception:
            return 0
    done = 0
    for k, (n, t) in enumerate(todo):
        s = shapes.get(n.input[0])
        if s and s[0] is not None and s[0] != batch:
            continue
        if n.op_type == "Resize":
            if not s or len(s) != t.size or any(d is None or d <= 0 for d in s):
                continue
            scales = (t.astype(np.float64) / np.asarray(s, dtype=np.float64)).astype(np.float32)
            scales[0] = 1.0
            back = [np.floor(np.asarray(s, dtype=dt) * scales.astype(dt)) for dt in (np.float32, np.float64)]
            if not all(np.array_equal(b.astype(np.int64), t.astype(np.int64)) for b in back):
                continue
            name = f"{n.input[3]}__free_batch{k}"
            model.graph.initializer.append(numpy_helper.from_array(scales, name))
            n.input[2] = name
            del n.input[3:]
            done += 1
            continue
        known = bool(s) and s[0] is not None
        t = t.copy()
        if known and not (t == -1).any():
            t[0] = -1  # inferred: also under allowzero=1 (the dynamo exporter's Reshapes)
        elif not int(_attr(n, "allowzero", 0)) and (known or not (t <= 0).any()):
            t[0] = 0  # copied from the data (a wrong guess of an unknown dimension fails loudly)
        else:
            continue
        name = f"{n.input[1]}__free_batch{k}"
        model.graph.initializer.append(numpy_helper.from_array(t.astype(np.int64), name))
        n.input[1] = name
        done += 1
    return done


def _per_channel(k: np.ndarray, n: int) -> Optional[np.ndarray]:
    """A broadcastable constant as one value per channel (axis 1 of NCHW or last of N..C)."""
    k = np.asarray(k, dtype=np.float64)
    if k.size == 1:
        return np.full(n, float(k.reshape(-1)[0]))
    flat = k.reshape(-1)
    if flat.size == n:
        return flat
    return None


# ------------------------------------------------------------------------------------------------
# Group-level scoring and compensation, independent of the pruner's Group class: a group is seen
# as a list of (consumer node, its input tensor, the consumer column of every group channel).
# ------------------------------------------------------------------------------------------------

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
    ``stop_after``: see :func:`obspa_math.obs_order` (the decision's ``exact_upto`` says how far the
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
