"""`edgekit quantize --target cpu` against ONNX Runtime's quantizer set up as its docs advise, side by side.

The peer (``ort_tuned_*``) is ``onnxruntime.quantization`` at its documented best for x86 CPU:
``quant_pre_process`` first, then ``quantize_static`` with uint8 activations x int8 weights (U8S8),
per-channel weights, the classifier head left float (``nodes_to_exclude``), MinMax calibration on the
same samples, in both formats (QOperator and QDQ); the faster of the two is the reference. The naive
``quantize_static`` defaults are timed too, for the record only.

Two parts, each measured in one run with the models interleaved (machine load hits all equally):

* **accuracy** on real data: digits classifiers from ``edgekit/models/digits.py`` (trained on
  scikit-learn's handwritten digits, plain heads), calibrated on training images, scored on the 450
  held-out test images: accuracy vs the labels, top-1 agreement and logit SQNR vs FP32;
* **speed**: ResNet-50 with random weights (``bench/quantize_calib_memory.py``'s model: its head is
  the stock ``Linear`` init, no bias trick) at batch 1, median latency; ratios vs FP32 and vs the peer.

Timings are taken under load from other jobs on a 2-core machine: read the ratios, not the ms.

Run: .venv/bin/python bench/quantize_cpu_speed.py [--threads 2] [--iters 30] [--archs resnet,mobilenetv2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    data = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _reader(x: np.ndarray, name: str, batch: int = 8):
    from onnxruntime.quantization import CalibrationDataReader

    class R(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

        def get_next(self):
            return next(self.it, None)

    return R()


def ort_tuned(float_path: Path, calib: np.ndarray, fmt: str, tmp: str, variant: str = "") -> str:
    """ONNX Runtime's quantizer as its documentation advises for x86 CPU; the path of the INT8 model.

    ``variant`` (levers tried to get ahead of it): "stem_float" leaves the first Conv float,
    "conv_only" quantizes Conv/Gemm/MatMul only (residual Adds and pooling float)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekit.quantize.cpu import head_nodes, stdout_to_stderr

    os.makedirs(tmp, exist_ok=True)
    pre = os.path.join(tmp, "ort_pre.onnx")
    dst = os.path.join(tmp, f"ort_tuned_{fmt}{variant}.onnx")
    with stdout_to_stderr():
        if not os.path.exists(pre):
            quant_pre_process(str(float_path), pre, skip_symbolic_shape=True)
        pm = onnx.load(pre)
        exclude = head_nodes(pm)
        if variant == "stem_float":
            exclude.append(next(n.name for n in pm.graph.node if n.op_type == "Conv"))
        quantize_static(pre, dst, _reader(calib, pm.graph.input[0].name),
                        quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        op_types_to_quantize=["Conv", "Gemm", "MatMul"] if variant == "conv_only" else None)
    return dst


def ort_naive(float_path: Path, calib: np.ndarray, tmp: str) -> str:
    import onnx
    from onnxruntime.quantization import quantize_static

    from edgekit.quantize.cpu import stdout_to_stderr

    dst = os.path.join(tmp, "ort_naive.onnx")
    with stdout_to_stderr():
        quantize_static(str(float_path), dst, _reader(calib, onnx.load(str(float_path)).graph.input[0].name))
    return dst


def edgekit_cpu(float_path: Path, calib: np.ndarray, threads: int, sensitivity: str):
    import onnx

    from edgekit.quantize.calibrate import CalibrationData
    from edgekit.quantize.ptq import quantize

    fm = onnx.load(str(float_path))
    name = fm.graph.input[0].name
    qm, rep = quantize(fm, CalibrationData({name: calib}, "bench"), method="minmax", target="cpu",
                       holdout_fraction=0.0, measure_fidelity=False, threads=threads, sensitivity=sensitivity)
    return qm, rep


def interleaved_ms(sessions: dict, x: np.ndarray, iters: int) -> dict:
    """Median latency (ms) of each session over ``iters`` rounds, one run of every session per round."""
    name = next(iter(sessions.values())).get_inputs()[0].name
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {name: x[:1]})
    times = {k: [] for k in sessions}
    for i in range(iters):
        xi = x[i % len(x): i % len(x) + 1]
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {name: xi})
            times[k].append(time.perf_counter() - t)
    out = {}
    for k, v in times.items():
        v = np.asarray(v) * 1e3
        q1, q3 = np.percentile(v, [25, 75])
        out[k] = {"median_ms": round(float(np.median(v)), 3), "iqr_ms": round(float(q3 - q1), 3)}
    return out


