"""``--target cpu``: an INT8 model for ONNX Runtime CPU, with automatic mixed precision.

The recipe is ONNX Runtime's quantizer at its documented best for x86; bench/quantize_cpu_speed.py
compares it with that peer set up by hand (parity: same speed and accuracy, see the README) and
measured what else was tried on ResNet-50 (a float stem, float residual Adds/pooling: both slower):

* pre-processing first (shape inference + ORT's graph optimisation, which folds BN into Conv);
* uint8 activations x int8 weights (U8S8): the MLAS kernels for x86 (AVX2/AVX-512/VNNI) are U8S8;
  S8S8 activations (quantize_static's QDQ default) are converted back and forth and run slower;
* per-channel symmetric weights; QOperator format (QLinearConv, ...) directly;
* the classifier head (a Gemm/MatMul writing a graph output) stays float: a tiny share of the time,
  and its INT8 error lands directly on the logits;
* ranges from edgekit's streamed statistics (:func:`streamed_ranges`: in-graph reductions, one small
  sub-batch alive at a time), handed to ORT as its calibration cache: ORT's own entropy/percentile
  calibrators keep every activation of the whole set (~10 GB on ResNet-50 with 100 samples);
* **sensitivity pass** (:func:`sensitivity_pass`): ranges are calibrated once (ORT calibration cache),
  then each quantized Conv/Gemm/MatMul is in turn left float and the output SQNR against the float
  model on a few calibration samples is measured. The layers whose float copy gains most are kept
  float, as long as their share of the model's multiply-accumulates stays within ``float_budget``
  (the speed-up is mostly proportional to the INT8 share of MACs). With ``sensitivity="auto"`` the
  pass only runs when the all-INT8 model is not already faithful (top-1 agreement < 100 % or output
  SQNR < ``target_sqnr_db`` on the probe samples).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import shape_inference

from edgekit.errors import CalibrationError, InputError
from edgekit.quantize import calibrate as cal
from edgekit.quantize.fidelity import centred_sqnr_db
from edgekit.runtime.onnxruntime import OnnxRuntimeRunner

SENSITIVITY_MODES = ("auto", "on", "off")
CALIBRATORS = ("edgekit", "ort")
# Which range rule each --method means on the CPU target. ORT's "entropy" calibrator, with its default
# 128 bins and 128 quantized bins, has a single candidate threshold: the observed range, i.e. min/max.
# That is what this target always gave, and on the uint8 asymmetric activations of the CPU kernels it
# measured more faithful than TensorRT's KL threshold (digits ResNet: 41 vs 37 dB logit SQNR,
# tests/quantize/test_q17_calib.py), so "entropy" keeps meaning it here; the TensorRT target uses the KL.
CPU_RULE = {"entropy": "minmax", "minmax": "minmax", "percentile": "percentile"}
CANDIDATE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# One ORT collection pass per reader unit (see _reader_factory); despite its name ORT honours the
# option for every calibration method.
STRIDE_OPTIONS = {"CalibStridedMinMax": 1}


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (Python ``print`` and native code writing to fd 1) to stderr.

    ONNX Runtime's calibrators print progress lines; stdout must stay clean for ``--json -``.
    """
    _flush_all()
    try:
        saved: Optional[int] = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no fd 1 to redirect (closed, or an embedding host): Python level only
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush_all()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _flush_all() -> None:
    """Flush Python's stdout/stderr and C stdio's buffers (so nothing crosses a redirection)."""
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def head_nodes(model) -> List[str]:
    """Gemm/MatMul nodes that write a graph output (classifier heads)."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and n.name
            and any(o in outputs for o in n.output)]


def node_macs(model) -> Dict[str, float]:
    """Multiply-accumulates per Conv/Gemm/MatMul node (weight size x output positions; shapes from inference)."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {t.name: t for t in model.graph.initializer}
    out: Dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type not in CANDIDATE_OPS or len(n.input) < 2 or n.input[1] not in inits:
            continue
        wsize = float(np.prod(list(inits[n.input[1]].dims)))
        oshape = shapes.get(n.output[0])
        if n.op_type.startswith("Conv") and oshape and len(oshape) > 2:
            positions = float(np.prod(oshape[2:]))
        elif n.op_type == "MatMul" and oshape and len(oshape) > 2:
            positions = float(np.prod(oshape[1:-1]))
        else:
            positions = 1.0
        out[n.name] = wsize * positions
    return out


