"""The refit of ``obspa-seq``: after obspa's update, a sequential, data-free reconstruction of the
original layer outputs (:func:`refit`; the criterion itself is :class:`edgekit.prune.obspa.criterion.ObspaSeq`).

Plain ``obspa`` compensates every consumer for the channels *it* loses, with statistics of the
*original* network: the errors of earlier layers are not seen, and they add up through the depth
(on the digits MobileNetV2 the combined error is ~1.6x the sum of the single-group errors). This
variant keeps obspa's channel choice and update, then — once every group's keep mask is known —
refits the channel-mixing layers (Conv with group 1, Gemm, MatMul with a constant weight) one depth
level at a time, in topological order:

1. the same synthetic inputs as obspa (smooth noise, :func:`~edgekit.prune.obspa.synthetic.smooth_noise`) go
   through the original graph with batch-statistics BatchNorm; the per-BN batch mean / variance it
   measures are frozen into the running statistics of *both* the original and the pruned graph
   (so both see BN-matched activations and the pruned one still carries its errors forward,
   unlike a batch-statistics BN which would re-standardise them away);
2. the original graph gives every consumer's target output (that pass is obspa's own synthetic
   pass, kept as arrays: the batch-statistics graph on these inputs *is* the frozen one);
3. the *partly pruned* graph (layers of earlier levels already refitted) gives the consumer's
   actual input (kept channels only); it runs a piece at a time (:class:`Segments`): each level
   executes only the nodes between the previous level's inputs and its own, so all levels
   together cost one forward pass;
4. a ridge least-squares fit (towards obspa's compensated weights) of the consumer's kept weights
   plus bias reproduces the original outputs from the actual inputs (im2col for convolutions).

Cost over plain obspa: one forward pass of the pruned graph (in one small ONNX Runtime session per
level, on at most ``REFIT_MACS_BUDGET`` worth of samples) and one least-squares solve per layer, as
a ``d x d`` system or, with fewer rows than unknowns (deep layers of big models, few samples), as a
``rows x rows`` one; about 1.5x plain obspa's time (bench/prune_datafree.py prints the ratios to l1).
Needs BatchNorm (the synthetic inputs are matched to its statistics); without it, or when the graph
cannot run on a batch of samples, it stays plain obspa and warns.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.graph.io import input_channel_axis
from edgekit.graph.view import attr
from edgekit.prune.apply import apply, tensor_masks
from edgekit.prune.obspa.batch import free_batch_shapes, with_dynamic_batch
from edgekit.prune.obspa.compensate import read_const, write_const
from edgekit.prune.obspa.measure import session
from edgekit.prune.obspa.synthetic import (
    batch_stat_bn,
    bn_batch_stat_names,
    checked_calib,
    input_dtype,
    samples_within,
    smooth_noise,
)

# Ridge strength relative to the mean diagonal of the input Gram matrix, pulling towards obspa's
# compensated weights. The synthetic inputs are not the real ones: a weak pull lets the fit follow
# their statistics too far. Measured on digits models trained at 16x16 (bench/prune_datafree.py)
# and at 32x32 (digits.trained(..., image_size=32)): at 32x32 the MobileNetV2 with uniform scope
# lost 7 points at flops-target 0.67 with 1e-3 (91.1 % vs 98.2 % unpruned; plain obspa 96.4 %),
# 2.4 with 0.1 (95.8 %); the 16x16 rows and the 32x32 ResNet stay within 0.5 points of 1e-3 or
# improve (16x16 MobileNetV2 uniform 0.5: 92.2 -> 94.4 %). 1.0 was no better overall.
DEFAULT_RIDGE = 0.1
# Multiply-accumulates the refit's forward pass of the pruned graph may spend (samples x MACs per
# sample of the original graph): the first samples of obspa's synthetic set, at least
# MIN_REFIT_SAMPLES. Digits-size models use all of them; an ImageNet MobileNetV2 13, a ResNet-18/50 4.
REFIT_MACS_BUDGET = 4e9
MIN_REFIT_SAMPLES = 4
# Rows (samples x output pixels) one least-squares fit uses at most (a regular subset above):
# FIT_ROWS_PER_UNKNOWN per input column, at least MIN_FIT_ROWS, at most MAX_FIT_ROWS. Measured with
# bench/prune_datafree.py: 16 / 4096 gives the digits accuracies of the former flat 32768-row cap (all 18
# vgg/resnet/mobilenetv2 rows within one test image) at 11 % less prune time there, and cuts the
# fits of ImageNet ResNet-50 from 1.7 to 1.3 s, MobileNetV2 from 0.52 to 0.36 s; 4 or 8 per column
# moved digits rows by up to 0.5 points (measured with the former ridge, 1e-3).
FIT_ROWS_PER_UNKNOWN = 16
MIN_FIT_ROWS = 4096
MAX_FIT_ROWS = 32768


def fit_rows(d: int) -> int:
    """How many rows a least-squares fit with ``d`` input columns uses at most."""
    return min(MAX_FIT_ROWS, max(MIN_FIT_ROWS, FIT_ROWS_PER_UNKNOWN * int(d)))


def _with_outputs(model, names):
    """A dynamic-batch copy of ``model`` with the tensors ``names`` as outputs too."""
    m = with_dynamic_batch(model)
    have = {o.name for o in m.graph.output}
    for t in names:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
            have.add(t)
    return m


def im2col(x: np.ndarray, kshape, strides, pads, dilations) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N*Ho*Wo, C*kh*kw)`` with columns in the order of a ``[O, C, kh, kw]``
    weight reshaped to ``(O, -1)``; rows in ``(n, ho, wo)`` order."""
    n, c, h, w = x.shape
    kh, kw = kshape
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, ho, wo, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            sl = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            cols[:, :, :, :, i, j] = sl.transpose(0, 2, 3, 1)
    return cols.reshape(n * ho * wo, c * kh * kw)


