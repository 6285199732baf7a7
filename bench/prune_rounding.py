"""Which channel rounding makes pruned models fastest on ONNX Runtime CPU (the embedded default).

A FLOPs cut turns into speed only when the kept channel counts suit the kernels: MLAS's
convolution and GEMM kernels block channels by 4 / 8 / 16 floats, so an odd count leaves a
ragged, slower tail. This bench prunes every corpus model (``edgekit.models.zoo.CORPUS``) and the
full-size ResNet-50 (torchvision architecture, 224x224) to the same ``--flops-target`` at each
rounding (1 vs 4 vs 8 vs 16), then times all variants of one model side by side in one process:
the original and every pruned variant run round-robin, in a rotated order, for several
interleaved rounds, so machine load hits them alike. Per variant it reports the speedup, the
FLOPs reduction and their ratio (1.0: the whole FLOPs cut became speed); across the corpus the
geometric mean of that ratio per rounding. The rounding with the best corpus mean is what
``edgekit prune`` uses when neither ``--round-to`` nor ``--device`` is given
(:data:`edgekit.prune.core.DEFAULT_ROUND_TO`; the ``cpu`` profile's ``[defaults]`` table).

    python bench/prune_rounding.py --cache /work/hashcache --out rounding.json
    python bench/prune_rounding.py --models resnet50-224 --rounds 5     # the goal model only

Goal: default-flag pruning of ResNet-50 at --flops-target 0.5 keeps speedup / FLOPs reduction
>= 0.95. ONNX Runtime runs single-threaded (one core, the least noisy setting on a shared box).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_R50 = "resnet50-224"  # the goal model: torchvision's ResNet-50 at 224x224, 1000 classes


def _export_full_r50(path: Path) -> None:
    import warnings

    import torch  # lazy: torch is optional

    from edgekit.models import create

    warnings.simplefilter("ignore")
    torch.onnx.export(create("resnet50"), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"])


def _model_path(name: str, cache: Path) -> Path:
    """The cached float export of ``name`` (same file names as bench/prune_hashes.py)."""
    path = cache / f"{name}.onnx"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        if name == FULL_R50:
            _export_full_r50(tmp)
        else:
            from edgekit.models.zoo import to_onnx

            tmp.write_bytes(to_onnx(name).SerializeToString())
        tmp.replace(path)
    return path


def _feeds(sess):
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _time_side_by_side(paths, runs: int, rounds: int) -> list:
    """Median seconds per model in ``paths``: all sessions open at once, run round-robin in a
    rotated order, ``rounds`` x ``runs`` times each."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in paths]
    feeds = [_feeds(s) for s in sessions]
    for s, f in zip(sessions, feeds):  # warm-up
        for _ in range(3):
            s.run(None, f)
    times = [[] for _ in paths]
    k = len(paths)
    for r in range(rounds):
        for i in range(runs):
            start = (r * runs + i) % k
            for j in range(k):
                idx = (start + j) % k
                t = time.perf_counter()
                sessions[idx].run(None, feeds[idx])
                times[idx].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def _cli_prune(src: Path, dst: Path, flops_target: float) -> dict:
    """``edgekit prune SRC -o DST --flops-target F`` with every other flag left at its default."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "edgekit", "prune", str(src), "-o", str(dst), "--flops-target",
                          str(flops_target), "--json", "-"], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def bench_model(name: str, cache: Path, work: Path, roundings, flops_target: float, runs: int, rounds: int,
                with_cli: bool = False) -> dict:
    """Prune ``name`` at each rounding (as the CLI's default would: never refused for being larger
    than every group) and, with ``with_cli``, by the CLI with default flags; time them side by side."""
    from edgekit.prune.api import prune_file
    from edgekit.prune.core import DEFAULT_ROUND_TO

    src = _model_path(name, cache)
    row: dict = {}
    paths = [src]
    keys = [str(rt) for rt in roundings] + ["auto"] + (["cli-default"] if with_cli else [])
    for key in keys:
        dst = work / f"{name}.{key}.onnx"
        try:
            if key == "cli-default":
                d = _cli_prune(src, dst, flops_target)
                row[key] = {"flops_ratio": round(d["flops_ratio"], 4), "round_to": d["round_to"]}
                paths.append(dst)
                continue
            if key == "auto":  # the CLI default: DEFAULT_ROUND_TO, halved for small groups
                rep, _ = prune_file(src, dst, flops_target=flops_target, round_to_default=DEFAULT_ROUND_TO,
                                    adaptive_round=True)
            else:
                rep, _ = prune_file(src, dst, flops_target=flops_target, round_to_default=int(key))
        except Exception as exc:  # noqa: BLE001 - a refusal (e.g. round-to above every group) is a result
            row[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
            continue
        row[key] = {"flops_ratio": round(rep.flops_ratio, 4)}
        paths.append(dst)
    medians = _time_side_by_side(paths, runs, rounds)
    base = medians[0]
    row["orig_ms"] = round(base * 1e3, 3)
    it = iter(medians[1:])
    for key in keys:
        entry = row[key]
        if "error" in entry:
            continue
        ms = next(it)
        speedup = base / ms
        reduction = 1.0 / entry["flops_ratio"]
        entry.update(ms=round(ms * 1e3, 3), speedup=round(speedup, 3), flops_reduction=round(reduction, 3),
                     speed_over_flops=round(speedup / reduction, 3))
    return row


def summarise(rows: dict, roundings) -> dict:
    """Per rounding (and the adaptive CLI default, ``auto``) over the corpus, the full ResNet-50
    excluded: geometric mean of speedup / FLOPs reduction, mean FLOPs ratio reached, and on how many
    models it was best; ``fastest_round_to`` is the fixed multiple with the best mean."""
    corpus = {n: r for n, r in rows.items() if n != FULL_R50}
    keys = [str(rt) for rt in roundings] + ["auto"]
    out: dict = {}
    # over the models that every variant pruned
    common = [n for n, r in corpus.items() if all("speed_over_flops" in r.get(k, {}) for k in keys)]
    for k in keys:
        vals = [corpus[n][k]["speed_over_flops"] for n in common]
        geo = math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")
        wins = sum(1 for n in common if max(keys, key=lambda q: corpus[n][q]["speed_over_flops"]) == k)
        fr = [corpus[n][k]["flops_ratio"] for n in common]
        out[k] = {"geomean_speed_over_flops": round(geo, 3), "best_on": wins, "models": len(vals),
                  "mean_flops_ratio": round(sum(fr) / len(fr), 3) if fr else None}
    out["fastest_round_to"] = max(roundings, key=lambda q: out[str(q)]["geomean_speed_over_flops"]) if common else None
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help=f"corpus names and/or {FULL_R50} (default: the corpus and {FULL_R50})")
    ap.add_argument("--cache", default="build/prune_hashes", help="where the float exports are kept")
    ap.add_argument("--roundings", nargs="*", type=int, default=[1, 4, 8, 16])
    ap.add_argument("--flops-target", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per model per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args(argv)
    from edgekit.models.zoo import CORPUS

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    models = args.models or sorted(CORPUS) + [FULL_R50]
    rows: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        for name in models:
            rows[name] = bench_model(name, cache, Path(td), args.roundings, args.flops_target, args.runs, args.rounds,
                                     with_cli=name == FULL_R50)
            r = rows[name]
            print(f"{name:22s} " + "  ".join(f"{k}={v.get('speed_over_flops', 'err')}" for k, v in r.items()
                                             if isinstance(v, dict)), file=sys.stderr, flush=True)
    res = {"settings": {"flops_target": args.flops_target, "runs": args.runs, "rounds": args.rounds,
                        "ort_threads": 1, "seconds": round(time.perf_counter() - t0, 1)},
           "models": rows, "corpus": summarise(rows, args.roundings)}
    if FULL_R50 in rows:
        res["goal"] = {"model": FULL_R50, "want_speed_over_flops": 0.95,
                       "at": {k: v.get("speed_over_flops") for k, v in rows[FULL_R50].items() if isinstance(v, dict)}}
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
