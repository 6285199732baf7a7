"""Attention pruning modes on a built-in ViT: whole heads vs the same head dims in every head.

For each attention mode (``heads``, ``head-dims``), and optionally with ``--prune-layernorm``
(LayerNorm over channels pruned approximately, so the residual stream shrinks too), prune the
exported model at ``--ratio`` and at ``--flops-target`` (equal FLOPs for both modes), then time
the original and the pruned model side by side in ONNX Runtime CPU (interleaved rounds, 10th
percentiles; see ``bench/prune_coverage.py``). Reports FLOPs ratio (before/after), speedup and
``efficiency`` = speedup / FLOPs reduction (1.0: latency falls exactly with FLOPs).

    .venv/bin/python bench/prune_attention.py --model vit-tiny --out -
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import warnings
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _export(name: str, image: int, dynamo: bool):
    import onnx
    import torch

    from edgekit.models import create

    torch.manual_seed(0)
    m = create(name, num_classes=1000, image_size=image).eval()
    x = torch.randn(1, 3, image, image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(m, (x,), dynamo=True, opset_version=18, verbose=False).model_proto
        f = io.BytesIO()
        torch.onnx.export(m, (x,), f, dynamo=False, opset_version=17, input_names=["x"])
    return onnx.load_from_string(f.getvalue())


def main(argv: Optional[List[str]] = None) -> int:
    from prune_coverage import _feeds, side_by_side

    from edgekit.prune import prune

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-tiny")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--flops-target", type=float, default=0.5)
    ap.add_argument("--seconds", type=float, default=6.0, help="timing per pair")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dynamo", action="store_true")
    ap.add_argument("--prune-layernorm", action="store_true", help="also rows with allow_norm_approx")
    ap.add_argument("--out", default="-")
    a = ap.parse_args(argv)
    model = _export(a.model, a.image, a.dynamo)
    feeds = _feeds(model)
    rows = []
    norm_opts = [False, True] if a.prune_layernorm else [False]
    for norm in norm_opts:
        runs = [(mode, how, {how: val}) for mode in ("heads", "head-dims")
                for how, val in (("ratio", a.ratio), ("flops_target", a.flops_target))]
        runs.append(("head-dims", "flops_target", None))  # equal FLOPs: matched to heads' result
        heads_ft = None
        for mode, how, kw in runs:
            if kw is None:
                kw = {"flops_target": heads_ft}
            pruned, rep = prune(model, attention=mode, allow_norm_approx=norm, **kw)
            if mode == "heads" and how == "flops_target":
                heads_ft = rep.flops_after / rep.flops_before
            if True:
                t = side_by_side(model, pruned, feeds, a.seconds, a.threads)
                red = rep.flops_before / max(rep.flops_after, 1)
                row = {"model": a.model, "attention": mode, "prune_layernorm": norm, how: kw[how],
                       "flops_reduction": red, "params_ratio": rep.params_ratio,
                       "speedup": t["speedup"], "efficiency": t["speedup"] / red,
                       "speedup_median": t["speedup_median"], "original_ms": t["original_ms"],
                       "pruned_ms": t["pruned_ms"], "prune_seconds": rep.seconds}
                rows.append(row)
                print(f"{a.model:9s} {mode:9s} ln={int(norm)} {how}={kw[how]:<5.3f} FLOPs /{red:5.2f}  "
                      f"speedup {t['speedup']:5.2f}x  efficiency {row['efficiency']:.2f}  "
                      f"({t['original_ms']:.1f} -> {t['pruned_ms']:.1f} ms)", file=sys.stderr)
    text = json.dumps({"threads": a.threads, "image": a.image, "dynamo": a.dynamo, "rows": rows}, indent=1)
    if a.out == "-":
        print(text)
    else:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
