"""The pruner on op patterns written by foreign converters (tf2onnx, paddle2onnx, QDQ tools).

For every pattern of tests/prune/patterns.py: the pruned model passes the checker and strict shape
inference, runs in ONNX Runtime with the original output shapes, and equals the original model with
the pruned channels zeroed (the removed channels are recovered from the pruned weights' values, not
taken from the pruner's report) — or the pruner refuses cleanly: nothing removed, a reason per
skipped group, outputs unchanged. Patterns the issue names as supported must actually be pruned.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import patterns as P  # noqa: E402

try:
    from edgekit.prune import analyze, prune
except ImportError as exc:  # pruner core not importable yet: nothing to test against
    pytest.skip(f"edgekit.prune not available: {exc}", allow_module_level=True)

NAMES = sorted(P.BUILDERS)
_CACHE = {}


def _pruned(name: str, ratio: float = 0.5, criterion: str = "l1"):
    key = (name, ratio, criterion)
    if key not in _CACHE:
        pat = P.build(name)
        before = pat.model.SerializeToString()
        pruned, report = prune(pat.model, ratio=ratio, criterion=criterion)
        assert pat.model.SerializeToString() == before, "prune() modified its input model"
        _CACHE[key] = (pat, pruned, report)
    return _CACHE[key]


def _assert_close(got, want, what):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
        assert np.all(np.isfinite(g)), f"{what}: non-finite values"
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4, err_msg=what)


@pytest.mark.parametrize("name", NAMES)
def test_pattern_prunes_to_valid_equivalent_model(name):
    pat, pruned, report = _pruned(name)
    P.assert_valid(pruned)
    feeds = pat.feeds()
    ref = P.run_ort(pat.model, feeds)
    out = P.run_ort(pruned, feeds)
    assert [o.shape for o in out] == [r.shape for r in ref], "graph output shapes changed"
    d = report.to_dict()
    if d["flops_after"] >= d["flops_before"] and d["params_after"] >= d["params_before"]:
        # a clean refusal: every group that was not pruned says why, and the model is unchanged
        assert all(s.get("reason") for s in d["skipped"]), d["skipped"]
        _assert_close(out, ref, f"{name}: refused but outputs changed")
        return
    dg = analyze(pat.model)
    removed = P.removed_channels(dg, pat.model, pruned)
    assert any(r.size for r in removed.values()), "FLOPs went down but no group lost a channel"
    if pat.mask_equivalent and not P.touches_cross_channel_norm(dg):
        masked = P.masked_original(dg, pat.model, removed)
        _assert_close(out, P.run_ort(masked, feeds), f"{name}: pruned != original with pruned channels zeroed")


@pytest.mark.parametrize("name", [n for n in NAMES if P.BUILDERS[n]().must_prune])
def test_supported_pattern_is_actually_pruned(name):
    pat, pruned, report = _pruned(name)
    d = report.to_dict()
    assert d["flops_after"] < d["flops_before"], f"{name} not pruned; skipped: {d['skipped']}"
    assert d["params_after"] < d["params_before"]
    assert sum(t.ByteSize() for t in pruned.graph.initializer) <= sum(t.ByteSize() for t in pat.model.graph.initializer)
    after = P._stored_arrays(pruned)
    before = P._stored_arrays(pat.model)
    for t in pat.must_shrink:
        assert t in after and after[t].size < before[t].size, f"{name}: {t} was not pruned ({pat.note})"


@pytest.mark.parametrize("name", ["tf_nhwc_convnet", "qdq_per_channel_weights", "multi_head_attention",
                                  "channel_shuffle", "split_sizes", "nhwc_flatten_into_linear"])
def test_ratio_zero_is_identity(name):
    pat = P.build(name)
    pruned, report = prune(pat.model, ratio=0.0)
    P.assert_valid(pruned)
    feeds = pat.feeds(1)
    for a, b in zip(P.run_ort(pruned, feeds), P.run_ort(pat.model, feeds)):
        np.testing.assert_array_equal(a, b)
    assert report.to_dict()["flops_after"] == report.to_dict()["flops_before"]


@pytest.mark.parametrize("name", ["resize_skip_concat", "se_squeeze_unsqueeze", "depth_to_space_crd",
                                  "transposed_weight_linear", "slice_channels", "split_group_conv"])
@pytest.mark.parametrize("ratio", [0.25, 0.7])
def test_random_criterion_other_ratios_mask_equivalent(name, ratio):
    """Random channel choices exercise index mappings that L1's ordering may hide."""
    pat, pruned, _ = _pruned(name, ratio=ratio, criterion="random")
    P.assert_valid(pruned)
    dg = analyze(pat.model)
    removed = P.removed_channels(dg, pat.model, pruned)
    feeds = pat.feeds(2)
    masked = P.masked_original(dg, pat.model, removed)
    _assert_close(P.run_ort(pruned, feeds), P.run_ort(masked, feeds), f"{name}@{ratio}: mask equivalence")


def test_oracle_detects_a_wrong_model():
    """The mask oracle must be able to fail: corrupt one kept weight of a pruned model."""
    pat, pruned, _ = _pruned("bn_unfolded")
    dg = analyze(pat.model)
    removed = P.removed_channels(dg, pat.model, pruned)
    if not any(r.size for r in removed.values()):
        pytest.skip("nothing pruned in bn_unfolded")
    import onnx
    from onnx import numpy_helper

    broken = onnx.ModelProto()
    broken.CopyFrom(pruned)
    t = next(t for t in broken.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    arr = numpy_helper.to_array(t).copy()
    arr[0] = -arr[0] * 3.0
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    feeds = pat.feeds()
    masked = P.masked_original(dg, pat.model, removed)
    with pytest.raises(AssertionError):
        _assert_close(P.run_ort(broken, feeds), P.run_ort(masked, feeds), "corrupted")