def _score(ref: Dict[str, np.ndarray], test: Dict[str, np.ndarray]) -> Tuple[float, Optional[float]]:
    """(mean output SQNR dB over the probe samples, centred per element; top-1 agreement of the first
    [N, classes] output or None)."""
    sq, agree = [], None
    for k, f in ref.items():
        q = test[k]
        s = centred_sqnr_db(f, q)  # constant offsets (padded classes with a huge bias) would hide the error
        sq.append(min(s, 120.0) if not math.isnan(s) else -120.0)
        if agree is None and f.ndim == 2 and f.shape[1] > 1:
            agree = float(np.mean(f.argmax(1) == q.argmax(1)))
    return float(np.mean(sq)) if sq else 0.0, agree


def _run(model, feeds: List[Dict[str, np.ndarray]], threads: Optional[int]) -> Dict[str, np.ndarray]:
    """The model's outputs over ``feeds``, concatenated along the batch axis."""
    outs: Dict[str, List[np.ndarray]] = {}
    with OnnxRuntimeRunner(model, threads=threads) as r:
        for feed in feeds:
            for k, v in r.infer(feed).items():
                outs.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in outs.items()}


def sensitivity_pass(float_model, quantize_fn: Callable[[Sequence[str]], object], candidates: Sequence[str],
                     macs: Dict[str, float], feeds: List[Dict[str, np.ndarray]], threads: Optional[int] = None,
                     float_budget: float = 0.10, min_gain_db: float = 0.5, mode: str = "auto",
                     target_sqnr_db: float = 30.0, base_model=None) -> Tuple[List[str], Dict[str, object]]:
    """Pick the layers to keep float; returns ``(names, report dict)``.

    ``quantize_fn(exclude)`` returns the INT8 model with those nodes left float (calibrated once, so
    each call is cheap). Each candidate is scored by the output-SQNR gain (dB, on ``feeds``) of
    leaving only it float; then, highest gain first, layers are kept float while the float share of
    MACs stays <= ``float_budget`` and the gain is >= ``min_gain_db``. The combination is verified:
    if it does not beat the all-INT8 model, nothing is kept float.
    """
    t0 = time.perf_counter()
    ref = _run(float_model, feeds, threads)
    base = base_model if base_model is not None else quantize_fn([])
    base_sqnr, base_agree = _score(ref, _run(base, feeds, threads))
    info: Dict[str, object] = {"mode": mode, "probe_samples": int(sum(next(iter(f.values())).shape[0] for f in feeds)),
                               "float_budget_macs": float_budget, "base_sqnr_db": round(base_sqnr, 2),
                               "base_top1_agreement": base_agree, "kept_float": [], "trials": 0}
    if mode == "off":
        info["ran"] = False
        return [], info
    if mode == "auto" and base_sqnr >= target_sqnr_db and (base_agree is None or base_agree >= 1.0):
        info["ran"] = False
        info["note"] = f"all-INT8 model already faithful on the probe samples (>= {target_sqnr_db} dB, agreement 100 %)"
        return [], info
    total = float(sum(macs.values())) or 1.0
    gains: Dict[str, float] = {}
    for name in candidates:
        s, _a = _score(ref, _run(quantize_fn([name]), feeds, threads))
        gains[name] = s - base_sqnr
        info["trials"] = int(info["trials"]) + 1
    chosen: List[str] = []
    share = 0.0
    for name in sorted(gains, key=lambda k: -gains[k]):
        if gains[name] < min_gain_db:
            break
        frac = macs.get(name, 0.0) / total
        if share + frac > float_budget:
            continue
        chosen.append(name)
        share += frac
    info["gains_db"] = {k: round(v, 2) for k, v in sorted(gains.items(), key=lambda kv: -kv[1])[:10]}
    info["_all_gains"] = dict(gains)
    info["ran"] = True
    if chosen:
        s, a = _score(ref, _run(quantize_fn(chosen), feeds, threads))
        info["final_sqnr_db"], info["final_top1_agreement"] = round(s, 2), a
        if s <= base_sqnr:
            info["note"] = "the combination did not beat the all-INT8 model on the probe samples: kept all INT8"
            chosen = []
    info["kept_float"] = list(chosen)
    info["float_mac_share"] = round(sum(macs.get(c, 0.0) for c in chosen) / total, 4)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return chosen, info