def _outputs(session, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])


def accuracy_part(arch: str, threads: int, iters: int, tmp: str) -> dict:
    from edgekit.models import digits
    from edgekit.quantize.fidelity import centred_sqnr_db

    xtr, _ytr, xte, yte = digits.load(image_size=16, seed=0)
    model, _ = digits.trained(arch, seed=0)
    fpath = digits.export_onnx(model, Path(tmp) / f"digits_{arch}.onnx", opset=17)
    calib = xtr[:200].astype(np.float32)
    qm, rep = edgekit_cpu(fpath, calib, threads, "auto")
    sess = {"fp32": _session(fpath, threads), "edgekit_cpu": _session(qm, threads)}
    for fmt in ("qoperator", "qdq"):
        sess[f"ort_tuned_{fmt}"] = _session(ort_tuned(fpath, calib, fmt, os.path.join(tmp, arch)), threads)
    ref = _outputs(sess["fp32"], xte.astype(np.float32))
    res = {"test_images": int(len(xte)), "calibration_images": int(len(calib)),
           "kept_float": [f["node"] for f in rep.float_nodes], "models": {}}
    for k, s in sess.items():
        out = _outputs(s, xte.astype(np.float32))
        res["models"][k] = {"accuracy": round(float(np.mean(out.argmax(1) == yte)), 4),
                            "top1_agreement_vs_fp32": round(float(np.mean(out.argmax(1) == ref.argmax(1))), 4),
                            "logit_sqnr_db": None if k == "fp32" else round(centred_sqnr_db(ref, out), 2)}
    lat = interleaved_ms(sess, xte.astype(np.float32), iters * 3)
    for k, v in lat.items():
        res["models"][k].update(v)
    return res


def speed_part(threads: int, iters: int, tmp: str, naive: bool, variants: bool = False) -> dict:
    from quantize_calib_memory import _model_path

    fpath = _model_path()
    calib = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((8, 3, 224, 224)).astype(np.float32)
    qm, rep = edgekit_cpu(fpath, calib, threads, "off")
    sess = {"fp32": _session(fpath, threads), "edgekit_cpu": _session(qm, threads)}
    for fmt in ("qoperator", "qdq"):
        sess[f"ort_tuned_{fmt}"] = _session(ort_tuned(fpath, calib, fmt, os.path.join(tmp, "r50")), threads)
    if naive:
        sess["ort_naive_defaults"] = _session(ort_naive(fpath, calib, tmp), threads)
    if variants:
        for v in ("stem_float", "conv_only"):
            sess[f"ort_tuned_qoperator_{v}"] = _session(ort_tuned(fpath, calib, "qoperator", os.path.join(tmp, "r50"),
                                                                  v), threads)
    lat = interleaved_ms(sess, x, iters)
    fp32 = lat["fp32"]["median_ms"]
    peer = min(lat["ort_tuned_qoperator"]["median_ms"], lat["ort_tuned_qdq"]["median_ms"])
    res = {"model": "edgekit resnet50, random weights (stock head), opset 17, batch 1",
           "kept_float": [f["node"] for f in rep.float_nodes], "latency": lat,
           "speedup_vs_fp32": {k: round(fp32 / v["median_ms"], 3) for k, v in lat.items()},
           "edgekit_vs_best_ort_tuned": round(peer / lat["edgekit_cpu"]["median_ms"], 3)}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--archs", default="resnet,mobilenetv2", help="digits architectures for the accuracy part")
    ap.add_argument("--no-speed", action="store_true", help="skip the ResNet-50 speed part")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--variants", action="store_true", help="also time the levers tried to beat the peer "
                                                            "(float stem; Conv-only quantization)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    res = {"threads": a.threads, "iters": a.iters,
           "peer": "onnxruntime.quantization: quant_pre_process + quantize_static U8S8 per-channel, head float, "
                   "MinMax, QOperator and QDQ",
           "note": "measured under load on a shared 2-core machine: compare ratios within this run",
           "accuracy": {}}
    with tempfile.TemporaryDirectory(prefix="bench-q-") as tmp:
        for arch in [s for s in a.archs.split(",") if s]:
            res["accuracy"][arch] = accuracy_part(arch, a.threads, a.iters, tmp)
            print(arch, json.dumps(res["accuracy"][arch]["models"]), file=sys.stderr, flush=True)
        if not a.no_speed:
            res["speed_resnet50"] = speed_part(a.threads, a.iters, tmp, not a.no_naive, a.variants)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
