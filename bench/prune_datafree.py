"""Data-free pruning without fine-tuning: l1 vs obspa (data-free) vs obspa with calibration data.

For each digits model (trained on scikit-learn digits) and each FLOPs target, prune without any
fine-tuning and report the test accuracy, plus the time the pruning decision + update takes.

Run: ``.venv/bin/python bench/prune_datafree.py [--models vgg,resnet,mobilenetv2,vit] [--json OUT]``
(``--scopes uniform,global``; ``--time-onnx a.onnx,b.onnx`` adds l1-vs-obspa timing rows for other models).
The ImageNet architectures themselves (full width, stride 32) train on digits at 64x64 and more:
``--models resnet18-imagenet --image-size 96`` (about 11 min of training on one core, then cached) or
``--models mobilenetv2-imagenet --image-size 128`` (about 23 min).

``--recipes all`` (or a list): instead, the models of ``bench/_datafree_recipes.py``, trained on
digits with other recipes (32x32, shifts, AdamW + one-cycle, mean/std or in-graph normalisation, a
ViT, a CNN without BN, and a held-out SGD / 24x24 recipe reported apart), exported with BN folded
(``--keep-bn``: kept); one row per model with ``loss_<method>`` in points at the first
``--targets`` value, and the report's reliability line.

Timing rows (``timing``): the obspa / l1 ratio of the prune time measured side by side, in-process
(``prune()`` only, best of ``--timing-repeat``) and as a CLI run (``python -m edgekit.cli.main prune``
in a fresh process, which includes imports, loading and saving).

``goal`` (with l1 among the methods): issue 6's goal judged on this run's numbers, per data-free
method: the worst accuracy drop at 0.67 FLOPs on the BN convnets, the least lead over l1, and the
worst command-time ratio to l1, each with its pass / fail (:func:`goal_check`).

Methods: ``l1`` (baseline), ``obspa-analytic`` (closed-form Gaussian moments from BN statistics
only), ``obspa`` (the default data-free criterion: moments measured on synthetic smooth-noise inputs
run through the graph with batch-statistics BatchNorm; analytic fallback without BN), and
``obspa-seq`` (obspa's channels and update, then every channel-mixing layer refitted, depth level
by depth level, to reproduce the original layer outputs from the partly pruned network's inputs,
on the same synthetic inputs: one forward pass per level, see edgekit/prune/obspa_seq.py), and
``obspa-calib`` / ``obspa-seq-calib`` (the same update / refit with 256 real training images instead of
synthetic ones). Models are exported with
``edgekit.models.digits.export_onnx(..., keep_bn=True)`` (``--folded``: BN folded, the no-BN case:
obspa's synthetic inputs then run through the model as it is).

Default ``--pruner graph`` runs ``edgekit.prune.prune`` (real channel removal, uniform scope, the
FLOPs target bisected). ``--pruner mask`` is an older stand-alone path: chain groups only
(residual sums left whole), pruned channels masked/compensated in place.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

PER_CHANNEL = {"BatchNormalization", "MaxPool", "AveragePool", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish",
               "HardSigmoid", "Identity", "Dropout", "Tanh", "Elu", "Softplus", "Gelu"}


# ---------------------------------------------------------------------------- data and models
def get_models(names: List[str], seed: int = 0, image_size: int = 16):
    from edgekit.models import digits

    Xtr, ytr, Xte, yte = digits.load(image_size=image_size, seed=seed)
    out = {}
    for name in names:
        m, acc = digits.trained(name, seed=seed, image_size=image_size)
        out[name] = m
    return out, (Xtr, ytr, Xte, yte)


def accuracy(model, X, y) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    from edgekit.prune.obspa import with_dynamic_batch

    sess = ort.InferenceSession(with_dynamic_batch(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    try:
        logits = sess.run(None, {name: X.astype(np.float32)})[0]
    except Exception:  # a graph with the batch baked into a Reshape (ViT): one sample at a time
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        logits = np.concatenate([sess.run(None, {name: X[i:i + 1].astype(np.float32)})[0]
                                 for i in range(len(X))])
    return float((logits.argmax(1) == y).mean())


# ---------------------------------------------------------------------------- chain groups
def find_groups(model) -> List[dict]:
    """Producer conv -> per-channel ops (BN, activations, depthwise) -> channel-mixing consumers."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: Dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}

    def attr(n, k, d):
        for a in n.attribute:
            if a.name == k:
                return a.i
        return d

    groups = []
    for p in model.graph.node:
        if p.op_type != "Conv" or attr(p, "group", 1) != 1 or p.input[1] not in inits:
            continue
        c = inits[p.input[1]].shape[0]
        frontier, chain, uses, ok = [p.output[0]], [], [], True
        while frontier and ok:
            t = frontier.pop()
            if t in outputs:
                ok = False
                break
            for n in consumers.get(t, []):
                if n.op_type == "Conv" and n.input[0] == t:
                    g = attr(n, "group", 1)
                    w = inits.get(n.input[1])
                    if w is None:
                        ok = False
                    elif g == 1:
                        uses.append((n, t, list(range(c))))
                    elif g == c and w.shape[0] == c:
                        chain.append(n)
                        frontier.append(n.output[0])
                    else:
                        ok = False
                elif n.op_type in ("Gemm", "MatMul") and n.input[0] == t and n.input[1] in inits:
                    uses.append((n, t, list(range(c))))
                elif n.op_type in PER_CHANNEL and n.input[0] == t:
                    chain.append(n)
                    frontier.append(n.output[0])
                elif n.op_type in ("GlobalAveragePool", "Flatten"):
                    chain.append(n)
                    frontier.append(n.output[0])
                else:
                    ok = False  # residual Add, Concat, ...: left whole here
        if ok and uses:
            groups.append({"producer": p, "chain": chain, "uses": uses, "channels": c})
    return groups