def quantize_cpu(model, data, n_cal: int, rep, method: str, exclude: Sequence[str], percentile: float,
                 batch_size: int, progress, threads: Optional[int], sensitivity: str = "auto",
                 float_budget: float = 0.10, probe_samples: int = 16, target_sqnr_db: float = 30.0,
                 calibrator: str = "edgekit"):
    """QOperator U8S8 per-channel model for ORT CPU; fills ``rep`` (float_nodes, sensitivity).

    ``calibrator``: "edgekit" (default) streams each tensor's statistics batch by batch
    (:func:`streamed_ranges`) and hands ORT the ranges as its calibration cache; "ort" lets ORT's
    own calibrators collect them (its entropy/percentile calibrators keep every activation of the
    whole set in memory: ~10 GB on ResNet-50 with 100 samples). Kept for comparison (bench, tests).
    """
    if calibrator not in CALIBRATORS:
        raise InputError(f"unknown calibrator {calibrator!r}", hint="one of " + ", ".join(CALIBRATORS))
    if sensitivity not in SENSITIVITY_MODES:
        raise InputError(f"unknown sensitivity mode {sensitivity!r}", hint="one of " + ", ".join(SENSITIVITY_MODES))
    if not 0.0 <= float_budget <= 1.0:
        raise InputError(f"float budget must be a fraction of the MACs in [0, 1], got {float_budget}")
    rep.quantized_nodes = []
    head = head_nodes(model)
    for h in head:
        if h not in exclude:
            rep.float_nodes.append({"node": h, "op_type": "Gemm/MatMul", "reason": "classifier head: kept float on CPU"})
    fixed_exclude = list(dict.fromkeys(list(exclude) + head))
    if progress:
        progress(advance=0, total=math.ceil(n_cal / batch_size))
    with tempfile.TemporaryDirectory(prefix="edgekit-q-") as tmp:
        pre = _preprocess(model, tmp, rep)
        pre_model = onnx.load(pre)
        t1 = time.perf_counter()
        if calibrator == "edgekit":
            ranges = streamed_ranges(pre_model, data, n_cal, batch_size, method, percentile, progress, threads)
            write_ort_cache(ranges, method, os.path.join(tmp, "ranges.json"))
        qfn = _static_quantizer(pre, tmp, _reader_factory(data, n_cal, batch_size, progress), method, percentile,
                                fixed_exclude)
        out = qfn([])
        rep.seconds["calibrate"] = round(time.perf_counter() - t1, 3)
        excluded = set(fixed_exclude)
        candidates = [n.name for n in pre_model.graph.node if n.op_type in CANDIDATE_OPS and n.name
                      and n.name not in excluded]
        if sensitivity != "off" and candidates and n_cal > 0:
            k = max(1, min(probe_samples, n_cal))
            feeds = [data.take(n_cal - k + s, n_cal - k + e) for s, e in cal.batches(k, batch_size)]
            chosen, info = sensitivity_pass(pre_model, qfn, candidates, node_macs(pre_model), feeds, threads=threads,
                                            float_budget=float_budget, mode=sensitivity,
                                            target_sqnr_db=target_sqnr_db, base_model=out)
            _report_kept_float(pre_model, chosen, info, rep)
            if chosen:
                out = qfn(chosen)
        else:
            rep.sensitivity = {"mode": sensitivity, "ran": False}
    rep.quantized_nodes = [n.name for n in out.graph.node if n.op_type.startswith("QLinear")
                           or n.op_type in ("ConvInteger", "MatMulInteger", "QGemm")]
    return out


