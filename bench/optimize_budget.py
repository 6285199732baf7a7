"""The goal of issue 19, measured: at CPU latency budgets of 0.5x and 0.3x the original (ONNX
Runtime, one thread, timed side by side in one run), the top-1 the search keeps on held-out data,
against the best single-knob answer at the same budget (FLOPs-target pruning alone with L1 -- what
`edgekit prune --flops-target` gives -- swept over levels, and INT8 alone).

Models: small nets trained on scikit-learn's digits (CNNs and a ViT; edgekit.models.digits, cached).
The search selects on a validation split carved from the training data; every accuracy printed is on
the test split it never saw.

    python bench/optimize_budget.py [--archs resnet,vgg,vit] [--trials 16] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.graph.io import load_model  # noqa: E402
from edgekit.models import digits  # noqa: E402
from edgekit.optimize.data import LabelledData  # noqa: E402
from edgekit.optimize.evaluate import evaluate  # noqa: E402
from edgekit.optimize.recipe import Recipe, build  # noqa: E402
from edgekit.optimize.search import OptimizeSettings, optimize  # noqa: E402


def _single_knobs(res, test: LabelledData):
    """Best test top-1 within budget for each single knob, from the candidates the search timed
    plus its own sweep below (FLOPs-only: L1 global without rounding; INT8 only: no pruning)."""
    out = {}
    for name, pred in (("flops-only (l1)", lambda r: r.prunes and r.criterion == "l1" and r.scope == "global"
                        and r.round_to == 1 and r.precision == "fp32"),
                       ("int8-only", lambda r: not r.prunes and r.precision == "int8")):
        within = [c for c in res.candidates if pred(c.recipe) and c.status == "ok" and c.latency
                  and c.latency.median_ms <= res.budget_ms]
        out[name] = max(within, key=lambda c: c.accuracy) if within else None
    return out


def run(arch: str, budgets, trials: int, batch: int, workdir: Path):
    torch_model, _ = digits.trained(arch)
    xtr, ytr, xte, yte = digits.load()
    path = digits.export_onnx(torch_model, workdir / f"{arch}.onnx")
    model = load_model(path)
    val = LabelledData({"images": xtr[-300:]}, ytr[-300:], f"digits-val-{arch}")
    test = LabelledData({"images": xte}, yte, "digits-test")
    calib = LabelledData({"images": xtr[:256]}, None, "digits-calib").calibration(256)
    base_test = evaluate(model, test).top1
    rows = []
    for speedup in budgets:
        # the single-knob sweep: every FLOPs level with L1 (global, no rounding), and INT8 alone
        levels = (0.85, 0.7, 0.55, 0.45, 0.35, 0.25, 0.18)
        settings = OptimizeSettings(speedup=speedup, trials=trials, batch=batch, duration_s=0.4, levels=levels)
        t0 = time.perf_counter()
        res = optimize(model, settings, val, calib, workdir / f"{arch}-{speedup}")
        sweep = time.perf_counter() - t0
        knobs = _single_knobs(res, test)
        # also the sweep the search may not have sampled
        for lv in levels:
            r = Recipe(flops_target=lv, criterion="l1", scope="global", round_to=1)
            if not any(c.recipe.key() == r.key() for c in res.candidates):
                from edgekit.optimize.search import _Target

                t = _Target(model, settings, val, calib)
                m = build(model, r, calib)
                lat = t.time(m, "fp32").median_ms
                if lat <= res.budget_ms:
                    acc = evaluate(m, val).top1
                    best = knobs["flops-only (l1)"]
                    if best is None or acc > best.accuracy:
                        from edgekit.optimize.latency import Timing
                        from edgekit.optimize.search import Candidate

                        knobs["flops-only (l1)"] = Candidate(-2, r, Timing(lat, "measured"), acc)
        pick_test = evaluate(build(model, res.pick.recipe, calib), test).top1 if res.pick else None
        knob_test = {k: (None if c is None else evaluate(build(model, c.recipe, calib), test).top1) for k, c in knobs.items()}
        rows.append({"arch": arch, "budget": f"{1 / speedup:.2f}x", "baseline_ms": res.baseline.latency.median_ms,
                     "budget_ms": res.budget_ms, "status": res.status,
                     "pick": res.pick.recipe.label() if res.pick else None,
                     "pick_ms": res.pick.latency.median_ms if res.pick else None,
                     "final": res.final, "test_top1_base": base_test, "test_top1_pick": pick_test,
                     "drop_points": None if pick_test is None else 100 * (base_test - pick_test),
                     "single_knob_test_top1": knob_test, "candidates": len(res.candidates), "search_s": round(sweep, 1)})
        print(json.dumps(rows[-1], default=str), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="resnet,vgg,vit")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--budgets", default="2,3.333")
    args = ap.parse_args()
    import logging

    import torch

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs every non-float tensor it skips
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            rows += run(arch, [float(b) for b in args.budgets.split(",")], args.trials, args.batch, Path(tmp))
    print("\n| model | budget | base ms | budget ms | pick | pick ms (search) | base/pick re-timed | "
          "test top-1 base | pick | drop | FLOPs-only (L1) | INT8-only | status |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["single_knob_test_top1"]
        f = r["final"] or {}

        def pct(v):
            return "-" if v is None else f"{100 * v:.2f}"
        print(f"| {r['arch']} | {r['budget']} | {r['baseline_ms']:.3f} | {r['budget_ms']:.3f} | {r['pick']} | "
              f"{r['pick_ms']:.3f} | {f.get('original_ms', 0):.3f}/{f.get('pick_ms', 0):.3f} | {pct(r['test_top1_base'])} | "
              f"{pct(r['test_top1_pick'])} | {r['drop_points']:.2f} | {pct(k['flops-only (l1)'])} | {pct(k['int8-only'])} | "
              f"{r['status']} |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
