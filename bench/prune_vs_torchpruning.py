"""`edgekit prune` against Torch-Pruning at the same FLOPs: ResNet-50 halved, ONNX Runtime CPU speedup of each.

Torch-Pruning (https://github.com/VainF/Torch-Pruning) is the strongest open peer for structured
channel pruning of PyTorch models; it is NOT a dependency of edgekit. When ``torch_pruning`` is not
installed this script says so and exits 0 (``pip install torch-pruning`` to run it).

Both prune edgekit's ResNet-50 (random weights: speed only, no accuracy claim) to half its FLOPs with
channels rounded to multiples of ``--round-to``: edgekit on the exported ONNX (``--flops-target 0.5``),
Torch-Pruning on the PyTorch model with its documented recipe (``MagnitudePruner``, L2 group
importance, classifier ignored, small iterative steps until the MACs are at most half), then exported
the same way. FLOPs of both results are counted by edgekit on the ONNX files, so the comparison is at
measured, equal FLOPs. Latency: batch 1, the three models interleaved, median; under load from other
jobs on a shared machine: read the ratios.

Run: .venv/bin/python bench/prune_vs_torchpruning.py [--runs 20] [--threads 2] [--round-to 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _export(model, path: Path) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"])


def torch_pruning_half(model, round_to: int, target: float = 0.5, steps: int = 40):
    """Torch-Pruning's README recipe, stepped until the MACs are <= ``target`` of the original."""
    import torch
    import torch_pruning as tp

    example = torch.zeros(1, 3, 224, 224)
    base, _ = tp.utils.count_ops_and_params(model, example)
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                       pruning_ratio=0.9, iterative_steps=steps, ignored_layers=[model.fc],
                                       round_to=round_to)
    macs = base
    for _ in range(steps):
        if macs <= target * base:
            break
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, example)
    return model, macs / base


def _latency(paths: dict, runs: int, threads: int) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for s in sess.values():
        for _ in range(3):
            s.run(None, {"x": x})
    t = {k: [] for k in sess}
    for _ in range(runs):
        for k, s in sess.items():
            t0 = time.perf_counter()
            s.run(None, {"x": x})
            t[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in t.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if importlib.util.find_spec("torch_pruning") is None:
        res = {"skipped": "torch_pruning is not installed (pip install torch-pruning); it is not an edgekit dependency"}
        print(json.dumps(res))
        return res
    import onnx
    import torch

    import edgekit.models as M
    from edgekit.graph.flops import count_flops
    from edgekit.prune.api import prune_file

    with tempfile.TemporaryDirectory(prefix="bench-tp-") as td:
        td = Path(td)
        torch.manual_seed(0)
        paths = {"original": td / "r50.onnx", "edgekit": td / "r50_edgekit.onnx", "torch_pruning": td / "r50_tp.onnx"}
        _export(M.create("resnet50"), paths["original"])
        t0 = time.perf_counter()
        prune_file(paths["original"], paths["edgekit"], flops_target=0.5, round_to=a.round_to)
        ek_s = time.perf_counter() - t0
        torch.manual_seed(0)
        t0 = time.perf_counter()
        tp_model, tp_macs = torch_pruning_half(M.create("resnet50"), a.round_to)
        tp_s = time.perf_counter() - t0
        _export(tp_model, paths["torch_pruning"])
        flops = {k: count_flops(onnx.load(str(p))) for k, p in paths.items()}
        ms = _latency(paths, a.runs, a.threads)
    res = {"model": "edgekit resnet50, random weights, 224x224, batch 1", "round_to": a.round_to,
           "threads": a.threads, "runs": a.runs, "note": "measured under load: compare ratios within this run",
           "prune_seconds": {"edgekit": round(ek_s, 1), "torch_pruning": round(tp_s, 1)},
           "torch_pruning_macs_ratio_own_count": round(tp_macs, 4),
           "flops_ratio": {k: round(v / flops["original"], 4) for k, v in flops.items()},
           "median_ms": {k: round(v, 2) for k, v in ms.items()},
           "speedup": {k: round(ms["original"] / v, 3) for k, v in ms.items() if k != "original"}}
    res["edgekit_vs_torch_pruning_latency"] = round(ms["torch_pruning"] / ms["edgekit"], 3)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
