"""Calibration time: ResNet-50, 200 samples, `edgekit quantize` TensorRT target (goal: < 60 s here).

Times the library call behind `edgekit quantize --target tensorrt` with the fidelity pass off and
no hold-out, so every one of the 200 samples goes through calibration. Two figures per method:
``calibrate_s`` (ONNX Runtime over the data + streaming statistics of the QDQ tensors AND of every
float tensor for the TensorRT calibration cache) and ``total_s`` (+ ranges + graph rewrite). The
model is bench/quantize_calib_memory.py's (ResNet-50, random weights, cached after its first run),
the data standard-normal images. Peak memory per method: bench/quantize_calib_memory.py.

Run: .venv/bin/python bench/quantize_calib_time.py [--methods entropy,minmax,percentile] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--methods", default="entropy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import numpy as np
    import onnx

    from edgekit.quantize.calibrate import CalibrationData
    from edgekit.quantize.ptq import quantize
    from edgekit.quantize.rules import check_qdq
    from quantize_calib_memory import _model_path

    fm = onnx.load(str(_model_path()))
    xc = np.random.default_rng(0).standard_normal((a.samples, 3, 224, 224)).astype(np.float32)
    res = {"model": "edgekit resnet50, random weights (see bench/quantize_calib_memory.py)", "samples": int(len(xc)),
           "threads": a.threads, "goal_s": 60, "methods": {}}
    for method in a.methods.split(","):
        t0 = time.perf_counter()
        qm, rep = quantize(fm, CalibrationData({"images": xc}, "bench"), method=method, target="tensorrt",
                           holdout_fraction=0.0, measure_fidelity=False, threads=a.threads)
        total = time.perf_counter() - t0
        res["methods"][method] = {
            "total_s": round(total, 2), "calibrate_s": rep.seconds.get("calibrate"),
            "ranges_s": rep.seconds.get("ranges"), "calibrated_samples": rep.samples,
            "cache_tensors": len(rep.calibration_scales), "qdq_tensors": len(rep.activation_amax),
            "rule_errors": len([v for v in check_qdq(qm) if v.severity == "error"]),
            "under_goal": total < 60,
        }
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
