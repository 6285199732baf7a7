"""Shared helpers for the pruner tests: export, random decisions, mask-equivalence check."""

from __future__ import annotations

import io

import numpy as np


def export(module, shape, dynamo: bool = False, opset: int = 17):
    import onnx
    import torch

    x = torch.randn(*shape)
    module.eval()
    if dynamo:
        prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=max(opset, 18), verbose=False)
        return prog.model_proto
    f = io.BytesIO()
    torch.onnx.export(module, (x,), f, dynamo=False, opset_version=opset, input_names=["x"])
    return onnx.load_from_string(f.getvalue())


def random_keeps(dg, seed: int = 0, max_ratio: float = 0.8):
    from edgekit.prune.selection import select as _select

    rng = np.random.default_rng(seed)
    keeps = {}
    for g in dg.groups:
        r = rng.uniform(0.1, max_ratio)
        # at least one channel goes from every group that has two or more (a small group and a
        # small ratio would otherwise remove nothing, and the check would test nothing)
        n_keep = max(1, min(g.size - 1, g.size - int(g.size * r)))
        keeps[g.id] = _select(rng.random(g.size), n_keep, g.segments, 1)
    return keeps


def check_mask_equivalence(model, seed: int = 0, feeds=None, rtol=1e-4, atol=1e-4, min_groups: int = 1):
    """Prune with random per-group decisions; the result must run, pass checks and equal the
    original with the removed channels zeroed. Returns (dg, pruned)."""
    from edgekit.runtime.verify import assert_close, check, random_feeds, run, zero_channels
    from edgekit.prune import analyze
    from edgekit.prune.apply import activation_masks, apply

    dg = analyze(model)
    assert len(dg.groups) >= min_groups, dg.details()
    keeps = random_keeps(dg, seed)
    pruned = apply(dg, keeps)
    feeds = feeds or random_feeds(model, seed)
    got = check(pruned, feeds)
    # dg.model: the graph as analysed (a SplitToSequence read by SequenceAt is a Split there)
    ref = run(zero_channels(dg.model, activation_masks(dg, keeps)), feeds)
    assert_close(got, ref, rtol=rtol, atol=atol, what="pruned vs zeroed original")
    n_removed = sum(int((~k).sum()) for k in keeps.values())
    assert n_removed > 0
    return dg, pruned


def run_any_batch(model, x):
    """Run ``model`` in ONNX Runtime on ``x`` whatever its batch (the batch axis made symbolic)."""
    import onnxruntime as ort

    from edgekit.prune import obspa

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(obspa.with_dynamic_batch(model).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x.astype(obspa.input_dtype(model, name))})[0]


def export_bn(module, path, keep_bn: bool = True, shape=(1, 3, 8, 8)):
    """TorchScript export to ``path`` with BatchNorm nodes kept (or folded) and opset 17."""
    import onnx
    import torch

    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(module.eval(), torch.zeros(*shape), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, training=mode)
    return onnx.load(str(path))