def calibration_tensors(model) -> List[str]:
    """The tensors ORT's calibrators measure: every float input/output of a node, initializers aside."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.output) + list(g.input)
             if vi.type.HasField("tensor_type")}
    inits = {t.name for t in model.graph.initializer}
    wanted = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    names: Dict[str, None] = {}
    for n in model.graph.node:
        for t in list(n.input) + list(n.output):
            if t and t not in inits and types.get(t) in wanted:
                names[t] = None
    return list(names)


def streamed_ranges(model, data, n_cal: int, batch_size: int, method: str, percentile: float,
                    progress=None, threads: Optional[int] = None) -> Dict[str, Tuple[float, float]]:
    """``{tensor: (rmin, rmax)}`` over the first ``n_cal`` samples, statistics streamed batch by batch.

    Memory is one batch of activations plus a 2048-bin histogram per tensor, whatever the sample
    count. The threshold ``amax`` of ``method`` (see :mod:`edgekit.quantize.calibrate`, and
    :data:`CPU_RULE`) clips the observed ``[min, max]`` on both sides, as ORT's own calibrators do.
    """
    tensors = calibration_tensors(model)
    rule = CPU_RULE[method]
    stats = cal.collect_stats(model, data, tensors, histogram=rule != "minmax", batch_size=batch_size,
                              indices=(0, n_cal), progress=progress, threads=threads)
    ranges: Dict[str, Tuple[float, float]] = {}
    for name, st in stats.items():
        if st.count == 0:
            continue
        amax = cal.compute_amax(st, rule, percentile)
        ranges[name] = (max(st.lo, -amax), min(st.hi, amax))
    return ranges


def write_ort_cache(ranges: Dict[str, Tuple[float, float]], method: str, path: str) -> None:
    """Write ``ranges`` as ONNX Runtime's calibration cache, so ``quantize_static`` skips its calibration."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data  # lazy: onnxruntime

    data = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(_ort_method(method), data), path)


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod  # lazy: onnxruntime

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def _reader_factory(data, n_cal: int, batch_size: int, progress) -> Callable[[], object]:
    """A maker of fresh ORT calibration readers over the first ``n_cal`` samples (ticks ``progress``).

    ORT's histogram calibrators stack every batch of one collection pass into one array, so the
    batches of a pass must all have the same size. The reader therefore has one or two *units* (ORT's
    ``CalibStridedMinMax`` ranges, stride 1, see :data:`STRIDE_OPTIONS`): the full batches, then the
    last partial batch; each unit is collected separately and ORT merges the results.
    """
    from onnxruntime.quantization import CalibrationDataReader  # lazy: onnxruntime is imported on use

    spans = list(cal.batches(n_cal, batch_size))
    units = [spans[:-1], spans[-1:]] if len(spans) > 1 and spans[-1][1] - spans[-1][0] < batch_size else [spans]

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(units))

        def __len__(self):
            return len(units)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter([s for u in units[start_index:end_index] for s in u])

        def get_next(self):
            nxt = next(self._it, None)
            if nxt is None:
                return None
            if progress:
                progress(advance=1)
            return data.take(*nxt)

    return _Reader


def _preprocess(model, tmp: str, rep) -> str:
    """Save the float model under ``tmp`` and run ORT's quantization pre-processing; the path to quantize."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: onnxruntime

    src = os.path.join(tmp, "float.onnx")
    pre = os.path.join(tmp, "pre.onnx")
    onnx.save_model(model, src)
    t0 = time.perf_counter()
    try:
        with stdout_to_stderr():
            quant_pre_process(src, pre, skip_symbolic_shape=True)
    except Exception as exc:  # pre-processing is an optimisation: go on without it
        rep.warnings.append(f"ONNX Runtime pre-processing failed ({type(exc).__name__}); quantizing without it")
        pre = src
    rep.seconds["preprocess"] = round(time.perf_counter() - t0, 3)
    return pre


def _static_quantizer(pre: str, tmp: str, reader: Callable[[], object], method: str, percentile: float,
                      fixed_exclude: Sequence[str]) -> Callable[[Sequence[str]], object]:
    """``qfn(more_excluded) -> INT8 ModelProto``: ORT's quantize_static, calibrated on the first call only
    (the ranges are cached under ``tmp``), so every later call just re-quantizes with other float layers."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # lazy: onnxruntime

    ort_method = _ort_method(method)
    cache = os.path.join(tmp, "ranges.json")
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "CalibMovingAverage": False, **STRIDE_OPTIONS}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    counter = [0]

    def qfn(more: Sequence[str]):
        counter[0] += 1
        dst = os.path.join(tmp, f"int8_{counter[0]}.onnx")
        first = not os.path.exists(cache)
        try:
            with stdout_to_stderr():
                quantize_static(pre, dst, reader() if first else None, quant_format=QuantFormat.QOperator,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                reduce_range=False, calibrate_method=ort_method,
                                nodes_to_exclude=list(fixed_exclude) + list(more), extra_options=extra,
                                calibration_cache_path=cache)
        except CalibrationError:
            raise
        except Exception as exc:
            raise CalibrationError(f"ONNX Runtime quantization failed: {str(exc).splitlines()[0][:200]}",
                                   hint="check the calibration data against the model input") from exc
        m = onnx.load(dst)
        os.unlink(dst)
        return m

    return qfn


def _report_kept_float(pre_model, chosen: Sequence[str], info: Dict[str, object], rep) -> None:
    """Record the sensitivity pass in ``rep``: its summary and one float_nodes entry per layer kept float."""
    ops = {n.name: n.op_type for n in pre_model.graph.node}
    gains = info.pop("_all_gains", {})
    for c in chosen:
        rep.float_nodes.append({"node": c, "op_type": ops.get(c, ""),
                                "reason": f"sensitivity pass: +{gains.get(c, 0.0):.2f} dB output SQNR "
                                          "when this layer alone is left float"})
    rep.sensitivity = info
    rep.seconds["sensitivity"] = info.get("seconds", 0.0)
