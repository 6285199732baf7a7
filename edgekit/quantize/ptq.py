"""Post-training INT8 quantization of an ONNX model: TensorRT QDQ placement, or the fastest ORT CPU model.

``quantize(model, calib, ...) -> (ModelProto, QuantizeReport)``; the library half of
``edgekit quantize``. Two phases (mark, then apply) for the TensorRT target:

1. *mark*: walk the graph and decide which tensors get a Q/DQ pair. Per :mod:`edgekit.quantize.rules`:
   the data input and the weight of every Conv/ConvTranspose/Gemm/MatMul (unless thin, excluded or
   its weight is not a constant of a known layout); the skip input of every residual Add whose conv
   branch is quantized; nothing else. Concat inputs/outputs that get QDQ are tied to one range.
2. *calibrate* the marked activations (plus every float tensor when a TensorRT calibration cache is
   wanted) by running the float model in ONNX Runtime;
3. *apply*: one Q->DQ per marked activation tensor (shared by its quantized consumers), float
   weight -> Q -> DQ per-channel on the output axis (the form every TensorRT 8.x-10.x ONNX parser
   accepts), bias untouched.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from edgekit.errors import CalibrationError, InputError, UnsupportedError
from edgekit.graph.io import default_opset, model_input_specs
from edgekit.graph.view import check_inputs_defined
from edgekit.quantize import calibrate as cal
from edgekit.quantize.cpu import quantize_cpu
from edgekit.quantize.fidelity import fidelity, sqnr_db  # noqa: F401 - sqnr_db: callers import it from here
from edgekit.quantize.graphutil import GraphView, model_is_quantized, weight_output_axis
from edgekit.quantize.rules import COMPUTE_OPS, channels, conv_branch, residual_skip_index, tensor_depths

TARGETS = ("tensorrt", "cpu")
MIN_OPSET = 13


@dataclass
class QuantizeReport:
    """What ``quantize`` did: which ops went INT8 or stayed float and why, ranges, fidelity, timings."""

    target: str
    method: str
    samples: int
    holdout: int
    source: str
    synthetic: bool = False
    quantized_nodes: List[str] = field(default_factory=list)
    float_nodes: List[Dict[str, str]] = field(default_factory=list)  # {"node", "op_type", "reason"}
    skipped: List[Dict[str, str]] = field(default_factory=list)       # ops the rules do not cover
    activation_amax: Dict[str, float] = field(default_factory=dict)
    calibration_scales: Dict[str, float] = field(default_factory=dict)  # every float tensor (cache)
    fidelity: Dict[str, object] = field(default_factory=dict)
    opset: int = 0
    warnings: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    sensitivity: Dict[str, object] = field(default_factory=dict)  # cpu target: mixed-precision pass

    def to_dict(self) -> dict:
        return {
            "target": self.target, "method": self.method, "samples": self.samples, "holdout": self.holdout,
            "source": self.source, "synthetic": self.synthetic, "opset": self.opset,
            "quantized_nodes": list(self.quantized_nodes), "float_nodes": list(self.float_nodes),
            "skipped": list(self.skipped), "activation_amax": dict(self.activation_amax),
            "fidelity": dict(self.fidelity), "warnings": list(self.warnings), "seconds": dict(self.seconds),
            "sensitivity": dict(self.sensitivity),
        }


# ---------------------------------------------------------------------------------------------
# entry point


def quantize(model, calib: Union[str, "cal.CalibrationData"], method: str = "entropy", target: str = "tensorrt",
             samples: Optional[int] = None, exclude: Sequence[str] = (), min_channels: int = 16,
             percentile: float = 99.99, holdout_fraction: float = 0.2, batch_size: int = 8,
             with_cache_scales: bool = True, preprocess: Optional[dict] = None,
             progress: Optional[Callable[..., None]] = None, threads: Optional[int] = None,
             measure_fidelity: bool = True, sensitivity: str = "auto", float_budget: float = 0.10,
             calibrator: str = "edgekit"):
    """Quantize a float ONNX model to INT8; returns ``(quantized ModelProto, QuantizeReport)``.

    ``calib``: a path (.npy/.npz/image folder), ``"synthetic"``, or loaded :class:`CalibrationData`.
    The last ``holdout_fraction`` of the samples is not used for calibration but for the fidelity
    report (top-1 agreement and SQNR vs the float model). ``progress(advance=1, total=...)`` is
    called once per calibration batch.

    ``target="cpu"`` only: ``sensitivity`` ("auto" | "on" | "off") runs the mixed-precision pass of
    :mod:`edgekit.quantize.cpu` (layers whose INT8 error hurts the outputs most are kept float, within
    ``float_budget``, a fraction of the model's MACs); what was kept float is in ``report.float_nodes``
    and ``report.sensitivity``; ``calibrator`` ("edgekit" streamed | "ort") see :func:`quantize_cpu`.
    """
    _check_options(method, target, percentile)
    check_inputs_defined(model)
    work = _working_copy(model, exclude)
    specs = model_input_specs(work)
    data = _calibration_data(calib, specs, samples, preprocess)
    fixed_batch = _batch_size(specs, 0)
    batch_size = fixed_batch or max(1, int(batch_size))
    n, hold = _holdout_split(data, fixed_batch, holdout_fraction)
    n_cal = n - hold
    rep = QuantizeReport(target=target, method=method, samples=n_cal, holdout=hold, source=data.source,
                         synthetic=data.synthetic, opset=default_opset(work))
    rep.warnings.extend(data.warnings)
    if n_cal < 16 and not data.synthetic:
        rep.warnings.append(f"only {n_cal} calibration samples: ranges may not represent real inputs (use >= 100)")
    t0 = time.perf_counter()
    if target == "tensorrt":
        out = _quantize_tensorrt(work, data, n_cal, rep, method, set(exclude), min_channels, percentile,
                                 batch_size, with_cache_scales, progress, threads)
    else:
        out = quantize_cpu(work, data, n_cal, rep, method, list(exclude), percentile, batch_size, progress, threads,
                           sensitivity=sensitivity, float_budget=float_budget, calibrator=calibrator)
    rep.seconds["quantize"] = round(time.perf_counter() - t0, 3)
    if not measure_fidelity:
        return out, rep
    t1 = time.perf_counter()
    rep.fidelity = fidelity(work, out, data, (n_cal, n) if hold else (0, n), batch_size=batch_size, threads=threads)
    if not hold:
        rep.fidelity["note"] = "fewer than 5 samples: measured on the calibration samples themselves (not held out)"
    rep.seconds["fidelity"] = round(time.perf_counter() - t1, 3)
    return out, rep


def _check_options(method: str, target: str, percentile: float) -> None:
    if method not in cal.METHODS:
        raise InputError(f"unknown method {method!r}", hint="one of " + ", ".join(cal.METHODS))
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}", hint="one of " + ", ".join(TARGETS))
    if not 0 < percentile <= 100:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")


def _working_copy(model, exclude: Sequence[str]):
    """A copy of the float model at opset >= 13, after checking it is float and ``exclude`` names nodes."""
    already = model_is_quantized(model)
    if already:
        raise InputError(f"the model is already quantized ({len(already)} quantization nodes, e.g. '{already[0]}')",
                         hint="quantize the float model; `edgekit inspect qdq` checks an existing QDQ model")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    work = _ensure_opset(work)
    names = [n.name for n in work.graph.node]
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise InputError(f"--exclude names no node of the model: {unknown[:5]}",
                         hint="node names are in `edgekit inspect` / Netron; e.g. /layer1/layer1.0/conv1/Conv")
    return work


def _calibration_data(calib, specs, samples: Optional[int], preprocess: Optional[dict]) -> "cal.CalibrationData":
    """Load ``calib`` (a source string), or validate arrays given directly as loaded ones are."""
    if not isinstance(calib, cal.CalibrationData):
        return cal.load_calibration(str(calib), specs, samples=samples, preprocess=preprocess)
    data = calib
    for spec in specs:
        if spec.name not in data.arrays:
            raise CalibrationError(f"calibration data has no array for model input '{spec.name}'")
        data.arrays[spec.name] = cal.check_array(spec.name, data.arrays[spec.name], spec, data.source)
    if samples is not None:
        data.arrays = {k: v[:samples] for k, v in data.arrays.items()}
    return data


def _holdout_split(data, fixed_batch: int, holdout_fraction: float) -> Tuple[int, int]:
    """``(samples used, held out)``: whole fixed batches only; the last fraction is held out (>= 5 samples)."""
    n = data.num_samples
    if fixed_batch:
        n = (n // fixed_batch) * fixed_batch
        if n == 0:
            raise CalibrationError(f"the model has a fixed batch of {fixed_batch} but only {data.num_samples} "
                                   "samples were given")
        if n < data.num_samples:
            data.warnings.append(f"fixed batch {fixed_batch}: the last {data.num_samples - n} samples are not used")
            data.arrays = {k: v[:n] for k, v in data.arrays.items()}
    step = fixed_batch or 1
    hold = int(round(n * holdout_fraction / step)) * step if n >= 5 else 0
    return n, (hold if hold < n else 0)


def _batch_size(specs, wanted: int) -> int:
    """A model with a fixed batch dimension must be fed batches of exactly that size."""
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    if len(fixed) > 1:
        raise UnsupportedError(f"model inputs disagree on the batch dimension: {sorted(fixed)}")
    return fixed.pop() if fixed else int(wanted)


def _ensure_opset(model):
    """QDQ with a per-channel axis needs opset 13: convert older models, refuse if that fails."""
    v = default_opset(model)
    if v >= MIN_OPSET:
        return model
    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise UnsupportedError(f"the model uses opset {v} and could not be converted to {MIN_OPSET} ({exc})",
                               hint="re-export it with opset >= 13 (edgekit export uses 17)") from exc


# ---------------------------------------------------------------------------------------------
# TensorRT target: mark


@dataclass
class _Plan:
    acts: Dict[str, List[Tuple[int, int]]] = field(default_factory=dict)  # tensor -> [(node idx, input idx)]
    weights: Dict[Tuple[int, int], int] = field(default_factory=dict)     # (node idx, input idx) -> axis


def plan_tensorrt(model, exclude: Sequence[str] = (), min_channels: int = 16):
    """Mark phase: which activation inputs and weights get QDQ; plus float/skip reasons."""
    view = GraphView(model)
    plan = _Plan()
    float_nodes: List[Dict[str, str]] = []
    skipped: List[Dict[str, str]] = []
    quantized: List[str] = []
    excluded = set(exclude)
    index = {id(n): i for i, n in enumerate(view.nodes)}
    for i, n in enumerate(view.nodes):
        name = view.node_name(n)
        if n.domain not in ("", "ai.onnx"):
            skipped.append({"node": name, "op_type": f"{n.domain}::{n.op_type}",
                            "reason": "operator outside the ONNX domain: the QDQ rules do not cover it, left float"})
            continue
        if n.op_type not in COMPUTE_OPS:
            continue
        if n.name in excluded:
            float_nodes.append({"node": name, "op_type": n.op_type, "reason": "excluded (--exclude)"})
            continue
        if len(n.input) < 2:
            continue
        w_const = view.const(n.input[1])
        if w_const is not None:
            if not np.issubdtype(w_const.dtype, np.floating):
                skipped.append({"node": name, "op_type": n.op_type, "reason": f"weight dtype {w_const.dtype} is not float"})
                continue
            axis = weight_output_axis(n, w_const.ndim)
            if axis is None or (n.op_type == "MatMul" and w_const.ndim != 2):
                skipped.append({"node": name, "op_type": n.op_type,
                                "reason": f"weight rank {w_const.ndim} has no per-channel layout the rules cover"})
                continue
            ch = channels(view, n)
            if ch is not None and min(ch) < min_channels:
                float_nodes.append({"node": name, "op_type": n.op_type,
                                    "reason": f"thin: {ch[0]} in / {ch[1]} out channels (< {min_channels})"})
                continue
            plan.weights[(i, 1)] = axis
        elif n.op_type == "MatMul":
            # two activations (attention): both per-tensor
            plan.acts.setdefault(n.input[1], []).append((i, 1))
        else:
            skipped.append({"node": name, "op_type": n.op_type,
                            "reason": "weight is computed at run time: no per-channel weight QDQ possible, left float"})
            continue
        if view.const(n.input[0]) is not None:
            skipped.append({"node": name, "op_type": n.op_type, "reason": "data input is a constant"})
            plan.weights.pop((i, 1), None)
            continue
        plan.acts.setdefault(n.input[0], []).append((i, 0))
        quantized.append(name)
    # residual Add: quantize the skip input when the conv branch is INT8
    qset = {view.nodes[i].name for (i, _k) in plan.weights}
    depth = tensor_depths(view)
    for i, n in enumerate(view.nodes):
        k = residual_skip_index(view, n, depth)
        if k is None:
            continue
        conv = conv_branch(view, n.input[1 - k])
        if conv is not None and conv.name in qset and (index[id(conv)], 1) in plan.weights:
            plan.acts.setdefault(n.input[k], []).append((i, k))
    return plan, quantized, float_nodes, skipped


def _concat_groups(model, tensors: Sequence[str]) -> List[List[str]]:
    """Sets of QDQ tensors that must share a scale (connected through Concat inputs/outputs)."""
    parent = {t: t for t in tensors}

    def find(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for n in model.graph.node:
        if n.op_type != "Concat":
            continue
        members = [t for t in list(n.input) + list(n.output) if t in parent]
        for t in members[1:]:
            parent[find(t)] = find(members[0])
    groups: Dict[str, List[str]] = {}
    for t in tensors:
        groups.setdefault(find(t), []).append(t)
    return [g for g in groups.values() if len(g) > 1]


def _float_tensors(model) -> List[str]:
    """Every float activation tensor (graph inputs and node outputs), for the calibration cache."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name for t in model.graph.initializer}
    out = [i.name for i in model.graph.input if i.name not in inits]
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o and types.get(o, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT:
                out.append(o)
    return out


def _quantize_tensorrt(model, data, n_cal, rep, method, exclude, min_channels, percentile, batch_size,
                       with_cache_scales, progress, threads):
    """Mark, calibrate the marked tensors (and every float tensor for the cache), then apply."""
    plan, quantized, float_nodes, skipped = plan_tensorrt(model, exclude, min_channels)
    rep.quantized_nodes, rep.float_nodes, rep.skipped = quantized, float_nodes, skipped
    if not plan.weights and not plan.acts:
        raise UnsupportedError("nothing to quantize: the model has no Conv/ConvTranspose/Gemm/MatMul with enough channels",
                               hint="thin layers (< 16 channels) stay float; see the report's float_nodes")
    tensors = list(plan.acts)
    if with_cache_scales:
        extra = [t for t in _float_tensors(model) if t not in plan.acts]
        tensors += extra
    t0 = time.perf_counter()
    if progress:
        progress(advance=0, total=math.ceil(n_cal / batch_size))
    stats = cal.collect_stats(model, data, tensors, histogram=(method != "minmax"), batch_size=batch_size,
                              indices=(0, n_cal), progress=progress, threads=threads)
    rep.seconds["calibrate"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    amax = {t: cal.compute_amax(st, method, percentile) for t, st in stats.items() if st.count}
    rep.seconds["ranges"] = round(time.perf_counter() - t1, 3)
    for group in _concat_groups(model, list(plan.acts)):
        m = max(amax.get(t, 0.0) for t in group)
        for t in group:
            amax[t] = m
    rep.activation_amax = {t: amax.get(t, 0.0) for t in plan.acts}
    rep.calibration_scales = {t: cal.scale_from_amax(a) for t, a in amax.items()}
    return apply_plan(model, plan, {t: cal.scale_from_amax(amax.get(t, 0.0)) for t in plan.acts})


# ---------------------------------------------------------------------------------------------
# TensorRT target: apply


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric scales max|w| / 127 along ``axis`` (all-zero channels get 1/127)."""
    other = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.max(np.abs(w), axis=other) if other else np.abs(w)
    return np.where(amax > 0, amax / 127.0, 1.0 / 127.0).astype(np.float32)


def apply_plan(model, plan: _Plan, act_scales: Dict[str, float]):
    """Apply phase: rebuild the node list with QDQ inserted before first use (stays topologically sorted)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    view = GraphView(out)
    nodes = list(g.node)
    inits = []
    used = {n.name for n in nodes} | {o for n in nodes for o in n.output} | set(view.initializers)

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    before: Dict[int, List[object]] = {}
    rewired: Dict[Tuple[int, int], str] = {}
    consumer_first: Dict[str, int] = {}
    for t, uses in plan.acts.items():
        first = min(i for i, _ in uses)
        consumer_first[t] = first
        s_name, z_name = fresh(f"{t}_scale"), fresh(f"{t}_zero_point")
        inits += [numpy_helper.from_array(np.array(act_scales[t], np.float32), s_name),
                  numpy_helper.from_array(np.array(0, np.int8), z_name)]
        q_out, dq_out = fresh(f"{t}_quantized"), fresh(f"{t}_dequantized")
        q = helper.make_node("QuantizeLinear", [t, s_name, z_name], [q_out], name=fresh(f"{t}_QuantizeLinear"))
        dq = helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=fresh(f"{t}_DequantizeLinear"))
        before.setdefault(first, []).extend([q, dq])
        for use in uses:
            rewired[use] = dq_out
    done_w: Dict[Tuple[str, int], str] = {}
    for (i, k), axis in plan.weights.items():
        wname = nodes[i].input[k]
        key = (wname, axis)
        if key not in done_w:
            w = view.const(wname)
            sc = weight_scales(w.astype(np.float32), axis)
            s_name, z_name = fresh(f"{wname}_scale"), fresh(f"{wname}_zero_point")
            inits += [numpy_helper.from_array(sc, s_name),
                      numpy_helper.from_array(np.zeros(sc.shape, np.int8), z_name)]
            q_out, dq_out = fresh(f"{wname}_quantized"), fresh(f"{wname}_dequantized")
            # wname may be a Constant node output: fine as is, it is produced before its consumer
            q = helper.make_node("QuantizeLinear", [wname, s_name, z_name], [q_out], name=fresh(f"{wname}_QuantizeLinear"), axis=axis)
            dq = helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=fresh(f"{wname}_DequantizeLinear"), axis=axis)
            before.setdefault(i, []).extend([q, dq])
            done_w[key] = dq_out
        rewired[(i, k)] = done_w[key]
    new_nodes = []
    for i, n in enumerate(nodes):
        new_nodes.extend(before.get(i, []))
        for (ni, k), name in list(rewired.items()):
            if ni == i:
                n.input[k] = name
        new_nodes.append(n)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(inits)
    return out
