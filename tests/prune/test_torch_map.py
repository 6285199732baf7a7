"""Map a graph-level decision back to the nn.Module; fine-tune on digits and recover accuracy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_pruned_module_matches_pruned_onnx_and_state_dict_shapes():
    from edgekit.models import create
    from edgekit.prune.torch_map import prune_module

    torch.manual_seed(0)
    m = create("resnet18", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    res = prune_module(m, x, ratio=0.4)
    inits = {t.name: tuple(t.dims) for t in res.onnx_model.graph.initializer}
    for k, v in res.state_dict.items():
        if k in inits:
            assert tuple(v.shape) == inits[k], k
    assert res.mapped and res.max_abs_diff < 1e-3
    n_small = sum(p.numel() for p in res.module.parameters())
    assert n_small < 0.8 * sum(p.numel() for p in m.parameters())
    # the original module is untouched
    assert m.conv1.weight.shape[0] == 64


def test_digits_prune_half_flops_finetune_recovers():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import prune_finetune_digits as ex

    r = ex.run(arch="vgg", flops_target=0.5, epochs=3)
    assert r["flops_ratio"] <= 0.55
    assert r["accuracy_pruned_no_finetune"] < r["accuracy_original"]
    assert r["accuracy_finetuned"] >= r["accuracy_original"] - 0.03, r
    assert abs(r["accuracy_finetuned_onnx"] - r["accuracy_finetuned"]) < 0.01
