"""The goal of issue 19, measured: at CPU latency budgets of 0.5x and 0.3x the original (ONNX
Runtime, one thread, timed side by side in one run), the top-1 the search keeps on held-out data,
against the best single-knob answer at the same budget (FLOPs-target pruning alone with L1 -- what
`edgekit prune --flops-target` gives -- swept over levels, and INT8 alone).

Models: small nets trained on scikit-learn's digits (CNNs and a ViT; edgekit.models.digits, cached).
The search selects on a validation split carved from the training data; every accuracy printed is on
the test split it never saw.

    python bench/optimize_budget.py [--archs resnet,vgg,vit] [--trials 16] [--batch 32]
    python bench/optimize_budget.py --latency-aware-vs-flops [--archs resnet,vgg]

The second form is the latency-aware variant: L1 pruning guided by the per-layer latency table
against FLOPs-target L1 at the same levels, every model timed side by side (alternating, median
of 3), and for each budget the best test top-1 of each within it.
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


def latency_vs_flops(arch: str, budgets, batch: int, workdir: Path, levels=(0.85, 0.7, 0.55, 0.45, 0.35)):
    from edgekit.optimize.latency import measure_cpu
    from edgekit.optimize.latency_table import cached_table
    from edgekit.optimize.recipe import resolve

    torch_model, _ = digits.trained(arch)
    xtr, ytr, xte, yte = digits.load()
    model = load_model(digits.export_onnx(torch_model, workdir / f"{arch}.onnx"))
    test = LabelledData({"images": xte}, yte, "digits-test")
    feeds = {"images": np.ascontiguousarray(xte[:batch])}
    t0 = time.perf_counter()
    table = cached_table(model, workdir, batch=batch)
    table_s = time.perf_counter() - t0
    models = {"original": model}
    for lv in levels:
        models[f"flops {lv}"] = build(model, Recipe(flops_target=lv, round_to=1))
        models[f"latency {lv}"] = resolve(model, Recipe(flops_target=lv, latency_aware=True, round_to=1), None, table)[1]
    ms = {k: [] for k in models}
    for _ in range(3):
        for k, m in models.items():
            ms[k].append(measure_cpu(m, feeds, 0.3).median_ms)
    rows = {k: (sorted(v)[1], evaluate(models[k], test).top1) for k, v in ms.items()}
    base_ms = rows["original"][0]
    out = []
    for sp in budgets:
        b = base_ms / sp
        best = {}
        for kind in ("flops", "latency"):
            within = [(acc, k) for k, (t, acc) in rows.items() if k.startswith(kind) and t <= b]
            best[kind] = max(within) if within else None
        out.append((arch, sp, b, best))
    return rows, out, table_s


def main_latency(args) -> None:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            rows, out, table_s = latency_vs_flops(arch, [float(b) for b in args.budgets.split(",")], args.batch,
                                                  Path(tmp))
            print(f"\n{arch}: latency table built in {table_s:.1f} s")
            print("| candidate | ms (median of 3, side by side) | test top-1 |\n|---|---|---|")
            for k, (t, acc) in rows.items():
                print(f"| {k} | {t:.3f} | {100 * acc:.2f} |")
            for a, sp, b, best in out:
                f = best["flops"]
                la = best["latency"]
                print(f"{a} budget {1 / sp:.2f}x ({b:.3f} ms): FLOPs-target best "
                      f"{'-' if f is None else f'{100 * f[0]:.2f} ({f[1]})'}; latency-aware best "
                      f"{'-' if la is None else f'{100 * la[0]:.2f} ({la[1]})'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="resnet,vgg,vit")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--budgets", default="2,3.333")
    ap.add_argument("--latency-aware-vs-flops", action="store_true")
    args = ap.parse_args()
    if args.latency_aware_vs_flops:
        return main_latency(args)
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