def conv_flops(model) -> Tuple[float, Dict[str, float]]:
    """MACs per Conv/Gemm node (shape inference for output sizes)."""
    import onnx
    from onnx import numpy_helper

    inf = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(inf.graph.value_info) + list(inf.graph.output)}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    per = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            hw = int(np.prod(shapes[n.output[0]][2:]))
            per[n.name or n.output[0]] = float(w.size * hw)
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in inits:
            per[n.name or n.output[0]] = float(inits[n.input[1]].size)
    return sum(per.values()), per


def group_flops_per_channel(g, per) -> float:
    """MACs removed per channel of the group: producer row + depthwise + consumer column."""
    f = per[g["producer"].name or g["producer"].output[0]] / g["channels"]
    for n in g["chain"]:
        if n.op_type == "Conv":
            f += per[n.name or n.output[0]] / g["channels"]
    for n, _, cols in g["uses"]:
        f += per[n.name or n.output[0]] / g["channels"]
    return f


def n_remove_for_target(groups, per, total, target: float) -> List[int]:
    """Uniform ratio (same fraction in every group) bisected to reach the FLOPs target."""
    def removed(r):
        return [int(np.floor(r * g["channels"])) for g in groups]

    lo, hi = 0.0, 0.95
    for _ in range(40):
        mid = (lo + hi) / 2
        after = total - sum(k * group_flops_per_channel(g, per) for g, k in zip(groups, removed(mid)))
        if after / total > target:
            lo = mid
        else:
            hi = mid
    return removed(hi)


# ---------------------------------------------------------------------------- methods
def l1_scores(g, inits) -> np.ndarray:
    w = inits[g["producer"].input[1]]
    return np.abs(w).reshape(w.shape[0], -1).sum(axis=1)


