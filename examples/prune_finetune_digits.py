"""Prune a trained PyTorch model at the ONNX graph level, map the decision back to the module,
fine-tune, re-export.

    .venv/bin/python examples/prune_finetune_digits.py [--arch resnet] [--flops-target 0.5] [--epochs 5]
        [--exporter legacy|torchscript|dynamo] [--attention heads|head-dims]

1. train (or load from cache) a small model on scikit-learn's digits;
2. ``edgekit.prune.torch.prune_module``: export to ONNX, find the coupled channel groups, drop
   half the FLOPs (L1 criterion), and map every cut back to the ``state_dict`` -> a smaller module
   (any exporter: BatchNorm kept or folded; for the ViT, attention heads / head dims and the
   ``heads`` / ``head_dim`` attributes follow);
3. fine-tune the smaller module a few epochs: the accuracy comes back;
4. export the fine-tuned module to ONNX and check it in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run(arch: str = "resnet", flops_target: float = 0.5, epochs: int = 5, lr: float = 3e-3, seed: int = 0,
        exporter: str = "legacy", attention: str = "heads") -> dict:
    import torch

    from edgekit.models import digits
    from edgekit.prune.torch import prune_module

    xtr, ytr, xte, yte = digits.load(image_size=16, seed=seed)
    model, acc0 = digits.trained(arch, seed=seed)
    t0 = time.perf_counter()
    res = prune_module(model, torch.from_numpy(xte[:8]), exporter=exporter, flops_target=flops_target,
                       criterion="l1", attention=attention)
    t_prune = time.perf_counter() - t0
    acc_pruned = digits.accuracy(res.module, xte, yte)
    t0 = time.perf_counter()
    small = digits.train(res.module, xtr, ytr, epochs=epochs, lr=lr, seed=seed)
    t_ft = time.perf_counter() - t0
    acc_ft = digits.accuracy(small, xte, yte)
    with tempfile.TemporaryDirectory() as td:
        path = digits.export_onnx(small, Path(td) / "pruned.onnx")
        acc_onnx = digits.accuracy_onnx(str(path), xte, yte)
    out = {
        "arch": arch, "exporter": exporter, "flops_target": flops_target,
        "flops_ratio": res.report.flops_ratio, "params_ratio": res.report.params_ratio,
        "accuracy_original": acc0, "accuracy_pruned_no_finetune": acc_pruned,
        "accuracy_finetuned": acc_ft, "accuracy_finetuned_onnx": acc_onnx,
        "finetune_epochs": epochs, "prune_s": t_prune, "finetune_s": t_ft,
        "params_cut": len(res.mapped),
    }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="prune 50% FLOPs of a digits model, fine-tune, recover accuracy")
    ap.add_argument("--arch", default="resnet", help="resnet | mobilenetv2 | vgg | vit (digits.build names)")
    ap.add_argument("--exporter", default="legacy", help="legacy (BatchNorm kept) | torchscript | dynamo")
    ap.add_argument("--attention", default="heads", help="heads | head-dims (ViT: what attention pruning removes)")
    ap.add_argument("--flops-target", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    res = run(args.arch, args.flops_target, args.epochs, exporter=args.exporter, attention=args.attention)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