def ridge_fit(x: np.ndarray, t: np.ndarray, w0: np.ndarray, b0: Optional[np.ndarray], ridge: float
              ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``argmin ||x W + 1 b - t||^2 + lam ||W - w0||^2`` with ``lam = ridge * mean(diag(x^T x))``
    (``x`` centred when there is a bias).

    ``x`` ``(rows, d)``, ``t`` ``(rows, o)``, ``w0`` ``(d, o)``; ``b0`` None: no intercept. With an
    intercept the bias is unregularised, which is the same as fitting the centred data: ``x`` and
    ``t`` are centred, the Gram matrix ``x^T x`` (the bulk of the work) is taken in float32 on the
    centred rows, the small solve in float64, and ``b = mean(t) - mean(x) W``."""
    x = np.asarray(x, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)
    d = x.shape[1]
    w0 = np.asarray(w0, dtype=np.float64)
    if b0 is not None:
        xm = x.mean(axis=0, dtype=np.float64)
        tm = t.mean(axis=0, dtype=np.float64)
        x = x - xm.astype(np.float32)
        t = t - tm.astype(np.float32)
    if len(x) >= d:  # primal: (x^T x + lam I) W = x^T t + lam w0, a d x d system
        g = (x.T @ x).astype(np.float64)
        lam = ridge * max(float(np.trace(g)) / max(d, 1), 1e-12)
        rhs = (x.T @ t).astype(np.float64) + lam * w0
        g[np.diag_indices_from(g)] += lam
        sol = _spd_solve(g, rhs)
    else:  # dual, fewer rows than unknowns: W = w0 + x^T (x x^T + lam I)^-1 (t - x w0)
        k = (x @ x.T).astype(np.float64)
        lam = ridge * max(float(np.trace(k)) / max(d, 1), 1e-12)
        k[np.diag_indices_from(k)] += lam
        resid = t.astype(np.float64) - x.astype(np.float64) @ w0
        sol = w0 + x.T.astype(np.float64) @ _spd_solve(k, resid)
    if b0 is not None:
        return sol, tm - xm @ sol
    return sol, None


def _spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^-1 b`` for a symmetric positive definite ``a`` (a damped Gram matrix)."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


class _Layer:
    """One refittable consumer in the pruned graph: how to read its weights as a ``(d, o)`` matrix."""

    def __init__(self, node, kind, wname, bname, new_bias, out_axis):
        self.node, self.kind, self.wname, self.bname = node, kind, wname, bname
        self.new_bias = new_bias  # the bias was added by us (no bias in the original layer)
        self.out_axis = out_axis  # axis of the stored weight that holds the outputs
        self.level = 0


def _inputs_x(st, ctx) -> np.ndarray:
    """The refit's input samples, in the graph input's element type."""
    name = next(iter(st.inputs))
    dt = input_dtype(st.model, name)
    if ctx.calib is not None:
        return checked_calib(ctx.calib, dt)
    if st.synthetic_x is not None:
        return np.asarray(st.synthetic_x, dtype=dt)
    shape = st.shapes[name]
    rng = np.random.default_rng(0)  # the samples obspa's statistics were measured on
    return smooth_noise(rng, (int(st.synthetic_used),) + tuple(int(d) for d in shape[1:]),
                        st.synthetic_smooth, input_channel_axis(st.model, name, shape)).astype(dt, copy=False)


def _frozen_bn(model, x: np.ndarray, in_name: str, inits) -> Dict[str, np.ndarray]:
    """Batch mean / variance of every BatchNorm on the original graph for the batch ``x``, as
    replacement running statistics ``{mean/var initializer: values}``."""
    bs = batch_stat_bn(model)
    want, dest = [], []
    for k, n in enumerate(model.graph.node):
        if n.op_type != "BatchNormalization" or n.input[1] not in inits or n.input[2] not in inits:
            continue
        if len(n.input) < 5 or n.input[3] not in inits or n.input[4] not in inits:
            continue
        want += list(bn_batch_stat_names(k))
        dest += [n.input[3], n.input[4]]
    if not want:
        return {}
    outs = session(_with_outputs(bs, want)).run(want, {in_name: x})
    return {d: np.asarray(v, dtype=np.float32).reshape(-1) for d, v in zip(dest, outs)}


def _layers(pruned, orig_nodes, consts) -> List[_Layer]:
    """Refittable consumers of the pruned graph, with their depth level (a layer of level L reads
    a tensor computed through refitted layers of levels < L only)."""
    inits = {i.name for i in pruned.graph.initializer}
    use_count: Dict[str, int] = {}
    for n in pruned.graph.node:
        for i in n.input:
            use_count[i] = use_count.get(i, 0) + 1
    users = {}
    for n in pruned.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    layers: Dict[str, _Layer] = {}
    for n in pruned.graph.node:
        if n.name not in orig_nodes or len(n.input) < 2 or n.input[1] not in inits or n.input[0] in inits:
            continue
        if use_count.get(n.input[1], 0) != 1:
            continue  # a weight shared by several layers: left as obspa made it
        # a bias that is not stored (computed at run time) is not fitted
        bname = n.input[2] if len(n.input) > 2 and n.input[2] in inits else None
        if n.op_type == "Conv":
            if int(attr(n, "group", 1)) != 1 or attr(n, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                continue
            layers[n.name] = _Layer(n, "conv", n.input[1], bname, bname is None, 0)
        elif n.op_type == "Gemm":
            if int(attr(n, "transA", 0)):
                continue
            tb = int(attr(n, "transB", 0))
            layers[n.name] = _Layer(n, "gemm", n.input[1], bname, bname is None, 0 if tb else 1)
        elif n.op_type == "MatMul":
            u = users.get(n.output[0], [])
            bname = None
            if len(u) == 1 and u[0].op_type == "Add":
                other = [i for i in u[0].input if i != n.output[0]]
                if other and other[0] in inits and other[0] in consts and use_count.get(other[0], 0) == 1:
                    bname = other[0]
            layers[n.name] = _Layer(n, "matmul", n.input[1], bname, False, 1)
    # depth levels over the graph (nodes are topologically sorted)
    depth: Dict[str, int] = {}
    for n in pruned.graph.node:
        d = max((depth.get(i, 0) for i in n.input), default=0)
        lay = layers.get(n.name)
        if lay is not None:
            lay.level = d
            d = d + 1
        for o in n.output:
            depth[o] = d
    return sorted(layers.values(), key=lambda lay: lay.level)


def _as_matrix(w: np.ndarray, lay: _Layer) -> np.ndarray:
    """Stored weight -> ``(d, o)`` so that ``out = x_cols @ M``."""
    if lay.kind == "conv":
        return w.reshape(w.shape[0], -1).T
    if lay.kind == "gemm" and lay.out_axis == 0:
        return w.T
    return w  # gemm transB=0, matmul: [in, out]


def _from_matrix(m: np.ndarray, lay: _Layer, shape) -> np.ndarray:
    if lay.kind == "conv":
        return m.T.reshape(shape)
    if lay.kind == "gemm" and lay.out_axis == 0:
        return m.T.reshape(shape)
    return m.reshape(shape)


class Segments:
    """Runs a graph one piece at a time: :meth:`run` computes the requested tensors from the
    values already computed, executing only the nodes not run yet (one small ONNX Runtime session
    per call), so the refit's level-by-level passes cost one forward pass in all, not one each.

    ``weights`` (name -> array, read at every call) replaces initializers of the same name: a
    piece is built when the layers it contains are final, so their current values are baked in.
    Values no later node reads are dropped as soon as they are consumed."""

    def __init__(self, model, feeds: Dict[str, np.ndarray], weights: Dict[str, np.ndarray]):
        self.model = model
        self.nodes = list(model.graph.node)
        if any(a.type in (5, 10) for n in self.nodes for a in n.attribute):  # GRAPH / GRAPHS
            raise ValueError("control-flow subgraphs are not split into pieces")
        self.inits = {i.name: i for i in model.graph.initializer}
        self.weights = weights
        self.producer = {o: k for k, n in enumerate(self.nodes) for o in n.output if o}
        self.pending_users: Dict[str, int] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.pending_users[i] = self.pending_users.get(i, 0) + 1
        self.outputs = {o.name for o in model.graph.output}
        self.values: Dict[str, np.ndarray] = dict(feeds)
        self.n = len(next(iter(feeds.values()))) if feeds else 0  # samples
        self.done = np.zeros(len(self.nodes), dtype=bool)

    def run(self, names: List[str]) -> Dict[str, np.ndarray]:
        todo, stack = set(), [t for t in names if t not in self.values]
        while stack:
            t = stack.pop()
            k = self.producer.get(t)
            if k is None or k in todo or self.done[k]:
                continue
            todo.add(k)
            stack += [i for i in self.nodes[k].input if i and i not in self.values and i not in self.inits]
        if todo:
            piece = sorted(todo)
            made = {o for k in piece for o in self.nodes[k].output if o}
            reads = [i for k in piece for i in self.nodes[k].input if i and i not in made]
            ins = sorted({i for i in reads if i in self.values})
            consts = sorted({i for i in reads if i in self.inits})
            for k in piece:
                for i in self.nodes[k].input:
                    if i:
                        self.pending_users[i] -= 1
            outs = sorted(o for o in made if o in names or self.pending_users.get(o, 0) > 0 or o in self.outputs)
            g = helper.make_graph(
                [self.nodes[k] for k in piece], "piece",
                [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(self.values[i].dtype), None)
                 for i in ins],
                [helper.make_empty_tensor_value_info(o) for o in outs],
                [numpy_helper.from_array(np.ascontiguousarray(self.weights[c], dtype=helper.tensor_dtype_to_np_dtype(
                    self.inits[c].data_type) if c in self.inits else None), c) if c in self.weights
                 else self.inits[c] for c in consts])
            m = helper.make_model(g, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
            m.functions.extend(self.model.functions)
            got = _run_piece(session(m), outs, {i: self.values[i] for i in ins}, self.n)
            self.values.update(zip(outs, got))
            self.done[piece] = True
            for i in ins:  # consumed by its last reader
                if self.pending_users.get(i, 0) <= 0 and i not in names:
                    self.values.pop(i, None)
        return {t: self.values[t] for t in names}


def _run_piece(sess, outs: List[str], feeds: Dict[str, np.ndarray], n: int) -> List[np.ndarray]:
    """One run of a piece on all ``n`` samples; where that fails, or returns an activation without
    ``n`` rows (the pruned graph of a static export may hold the batch size as a constant, e.g. a
    Resize's sizes folded to [1, C, H, W]), one run per sample: the activations (floating arrays
    with ``n`` rows) cut per sample and the results stacked; other values (shape vectors) go in
    whole and must come out the same."""
    try:
        got = sess.run(outs, feeds)
        # a run can also "succeed" wrongly: a Resize to constant sizes [1, C, H, W] resizes the
        # batch axis down to one sample without an error
        if n <= 1 or all(not (isinstance(v, np.ndarray) and v.ndim >= 1 and np.issubdtype(v.dtype, np.floating))
                         or v.shape[0] == n for v in got):
            return got
    except Exception:
        if n <= 1:
            raise

    def per_sample(v):
        return isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n and np.issubdtype(v.dtype, np.floating)

    runs = [sess.run(outs, {k: (v[i:i + 1] if per_sample(v) else v) for k, v in feeds.items()}) for i in range(n)]
    got = []
    for j, name in enumerate(outs):
        vals = [r[j] for r in runs]
        if all(np.ndim(v) >= 1 and np.shape(v)[0] == 1 for v in vals) and np.issubdtype(vals[0].dtype, np.floating):
            got.append(np.concatenate(vals, axis=0))
        elif all(np.array_equal(v, vals[0]) for v in vals[1:]):
            got.append(vals[0])
        else:
            raise ValueError(f"{name}: neither per-sample rows nor one shared value")
    return got


def refit(dg, keeps, ctx, st, ridge: float = DEFAULT_RIDGE) -> int:
    """The sequential reconstruction; writes the new weights / biases through ``ctx``. Returns the
    number of layers refitted."""
    model = dg.model
    inits = {i.name: i for i in model.graph.initializer}
    in_name = next(iter(st.inputs))
    x = _inputs_x(st, ctx)
    # obspa's synthetic pass already ran the batch-statistics graph on x: its BatchNorm statistics
    # and layer values are those of the original graph with those statistics frozen
    cached = ctx.calib is None and bool(st.raw)
    bn = st.raw_bn if cached else _frozen_bn(model, x, in_name, inits)
    bn = {k: v for k, v in bn.items() if k in inits}

    # pruned graph (obspa's update) with frozen BN statistics, every candidate layer with a bias
    orig_nodes = {n.name: n for n in model.graph.node if n.name}
    new_biases = dict(ctx.new_biases)
    for n in model.graph.node:
        # no bias, or one computed at run time (the dynamo exporter's zero bias, Expand of a scalar):
        # a stored one to fit (the fit sets it whatever it starts from)
        if n.name and n.op_type == "Conv" and not (len(n.input) > 2 and n.input[2] in inits) \
                and n.name not in new_biases and int(attr(n, "group", 1)) == 1 and n.input[1] in inits:
            new_biases[n.name] = np.zeros(numpy_helper.to_array(inits[n.input[1]]).shape[0], dtype=np.float32)
    upd = dict(ctx.updates)
    upd.update(bn)
    pruned = apply(dg, keeps, upd, new_biases)
    # a weight shared with another layer (no private copy) is left as obspa made it
    layers = [lay for lay in _layers(pruned, orig_nodes, dg.consts)
              if ctx.own_tensor(orig_nodes[lay.node.name], 1) is not None]
    if not layers:
        return 0
    p_inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    masks = tensor_masks(dg, keeps)

    movable: Dict[str, None] = {}  # insertion-ordered (a set would follow the hash seed)
    for lay in layers:
        movable[lay.wname] = None
        if lay.bname:
            movable[lay.bname] = None
    t_names = [lay.node.output[0] for lay in layers]
    x_names = sorted({lay.node.input[0] for lay in layers})
    cur = {name: p_inits[name].astype(np.float32) for name in movable}  # refitted values so far

    # the pruned graph, run a piece per level: a level's inputs only depend on layers of lower,
    # already refitted levels; big models: the refit pass on fewer samples
    n_fit = samples_within(len(x), st.macs_per_sample(), REFIT_MACS_BUDGET, MIN_REFIT_SAMPLES)
    if cached and all(t in st.raw for t in t_names + x_names):
        o_vals = st.raw  # the first st.raw_samples samples: those of the refit
        n_fit = min(n_fit, st.raw_samples)
    else:  # the original graph with frozen BN statistics gives the targets
        orig = onnx.ModelProto()
        orig.CopyFrom(model)
        for i in orig.graph.initializer:
            if i.name in bn:
                i.CopyFrom(numpy_helper.from_array(bn[i.name].astype(numpy_helper.to_array(i).dtype), i.name))
        o_sess = session(_with_outputs(orig, t_names + x_names))
        o_vals = dict(zip(t_names + x_names, o_sess.run(t_names + x_names, {in_name: x[:n_fit]})))
    # as the statistics pass did (a static export's view(1, -1)); the pruned graph's own shapes
    # (the channel entries of Resize sizes changed), inferred only when there is one to rewrite
    free_batch_shapes(pruned)
    runner = Segments(pruned, {in_name: x[:n_fit]}, cur)

    done = 0
    for lv in sorted({lay.level for lay in layers}):
        todo = [lay for lay in layers if lay.level == lv]
        acts = runner.run(sorted({lay.node.input[0] for lay in todo}))
        for lay in todo:
            if _fit_layer(lay, acts[lay.node.input[0]], o_vals, cur, masks, p_inits, ridge, dg, ctx,
                          orig_nodes[lay.node.name]):
                done += 1
    return done


def _fit_layer(lay, xa, o_vals, cur, masks, p_inits, ridge, dg, ctx, onode) -> bool:
    """Fit one layer; updates ``cur`` (pruned-shape values fed to later levels) and ``ctx``."""
    node = lay.node
    n = len(xa)
    xo, t = o_vals[node.input[0]][:n], o_vals[node.output[0]][:n]  # the samples of the refit pass
    w_p = cur[lay.wname]
    wmask = masks.get(onode.input[1], {})
    in_axis = 1 if lay.kind == "conv" else (1 - lay.out_axis)
    if xa.shape == xo.shape and in_axis not in wmask and \
            float(np.abs(xa - xo).max()) <= 1e-6 * (float(np.abs(xo).max()) + 1e-12):
        return False  # input unchanged, no column dropped: nothing to reconstruct
    out_mask = wmask.get(lay.out_axis)
    per_sample = int(np.prod(t.shape[2:])) if lay.kind == "conv" else int(np.prod(t.shape[1:-1]))
    cap = fit_rows(int(np.prod(w_p.shape[1:])) if lay.kind == "conv" else int(w_p.shape[1 - lay.out_axis]))
    if n * per_sample > cap and n > 1:  # fewer whole samples first (before im2col)
        pick = np.unique(np.linspace(0, n - 1, max(1, -(-cap // max(per_sample, 1)))).astype(np.int64))
        xa, t = xa[pick], t[pick]
    t = np.asarray(t, dtype=np.float32)  # ridge_fit takes its products in float32
    if lay.kind == "conv":
        kshape = w_p.shape[2:]
        if len(kshape) != 2 or xa.ndim != 4:
            return False
        strides = attr(node, "strides", [1, 1])
        dil = attr(node, "dilations", [1, 1])
        pads = attr(node, "pads", [0, 0, 0, 0])
        xs = im2col(xa.astype(np.float32), kshape, strides, pads, dil)
        tt = np.moveaxis(t, 1, -1).reshape(-1, t.shape[1])
    else:
        xs = xa.reshape(-1, xa.shape[-1])
        tt = t.reshape(-1, t.shape[-1])
    if out_mask is not None:
        tt = tt[:, out_mask]
    if onode.op_type == "MatMul" and lay.bname:
        bias = np.asarray(dg.consts[lay.bname], dtype=np.float32).reshape(-1)
        tt = tt + (bias if out_mask is None else bias[out_mask])[None, :]
    if len(xs) != len(tt):
        return False
    if len(xs) > cap:
        step = -(-len(xs) // cap)
        xs, tt = xs[::step], tt[::step]
    alpha = float(attr(node, "alpha", 1.0)) if node.op_type == "Gemm" else 1.0
    beta = float(attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
    if onode.op_type == "Gemm" and not lay.bname:
        has_b = False
    else:
        has_b = lay.bname is not None
    m0 = _as_matrix(w_p.astype(np.float64), lay) * alpha
    b0 = None
    if has_b:
        b0 = np.asarray(cur[lay.bname], dtype=np.float64).reshape(-1) * beta
        if b0.size == 1 and m0.shape[1] > 1:
            has_b, b0 = False, None
    m, b = ridge_fit(xs, tt, m0, b0, ridge)
    if not (np.isfinite(m).all() and (b is None or np.isfinite(b).all())):
        return False
    new_wp = _from_matrix(m / alpha, lay, w_p.shape).astype(np.float32)
    cur[lay.wname] = new_wp
    # back to full size for the pruner: kept block replaced, removed positions as they were
    wtarget = ctx.own_tensor(onode, 1)
    full = np.array(ctx.tensor(wtarget), dtype=np.float32, copy=True)
    idx = tuple(np.nonzero(wmask[a])[0] if a in wmask else np.arange(full.shape[a]) for a in range(full.ndim))
    full[np.ix_(*idx)] = new_wp
    ctx.set_tensor(wtarget, full)
    if b is not None:
        b = (b / beta).astype(np.float32)
        cur[lay.bname] = b.reshape(cur[lay.bname].shape)
        n_full = full.shape[lay.out_axis]
        rows = np.nonzero(out_mask)[0] if out_mask is not None else np.arange(n_full)
        bnode, bslot = onode, 2
        if onode.op_type == "MatMul":  # the bias is the constant of the Add after it
            add = dg.users.get(onode.output[0], [])
            if len(add) != 1 or lay.bname not in add[0].input:
                return True
            bnode, bslot = add[0], list(add[0].input).index(lay.bname)
        # rows not kept are cut by the pruner; a bias that was none, shared or broadcast becomes
        # one of the node's own
        bfull = read_const(ctx, bnode, bslot, n_full)
        bfull[rows] = b
        write_const(ctx, bnode, bslot, "bias", bfull)
    return True