def apply_mask(model, groups, ks, method: str, calib=None, alpha=None):
    """Returns (pruned model, seconds spent choosing + updating)."""
    import onnx
    from onnx import numpy_helper

    from edgekit.prune import obspa

    m = onnx.ModelProto()
    m.CopyFrom(model)
    groups = find_groups(m)  # the same groups, on the copy's nodes (the copy gets edited)
    inits = {i.name: i for i in m.graph.initializer}
    arrays = {k: numpy_helper.to_array(v) for k, v in inits.items()}
    t0 = time.perf_counter()
    stats = None
    if method.startswith("obspa"):
        kw = {} if alpha is None else {"alpha": alpha}
        if method == "obspa-analytic":
            kw["synthetic"] = 0
        stats = obspa.ObspaStats(m, calib=calib, **kw)
    updates: Dict[str, np.ndarray] = {}
    for g, k in zip(groups, ks):
        if k == 0:
            continue
        c = g["channels"]
        if method == "l1":
            order = np.argsort(l1_scores(g, arrays), kind="stable")
        else:
            dec = obspa.group_scores(stats, g["uses"], c)
            order = np.argsort(dec.scores, kind="stable")
        drop = np.sort(order[:k])
        keep = np.sort(order[k:])
        if method == "l1" or method == "obspa-select":
            for n, t, cols in g["uses"]:
                wname = n.input[1]
                w = updates.get(wname, arrays[wname]).copy()
                if n.op_type == "Conv":
                    w[:, drop] = 0
                elif n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
                    w[:, drop] = 0
                else:
                    w[drop, :] = 0
                updates[wname] = w
        else:
            for u in obspa.group_update(stats, g["uses"], keep, c):
                if u.slot is None:
                    continue  # a MatMul's bias with no Add to hold it
                node, arr = u.node, u.array
                if u.slot >= len(node.input) or not node.input[u.slot]:  # a new bias
                    bname = node.name + "_obspa_bias"
                    node.input.append(bname)
                    arrays[bname] = arr
                    m.graph.initializer.append(numpy_helper.from_array(arr, bname))
                    inits[bname] = m.graph.initializer[-1]
                    updates[bname] = arr
                else:
                    name = node.input[u.slot]
                    updates[name] = arr.reshape(np.shape(arrays[name]))
    elapsed = time.perf_counter() - t0
    for name, arr in updates.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))
    return m, elapsed


def run_graph(model, method, target, calib, scope="uniform"):
    from edgekit.prune import prune

    with_calib = method.endswith("-calib")
    crit = method[:-len("-calib")] if with_calib else method  # registry names
    t0 = time.perf_counter()
    pm, rep = prune(model, flops_target=target, criterion=crit, scope=scope,
                    calib=calib if with_calib else None)
    return pm, time.perf_counter() - t0, rep


