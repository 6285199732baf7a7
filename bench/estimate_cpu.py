"""`edgekit estimate --device cpu` against `edgekit profile --device cpu`, model by model.

The corpus: every built-in model (edgekit.models, exported as `edgekit export NAME` does, at its
recipe's input shape) and every model of the test corpus (edgekit.models.zoo, TorchScript export
at its corpus shape). The host is calibrated first (or the cache is reused); then each model is
measured with the profile harness (ORT_ENABLE_ALL, default threads, median latency) and estimated
right after, so both see the same machine load. Reports per model the estimate / measurement ratio
and, over the corpus, the median |error| and the shares within +-10 / 20 / 25 %, plus the time of
the calibration and of one estimate (ResNet-50).

Run: PYTHONPATH=. .venv/bin/python bench/estimate_cpu.py [--duration 1] [--only a,b] [--out r.json]
     [--write-band]  (writes edgekit/estimate/params/cpu_band.json, the band the estimator ships)
Exported ONNX files are kept under build/estimate_cpu/ so a rerun skips the exports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / "build" / "estimate_cpu"
BAND = ROOT / "edgekit" / "estimate" / "params" / "cpu_band.json"


def corpus() -> List[str]:
    from edgekit import models
    from edgekit.models import zoo

    return [f"builtin:{n}" for n in models.names()] + [f"zoo:{n}" for n in zoo.names()]


def onnx_file(name: str) -> Path:
    """The ONNX file of corpus entry ``name`` (exported once, then reused)."""
    from edgekit.exporting import export
    from edgekit.graph.io import save_model
    from edgekit.models import zoo

    kind, model = name.split(":", 1)
    path = WORK / f"{kind}-{model}.onnx"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        if kind == "builtin":
            export(model, path)
        else:
            save_model(zoo.to_onnx(model), path)
    return path


def measure(path: Path, duration: float, threads: Optional[int]) -> Tuple[float, float]:
    """``(median, min)`` latency in ms, from the harness `edgekit profile` runs."""
    from edgekit.bench.harness import HarnessSettings, profile_model

    rep = profile_model(path, "cpu", "onnxruntime", HarnessSettings(warmup_ms=200, duration_s=duration,
                                                                   iterations=10, threads=threads))
    return float(rep.latency.median), float(rep.latency.min)


def summarize(rows: List[Dict]) -> Dict[str, float]:
    errs = [abs(r["error_pct"]) for r in rows]
    n = len(errs)
    return {"n": n, "median_abs_pct": statistics.median(errs) if errs else 0.0,
            "within_10_pct": sum(e <= 10 for e in errs) / n if n else 0.0,
            "within_20_pct": sum(e <= 20 for e in errs) / n if n else 0.0,
            "within_25_pct": sum(e <= 25 for e in errs) / n if n else 0.0}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=1.0, help="seconds each model is measured (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's)")
    ap.add_argument("--only", default="", help="comma-separated corpus names (builtin:resnet50,zoo:unet)")
    ap.add_argument("--recalibrate", action="store_true", help="ignore the cached calibration")
    ap.add_argument("--cache-dir", default=None, help="calibration cache (default: a fresh temp folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    ap.add_argument("--write-band", action="store_true", help=f"write the measured band to {BAND.relative_to(ROOT)}")
    args = ap.parse_args(argv)

    from edgekit.estimate.cpu import estimate_cpu
    from edgekit.estimate.cpu_calib import calibration
    from edgekit.graph.io import load_model

    names = [n for n in args.only.split(",") if n] or corpus()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="edgekit-est-cpu-")
    t0 = time.perf_counter()
    cal = calibration(threads=args.threads, cache_dir=cache, recalibrate=args.recalibrate)
    calib_s = time.perf_counter() - t0
    print(f"calibration: {cal.seconds:.1f} s ({'cached' if cal.from_cache else 'run now'}), "
          f"fit {cal.fit_median_abs_pct:.1f} % median on the micro-benchmarks; key {cal.key}", flush=True)
    rows: List[Dict] = []
    print(f"{'model':28s} {'min ms':>10s} {'median ms':>10s} {'estimate':>10s} {'error':>8s} {'est. s':>7s}")
    for name in names:
        try:
            path = onnx_file(name)
        except Exception as exc:  # an export that fails here is reported, not fatal to the run
            print(f"{name:28s} export failed: {exc}", flush=True)
            continue
        median, ms = measure(path, args.duration, args.threads)
        model = load_model(path)
        t1 = time.perf_counter()
        est = estimate_cpu(model, cache_dir=cache, threads=args.threads)
        est_s = time.perf_counter() - t1
        err = 100.0 * (est.latency_ms - ms) / ms
        rows.append({"model": name, "measured_ms": ms, "median_ms": median, "estimate_ms": est.latency_ms, "error_pct": err,
                     "error_vs_median_pct": 100.0 * (est.latency_ms - median) / median,
                     "estimate_s": est_s, "unmodelled": est.unmodelled})
        print(f"{name:28s} {ms:10.3f} {median:10.3f} {est.latency_ms:10.3f} {err:+7.1f}% {est_s:7.3f}", flush=True)
    s = summarize(rows)
    s_med = summarize([dict(r, error_pct=r["error_vs_median_pct"]) for r in rows])
    print(f"\n{s['n']} models: median |error| {s['median_abs_pct']:.1f} %, within +-10 % {100 * s['within_10_pct']:.0f} %, "
          f"+-20 % {100 * s['within_20_pct']:.0f} %, +-25 % {100 * s['within_25_pct']:.0f} % "
          f"(goal: +-20 % on >= 80 %) against the harness's min; against its median: median |error| "
          f"{s_med['median_abs_pct']:.1f} %, +-20 % {100 * s_med['within_20_pct']:.0f} %; calibration {calib_s:.1f} s")
    result = {"summary": s, "summary_vs_median": s_med, "calibration": {"seconds": cal.seconds, "key": cal.key, "fit_median_abs_pct": cal.fit_median_abs_pct,
                                            "params": cal.params}, "rows": rows,
              "command": "bench/estimate_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.write_band:
        band = {k: s[k] for k in ("median_abs_pct", "within_10_pct", "within_20_pct", "within_25_pct", "n")}
        band["method"] = (f"estimate vs the `edgekit profile` harness's min latency over {s['n']} built-in + corpus models, "
                          f"{cal.key['cpu']}, {cal.key['cores']} cores, ORT {cal.key['onnxruntime']}, "
                          f"threads {cal.key['threads']}, measured under load")
        band["command"] = "PYTHONPATH=. python bench/estimate_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
        band["measured"] = time.strftime("%Y-%m-%d")
        BAND.write_text(json.dumps(band, indent=1) + "\n")
        print(f"band written to {BAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
