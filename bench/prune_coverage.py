"""Coverage of the graph-level pruner over the model corpus (edgekit.models.zoo.CORPUS).

For each model, with no per-model configuration: export (TorchScript exporter by default), analyse
and prune at ``--ratio`` (default 0.5), then report

* ``prunable``: the fraction of the graph's coupled channels that lie in prunable groups
  (channels of prunable groups / channels of all groups found, skipped ones included),
* FLOPs and parameters before/after (from the prune report),
* ``valid``: onnx.checker (full) + strict shape inference + ONNX Runtime runs + same output shapes,
* ``speedup``: ONNX Runtime CPU latency of the original divided by the pruned model's, both sessions
  built with the same options and timed side by side (interleaved rounds) in this run; latencies
  are 10th percentiles of single runs (medians also in the JSON).

Prints a table and writes JSON (``--out PATH``, ``-`` for stdout). Other people share this machine,
so latencies carry noise: the interleaving keeps the ratio fair even when absolute times drift.

    .venv/bin/python bench/prune_coverage.py --ratio 0.5 --out prune_coverage.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from typing import Dict, List, Optional


def _session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def _feeds(model, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
            for vi in model.graph.input if vi.name not in init}


def _p10(values: List[float]) -> float:
    v = sorted(values)
    return v[max(0, int(0.1 * (len(v) - 1)))]


def side_by_side(a, b, feeds, seconds: float, threads: int) -> Dict[str, float]:
    """Latencies (ms) of sessions a and b, timed run by run in alternating rounds.

    ``speedup`` is the ratio of the 10th percentiles: on a shared, overloaded machine a long run is
    preempted more often than a short one, which inflates median ratios; the fast tail is what each
    model costs when it gets the core. ``speedup_median`` is kept for reference."""
    sa, sb = _session(a.SerializeToString(), threads), _session(b.SerializeToString(), threads)
    for s in (sa, sb):  # warm-up
        for _ in range(3):
            s.run(None, feeds)
    ta: List[float] = []
    tb: List[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ta) < 20:
        for s, acc in ((sa, ta), (sb, tb)):
            for _ in range(5):
                t = time.perf_counter()
                s.run(None, feeds)
                acc.append((time.perf_counter() - t) * 1e3)
    pa, pb = _p10(ta), _p10(tb)
    ma, mb = statistics.median(ta), statistics.median(tb)
    return {"original_ms": pa, "pruned_ms": pb, "speedup": pa / pb if pb > 0 else float("nan"),
            "original_median_ms": ma, "pruned_median_ms": mb, "speedup_median": ma / mb if mb > 0 else float("nan"),
            "runs": len(ta)}


def measure(name: str, ratio: float, exporter: str, seconds: float, threads: int) -> dict:
    import numpy as np
    import onnx

    from edgekit.models.zoo import to_onnx
    from edgekit.prune import analyze, prune

    row: dict = {"model": name, "exporter": exporter}
    t = time.perf_counter()
    model = to_onnx(name, exporter)
    row["export_s"] = time.perf_counter() - t
    dg = analyze(model)
    prunable = sum(g.size for g in dg.groups)
    total = prunable + sum(g.size for g in dg.skipped)
    row.update(groups=len(dg.groups), skipped_groups=len(dg.skipped), channels=total,
               prunable_channels=prunable, prunable=prunable / total if total else 0.0)
    reasons: Dict[str, int] = {}
    for g in dg.skipped:
        text = str(g.reason)
        # "<node>: <why>" -> "<why>", so the same cause counts once across nodes
        key = (text.split(": ", 1)[1] if ": " in text and not text.startswith("reaches") else text)[:90]
        reasons[key] = reasons.get(key, 0) + 1
    row["skip_reasons"] = reasons
    t = time.perf_counter()
    pruned, report = prune(model, ratio=ratio)
    row["prune_s"] = time.perf_counter() - t
    d = report.to_dict()
    for k in ("flops_before", "flops_after", "params_before", "params_after"):
        row[k] = d[k]
    row["flops_ratio"] = d["flops_before"] / d["flops_after"] if d["flops_after"] else float("nan")
    try:
        onnx.checker.check_model(pruned, full_check=True)
        onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
        feeds = _feeds(model)
        ref = _session(model.SerializeToString(), threads).run(None, feeds)
        out = _session(pruned.SerializeToString(), threads).run(None, feeds)
        same = [o.shape for o in out] == [r.shape for r in ref] and all(np.all(np.isfinite(o)) for o in out)
        row["valid"] = bool(same)
        if not same:
            row["error"] = "output shapes changed or non-finite outputs"
    except Exception as exc:  # noqa: BLE001 - a bench records failures instead of stopping
        row["valid"] = False
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return row
    row.update(side_by_side(model, pruned, feeds, seconds, threads))
    return row


def render(rows: List[dict], ratio: float) -> str:
    head = f"{'model':22s} {'prunable':>8s} {'GFLOPs before':>13s} {'after':>8s} {'ratio':>6s} {'valid':>5s} " \
           f"{'orig p10':>8s} {'pruned p10':>10s} {'speedup':>7s} {'prune s':>7s}"
    lines = [f"prune coverage at --ratio {ratio}", head, "-" * len(head)]
    for r in rows:
        if "flops_before" not in r:
            lines.append(f"{r['model']:22s} ERROR {r.get('error', '')}")
            continue
        lines.append(
            f"{r['model']:22s} {r['prunable']:8.0%} {r['flops_before'] / 1e9:13.4f} {r['flops_after'] / 1e9:8.4f} "
            f"{r['flops_ratio']:6.2f} {('yes' if r.get('valid') else 'NO'):>5s} "
            f"{r.get('original_ms', float('nan')):8.3f} {r.get('pruned_ms', float('nan')):10.3f} "
            f"{r.get('speedup', float('nan')):7.2f} {r.get('prune_s', float('nan')):7.2f}")
    ok = [r for r in rows if r.get("valid")]
    sp = [r["speedup"] for r in ok if "speedup" in r]
    lines.append("-" * len(head))
    lines.append(f"valid {len(ok)}/{len(rows)}; faster (speedup > 1.05) {sum(s > 1.05 for s in sp)}/{len(rows)}; "
                 f"median speedup {statistics.median(sp) if sp else float('nan'):.2f}; "
                 f"median FLOPs ratio {statistics.median([r['flops_ratio'] for r in ok]) if ok else float('nan'):.2f}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="JSON output path ('-' for stdout)")
    ap.add_argument("--models", nargs="*", default=None, help="subset of corpus names (default: all)")
    ap.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per model (both variants)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from edgekit.models.zoo import CORPUS

    names = args.models or sorted(CORPUS)
    rows = []
    for name in names:
        try:
            rows.append(measure(name, args.ratio, args.exporter, args.seconds, args.threads))
        except Exception as exc:  # noqa: BLE001
            rows.append({"model": name, "valid": False, "error": f"{type(exc).__name__}: {exc}"[:300],
                         "trace": traceback.format_exc(limit=3)})
        print(f"  done {name}", file=sys.stderr, flush=True)
    table = render(rows, args.ratio)
    print(table)
    result = {"ratio": args.ratio, "exporter": args.exporter, "threads": args.threads, "models": rows}
    if args.out == "-":
        print(json.dumps(result, indent=2))
    elif args.out:
        from edgekit.graph.io import atomic_output

        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    return 0 if all(r.get("valid") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