def best_time(fn, repeat: int = 3) -> float:
    """Fastest of ``repeat`` runs (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timing(model, path: str, target: float, repeat: int) -> dict:
    """l1 vs obspa prune time side by side: in-process (``prune()`` only, best of ``repeat``) and
    as a CLI run (``edgekit prune`` in a fresh process: imports, load, prune, save)."""
    import subprocess

    from edgekit.prune import prune

    prune(model, flops_target=target, criterion="l1")  # warm-up (imports, first-call costs)
    out = {}
    for crit in ("l1", "obspa", "obspa-seq"):
        out[f"{crit}_inproc_s"] = round(best_time(lambda: prune(model, flops_target=target, criterion=crit),
                                                  repeat), 4)
        dst = path + f".{crit}.onnx"
        cmd = [sys.executable, "-m", "edgekit.cli.main", "prune", path, "-o", dst, "--criterion", crit,
               "--flops-target", str(target)]
        out[f"{crit}_cli_s"] = round(best_time(lambda: subprocess.run(cmd, check=True, capture_output=True),
                                               max(1, repeat // 2)), 3)
    out["inproc_ratio"] = round(out["obspa_inproc_s"] / out["l1_inproc_s"], 2)
    out["cli_ratio"] = round(out["obspa_cli_s"] / out["l1_cli_s"], 2)
    out["seq_inproc_ratio"] = round(out["obspa-seq_inproc_s"] / out["l1_inproc_s"], 2)
    out["seq_cli_ratio"] = round(out["obspa-seq_cli_s"] / out["l1_cli_s"], 2)
    return out


def goal_check(rows: List[dict], timings: List[dict], method: str = "obspa-seq", target: float = 0.67,
               max_drop: float = 0.01, margin: float = 0.02, max_ratio: float = 2.0) -> dict:
    """Issue 6's goal, judged on this run's own measurements (nothing here is a constant result).

    * ``accuracy``: on every BN convnet (a row whose export has BatchNormalization), in every
      scope, ``method`` at ``target`` loses at most ``max_drop`` of test accuracy against the
      unpruned model;
    * ``beats_l1``: on those models, ``method`` is ahead of l1 by more than ``margin`` at every
      target and scope;
    * ``time``: ``edgekit prune --criterion method`` as a command takes at most ``max_ratio`` times
      ``--criterion l1`` on every model timed (``seq_cli_ratio`` / ``cli_ratio``). The in-process
      ratio of the pruning call alone is listed too (``inproc_worst``) without a verdict: l1's call
      takes tens of milliseconds on these models, less than one ONNX Runtime session costs.
    """
    bn = [r for r in rows if r.get("has_bn") and method in r and "l1" in r]
    drops = {f"{r['model']}/{r['scope']}": round(r["baseline"] - r[method], 4)
             for r in bn if abs(r["target"] - target) < 1e-9}
    leads = {f"{r['model']}/{r['scope']}/{r['target']}": round(r[method] - r["l1"], 4) for r in bn}
    key = "seq_cli_ratio" if method == "obspa-seq" else "cli_ratio"
    ikey = "seq_inproc_ratio" if method == "obspa-seq" else "inproc_ratio"
    ratios = {t["model"]: t[key] for t in timings if key in t}
    out = {
        "method": method,
        "accuracy": {"worst_drop": max(drops.values()) if drops else None, "per_model": drops,
                     "pass": bool(drops) and max(drops.values()) <= max_drop + 1e-9},
        "beats_l1": {"least_lead": min(leads.values()) if leads else None,
                     "pass": bool(leads) and min(leads.values()) > margin},
        "time": {"worst_cli_ratio": max(ratios.values()) if ratios else None, "per_model": ratios,
                 "pass": bool(ratios) and max(ratios.values()) <= max_ratio,
                 "inproc_worst": max((t[ikey] for t in timings if ikey in t), default=None)},
    }
    return out


def recipe_rows(names: List[str], methods: List[str], target: float, n_calib: int, keep_bn: bool = False,
                scope: str = "uniform") -> List[dict]:
    """Accuracy after pruning the models of bench/_datafree_recipes.py (other training recipes, BN
    folded unless ``keep_bn``): one row per model, ``loss_<method>`` in points; the held-out recipe
    is marked ``held_out``. A ``-calib`` method gets the first ``n_calib`` training inputs, unlabelled."""
    import onnx

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _datafree_recipes as recipes

    rows = []
    for name in names:
        path, d = recipes.export(name, keep_bn=keep_bn)
        model = onnx.load(str(path))
        base = accuracy(model, d["x_test"], d["y_test"])
        row = {"model": name, "held_out": name == recipes.HELD_OUT, "bn": "kept" if keep_bn else "folded",
               "target": target, "scope": scope, "baseline": round(base, 4)}
        for meth in methods:
            pm, sec, rep = run_graph(model, meth, target, d["x_train"][:n_calib], scope)
            acc = accuracy(pm, d["x_test"], d["y_test"])
            row[meth] = round(acc, 4)
            row[f"loss_{meth}"] = round(100 * (base - acc), 1)
            row[f"{meth}_s"] = round(sec, 3)
            row[f"{meth}_flops"] = round(rep.flops_ratio, 3)
            if meth.startswith("obspa"):
                row[f"{meth}_report"] = [ln for ln in rep.notes + rep.warnings if "reliab" in ln]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg,resnet,mobilenetv2")
    ap.add_argument("--targets", default="0.8,0.67,0.5")
    ap.add_argument("--methods", default="l1,obspa-analytic,obspa,obspa-seq,obspa-calib",
                    help="obspa-analytic: closed-form BN moments only; obspa: + synthetic inputs (default); "
                    "obspa-seq: + sequential reconstruction of the original layer outputs")
    ap.add_argument("--pruner", choices=["graph", "mask"], default="graph",
                    help="graph: edgekit.prune.prune (real channel removal); mask: chain groups, masked")
    ap.add_argument("--folded", action="store_true", help="export with BN folded (the no-BN fallback)")
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--scopes", default="uniform,global", help="uniform and/or global (graph pruner only)")
    ap.add_argument("--timing-target", type=float, default=0.67,
                    help="FLOPs target of the l1-vs-obspa timing rows (in-process and CLI)")
    ap.add_argument("--timing-repeat", type=int, default=3, help="0: no timing rows")
    ap.add_argument("--time-onnx", default="", help="extra ONNX files (e.g. edgekit export resnet18 --keep-bn) "
                    "to time l1 vs obspa on, comma separated")
    ap.add_argument("--image-size", type=int, default=16,
                    help="train and prune the digits models at this resolution (8x8 digits upsampled; "
                    "32: four times the pixels per sample; 64 and more for the *-imagenet models; trained once, cached)")
    ap.add_argument("--recipes", default="",
                    help="instead: the models of bench/_datafree_recipes.py (other training recipes, BN folded "
                    "unless --keep-bn), comma separated or 'all'; --targets' first value, --n-calib inputs")
    ap.add_argument("--keep-bn", action="store_true", help="with --recipes: export with BN kept")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import onnx

    if args.recipes:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import _datafree_recipes as recipes

        names = list(recipes.RECIPES) if args.recipes == "all" else args.recipes.split(",")
        meths = args.methods.split(",")
        rows = recipe_rows(names, meths, float(args.targets.split(",")[0]), args.n_calib, args.keep_bn,
                           args.scopes.split(",")[0])
        tuned = [r for r in rows if not r["held_out"]]
        out = {"rows": rows, "worst_loss": {m: max((r[f"loss_{m}"] for r in tuned), default=None) for m in meths},
               "held_out": [r for r in rows if r["held_out"]]}
        text = json.dumps(out, indent=1)
        if args.json:
            with open(args.json, "w") as fh:
                fh.write(text)
        print(text)
        return 0

    names = args.models.split(",")
    torch_models, (Xtr, ytr, Xte, yte) = get_models(names, image_size=args.image_size)
    calib = Xtr[: args.n_calib]
    rows, timings = [], []
    with tempfile.TemporaryDirectory() as td:
        for name in names:
            path = os.path.join(td, f"{name}.onnx")
            from edgekit.models import digits

            digits.export_onnx(torch_models[name], path, keep_bn=not args.folded, image_size=args.image_size)
            model = onnx.load(path)
            base = accuracy(model, Xte, yte)
            has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
            if args.pruner == "mask":
                groups = find_groups(model)
                total, per = conv_flops(model)
            scopes = args.scopes.split(",") if args.pruner == "graph" else ["uniform"]
            for tgt, scope in [(float(t), sc) for sc in scopes for t in args.targets.split(",")]:
                row = {"model": name, "target": tgt, "scope": scope, "baseline": round(base, 4),
                       "bn": "folded" if args.folded else "kept", "has_bn": has_bn}
                for meth in args.methods.split(","):
                    if scope == "global" and meth == "obspa-analytic":
                        continue
                    if args.pruner == "mask" and meth.startswith("obspa-seq"):
                        continue  # needs the graph pruner's keep masks (finish hook)
                    if args.pruner == "mask":
                        ks = n_remove_for_target(groups, per, total, tgt)
                        pm, sec = apply_mask(model, groups, ks, meth,
                                             calib=calib if meth == "obspa-calib" else None, alpha=args.alpha)
                        after = total - sum(k * group_flops_per_channel(g, per) for g, k in zip(groups, ks))
                        row["flops_kept"] = round(after / total, 3)
                    else:
                        pm, sec, rep = run_graph(model, meth, tgt, calib, scope)
                        row[f"{meth}_flops"] = round(rep.flops_ratio, 3)
                        if meth.startswith("obspa") and rep.notes:
                            row[f"{meth}_notes"] = rep.notes
                    row[meth] = round(accuracy(pm, Xte, yte), 4)
                    row[f"{meth}_s"] = round(sec, 3)
                if "l1_s" in row and "obspa_s" in row:
                    row["obspa_over_l1_s"] = round(row["obspa_s"] / max(row["l1_s"], 1e-9), 2)
                if "l1_s" in row and "obspa-seq_s" in row:
                    row["obspa-seq_over_l1_s"] = round(row["obspa-seq_s"] / max(row["l1_s"], 1e-9), 2)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            if args.timing_repeat > 0 and args.pruner == "graph":
                t = {"model": name, **timing(model, path, args.timing_target, args.timing_repeat)}
                timings.append(t)
                print(json.dumps(t), file=sys.stderr, flush=True)
        for extra in [p for p in args.time_onnx.split(",") if p]:
            t = {"model": os.path.basename(extra), **timing(onnx.load(extra), extra, args.timing_target,
                                                            args.timing_repeat or 1)}
            timings.append(t)
            print(json.dumps(t), file=sys.stderr, flush=True)
    out = {"rows": rows, "timing": timings}
    meths = args.methods.split(",")
    if "l1" in meths and args.pruner == "graph":
        out["goal"] = {m: goal_check(rows, timings, m) for m in ("obspa", "obspa-seq") if m in meths}
    text = json.dumps(out, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
