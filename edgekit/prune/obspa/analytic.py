"""Closed-form Gaussian moments of a tensor, propagated node by node from BatchNorm statistics.

The fallback when no statistics are measured (no BatchNorm to match synthetic inputs to, a dynamic
input shape) and the ``obspa-analytic`` criterion:

* a BatchNorm output channel is ``N(beta, gamma^2)`` (its running statistics were measured on the
  training data); channel *correlations* come from the producing conv's filters (two filters that
  look alike give correlated outputs): ``corr(sum_pq W_p C_in W_q^T R_pq)`` with neighbouring
  pixels correlated ``R = spatial ** distance``, shrunk towards the identity by ``alpha``;
* activations map the Gaussian moments in closed form (ReLU, ReLU6, LeakyReLU) or by quadrature
  (SiLU, GELU, sigmoid, hardswish, ...), cross-channel covariances by Mehler's series
  (:func:`edgekit.prune.obspa.moments.correlated_act_moments`); sums (residuals) add moments;
  LayerNorm outputs are ``N(beta, gamma^2)`` per feature;
* with no BatchNorm (never had one, or folded into the conv) the moments are propagated through
  the conv weights from the previous known statistics (``weight-only``; graph inputs are taken as
  standardised). That is a weaker model, and the report says so per group.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from edgekit.graph.view import attr
from edgekit.prune.obspa import moments as mom
from edgekit.prune.obspa.layers import ModelWeights, Moments, per_channel

_PASS_THROUGH = {"Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "GlobalMaxPool", "Cast", "Pad", "Resize", "Upsample", "Squeeze", "Unsqueeze"}
_SIMPLE_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus",
                "HardSwish": "hardswish", "Gelu": "gelu"}


class AnalyticMoments:
    """The moments of one tensor from those of its producer's inputs (read back through
    ``moments``, the caller's memoised lookup, which may hold measured statistics too).

    Ops without a rule here are collected in :attr:`unknown_ops` (the report names them)."""

    def __init__(self, weights: ModelWeights, shapes: Dict[str, Tuple],
                 moments: Callable[[str], Optional[Moments]], alpha: float, spatial: float, n_samples: int):
        self.weights = weights
        self.shapes = shapes
        self.moments = moments
        self.alpha = alpha
        self.spatial = spatial
        self.n_samples = n_samples
        self.unknown_ops: set = set()

    def compute(self, t: str) -> Optional[Moments]:
        if t in self.weights.inputs:
            shape = self.shapes.get(t, ())
            c = shape[1] if len(shape) > 1 else None
            if not c:
                return None
            # Images are usually standardised per channel: zero mean, unit variance.
            return Moments(np.zeros(c), np.eye(c), "assumed-input")
        node = self.weights.producer.get(t)
        if node is None:
            return None
        op = node.op_type
        if op == "BatchNormalization":
            return self._bn(node)
        if op == "LayerNormalization":
            return self._layer_norm(node)
        if op in _SIMPLE_ACTS or op in ("Clip", "LeakyRelu", "HardSigmoid", "Elu"):
            return self._act(node)
        if op == "Mul":
            return self._mul(node)
        if op in ("Add", "Sum"):
            return self._add(node)
        if op in ("Conv", "Gemm", "MatMul"):
            return self._linear(node)
        if op == "Concat":
            return self._concat(node, t)
        if op == "Flatten":
            return self._flatten(node)
        if op in _PASS_THROUGH or op == "ReduceMean":
            return self.moments(node.input[0])
        self.unknown_ops.add(op)
        return None

    def _bn(self, node) -> Optional[Moments]:
        weight = self.weights.weight
        gamma = weight(node.input[1])
        beta = weight(node.input[2])
        if gamma is None or beta is None:
            return None
        corr = None
        if self.alpha > 0:
            prod = self.weights.producer.get(node.input[0])
            if prod is not None and prod.op_type == "Conv":
                w = weight(prod.input[1])
                if w is not None and w.shape[0] == len(gamma):
                    group = int(attr(prod, "group", 1))
                    src = self.moments(prod.input[0])
                    cin = src.cov if src is not None and len(src.cov) == w.shape[1] * group else np.eye(w.shape[1] * group)
                    corr = mom.shrink_corr(mom.cov_to_corr(mom.conv_output_cov(w, cin, group, self.spatial)), self.alpha)
        m, c = mom.bn_output_moments(gamma, beta, corr)
        return Moments(m, c, "bn")

    def _layer_norm(self, node) -> Optional[Moments]:
        gamma = self.weights.weight(node.input[1])
        beta = self.weights.weight(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if gamma is None or gamma.ndim != 1:
            return None
        beta = np.zeros_like(gamma) if beta is None else beta
        m, c = mom.bn_output_moments(gamma, beta)
        return Moments(m, c, "ln")

    def _apply_act(self, name: str, src: Moments, **params) -> Moments:
        m, c = mom.correlated_act_moments(name, src.mean, src.cov, n_samples=self.n_samples, **params)
        return Moments(m, c, src.source)

    def _act(self, node) -> Optional[Moments]:
        src = self.moments(node.input[0])
        if src is None:
            return None
        op = node.op_type
        if op == "Clip":
            lo = attr(node, "min", -math.inf)
            hi = attr(node, "max", math.inf)
            if len(node.input) > 1 and node.input[1]:
                v = self.weights.weight(node.input[1])
                lo = float(v) if v is not None else lo
            if len(node.input) > 2 and node.input[2]:
                v = self.weights.weight(node.input[2])
                hi = float(v) if v is not None else hi
            return self._apply_act("clip", src, lo=float(lo), hi=float(hi))
        if op == "LeakyRelu":
            return self._apply_act("leakyrelu", src, alpha=float(attr(node, "alpha", 0.01)))
        if op == "HardSigmoid":
            return self._apply_act("hardsigmoid", src, alpha=float(attr(node, "alpha", 0.2)),
                                   beta=float(attr(node, "beta", 0.5)))
        if op == "Elu":
            return self._apply_act("elu", src, alpha=float(attr(node, "alpha", 1.0)))
        return self._apply_act(_SIMPLE_ACTS[op], src)

    def _mul(self, node) -> Optional[Moments]:
        # x * sigmoid(x) (SiLU / Swish) and x * hardsigmoid(x) (hardswish); other products (SE
        # gating, attention) have no Gaussian closed form here.
        a, b = node.input[0], node.input[1]
        for x, g in ((a, b), (b, a)):
            gn = self.weights.producer.get(g)
            if gn is not None and gn.input and gn.input[0] == x:
                src = self.moments(x)
                if src is None:
                    return None
                if gn.op_type == "Sigmoid":
                    return self._apply_act("silu", src)
                if gn.op_type == "HardSigmoid":
                    return self._apply_act("hardswish", src)
        const = [self.weights.weight(i) for i in node.input]
        if const[1] is not None and const[0] is None:
            src, k = self.moments(a), const[1]
        elif const[0] is not None and const[1] is None:
            src, k = self.moments(b), const[0]
        else:
            return None
        if src is None:
            return None
        k = per_channel(k, len(src.mean))
        if k is None:
            return None
        return Moments(src.mean * k, src.cov * np.outer(k, k), src.source)

    def _add(self, node) -> Optional[Moments]:
        parts, consts = [], []
        for i in node.input:
            w = self.weights.weight(i)
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
            kk = per_channel(k, n)
            if kk is None:
                return None
            mean = mean + kk
        return Moments(mean, cov, "+".join(sorted({p.source for p in parts})))

    def _linear(self, node) -> Optional[Moments]:
        src = self.moments(node.input[0])
        cons = self.weights.consumer(node, node.input[0])
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

    def _concat(self, node, t: str) -> Optional[Moments]:
        axis = attr(node, "axis", 1)
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

    def _flatten(self, node) -> Optional[Moments]:
        src = self.moments(node.input[0])
        if src is None:
            return None
        ishape = self.shapes.get(node.input[0], ())
        hw = int(np.prod(ishape[2:])) if len(ishape) > 2 and all(ishape[2:]) else 1
        if hw == 1:
            return src
        return Moments(np.repeat(src.mean, hw), np.kron(src.cov, np.eye(hw)), src.source)
