"""Leave-one-model-out validation of the device latency estimator on the published figures.

For every architecture among the usable figures (tests/fixtures/latency/figures.jsonl, rules in
edgekit.estimate.calibrate): fit the cost model on all the other architectures, predict this one
on every board and precision it was measured on. Reported per board and precision: median
|error| and the share within +-10 % / +-25 %, next to the issue's anchor (ms = GMACs / (peak x c)
+ o, one constant, fitted the same way) and the anchor fitted on the held-out figures themselves.

    PYTHONPATH=. .venv/bin/python bench/estimate_cv.py [--json out.json] [--write-params]

``--write-params`` also refits on every figure and writes edgekit/estimate/params/device-v2.json
with the LOMO bands (this is the script that produces the shipped parameter file). The first run
exports the figure models to ONNX under the edgekit cache (a few minutes, BERT-Large ~1 min).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgekit.estimate import calibrate  # noqa: E402
from edgekit.estimate.costmodel import PARAMS_FILE  # noqa: E402


def _row(name: str, errs: np.ndarray, anc: np.ndarray, anc_self: np.ndarray) -> list:
    b, a, s = calibrate.band(errs, ""), calibrate.band(anc, ""), calibrate.band(anc_self, "")
    return [name, b["n"], b["median_abs_pct"], round(100 * b["within_10_pct"]), round(100 * b["within_25_pct"]),
            a["median_abs_pct"], round(100 * a["within_25_pct"]), s["median_abs_pct"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the per-figure results here")
    ap.add_argument("--write-params", action="store_true", help="refit on all figures and write the params file")
    args = ap.parse_args()
    t0 = time.time()
    figs, excluded = calibrate.load_figures()
    print(f"{len(figs)} usable figures; excluded: " + "; ".join(f"{v} {k}" for k, v in excluded.items()))
    ds = calibrate.build_dataset(figs)
    print(f"dataset built in {time.time() - t0:.1f} s ({len(ds.arrays.cls)} layer rows)")
    res = calibrate.lomo(ds, progress=lambda k, n: print(f"  fold {k}/{n}", end="\r", flush=True))
    meas = np.array([f.latency_ms for f in figs])
    c, o = calibrate.fit_anchor(ds, np.arange(len(figs)))   # anchor fitted on the held-out figures themselves
    anc_self = calibrate.anchor_predict(ds, c, o) / meas - 1
    cols = ["board/precision", "n", "median|err| %", "<=10 %", "<=25 %", "anchor med %", "anchor <=25 %",
            "anchor self-fit med %"]
    rows = []
    keys = sorted({(f.device, f.precision) for f in figs})
    for dev, prec in keys:
        sel = np.array([i for i, f in enumerate(figs) if (f.device, f.precision) == (dev, prec)])
        rows.append(_row(f"{dev}/{prec}", res["model"][sel], res["anchor"][sel], anc_self[sel]))
    rows.append(_row("all", res["model"], res["anchor"], anc_self))
    width = [max(len(str(r[i])) for r in rows + [cols]) for i in range(len(cols))]
    for r in [cols] + rows:
        print("  ".join(str(v).rjust(w) for v, w in zip(r, width)))
    print("\nper architecture (LOMO median |error| %):")
    for g in sorted({f.group for f in figs}):
        sel = [i for i, f in enumerate(figs) if f.group == g]
        print(f"  {g.split(':')[1]:22s} n={len(sel):3d}  {100 * np.median(np.abs(res['model'][sel])):6.1f}")
    if args.write_params:
        params = calibrate.fit(ds)
        calibrate.write_params(params, calibrate.bands_from(ds, res["model"]), PARAMS_FILE)
        print(f"wrote {PARAMS_FILE}")
    if args.json:
        out = [{"id": f.id, "model": f.model, "device": f.device, "precision": f.precision, "batch": f.batch,
                "measured_ms": f.latency_ms, "lomo_error": float(e), "anchor_error": float(a)}
               for f, e, a in zip(figs, res["model"], res["anchor"])]
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "columns": cols, "figures": out}, fh, indent=1)
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
