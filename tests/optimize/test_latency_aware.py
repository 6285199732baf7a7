"""Latency-aware pruning: the table's grid, the greedy on saliency per ms, the explicit-count hook in
the pruner, and a replayable recipe. A tiny hand-built conv net keeps it fast (no training)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError
from edgekit.optimize import recipe as rec
from edgekit.optimize.latency_table import (MAX_POINTS, Layer, LatencyTable, _wiring, cached_table, greedy_counts,
                                            grid, grid_step, modelled_ms)
from edgekit.prune import analyze, prune


def _net(c1: int = 16, c2: int = 32) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (c1, 1, 3, 3)), ("b1", (c1,)), ("w2", (c2, c1, 3, 3)), ("b2", (c2,)), ("w3", (10, c2)),
              ("b3", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"], name="r1"),
             helper.make_node("Conv", ["ar", "w2", "b2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["br"], name="r2"),
             helper.make_node("GlobalAveragePool", ["br"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="fl"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("n", [3, 16, 24, 32, 64, 200, 2048])
def test_grid_steps_by_kernel_multiples(n):
    pts, step = grid(n), grid_step(n)
    assert pts[-1] == n and len(pts) <= MAX_POINTS
    assert all(p % step == 0 for p in pts[:-1]) and step in (1, 2, 3, 4, 8, 16, 32) or step == n


def _synthetic(model, slow: str) -> LatencyTable:
    """A table where the layer whose weight is ``slow`` costs 10x per output channel, in steps of 8,
    whatever its input channels (the others scale with both)."""
    layers = {}
    for w, cin, cout in (("w1", 1, 16), ("w2", 16, 32), ("w3", 32, 10)):
        per = 10.0 if w == slow else 1.0
        out = {c: per * (-(-c // 8)) for c in grid(cout)}
        inn = {c: out[cout] * (-(-c // 8)) / (-(-cin // 8)) for c in grid(cin)} if cin > 1 else {cin: out[cout]}
        if w == slow:
            inn = {c: out[cout] for c in grid(cin)}
        layers[w] = Layer(w, "Conv", cin, cout, False, out, inn)
    return LatencyTable("cpu", "measured", 1, layers)


def test_greedy_meets_the_modelled_budget_and_prefers_the_slow_group():
    m = _net()
    groups = analyze(m).groups
    scores = {g.id: np.ones(g.size) for g in groups}  # equal saliency: only the ms decide
    table = _synthetic(m, "w2")
    wiring = _wiring(groups, table)
    full = modelled_ms(table, wiring, {})
    counts = greedy_counts(groups, scores, table, 0.6)
    assert modelled_ms(table, wiring, counts) <= 0.6 * full + 1e-9
    by_src = {g.sources[0]: g for g in groups}
    # c2's output channels are the expensive ones: they go first, and in whole blocks
    assert counts[by_src["c2"].id] < by_src["c2"].size
    assert counts[by_src["c2"].id] % 8 == 0
    assert all(counts[g.id] >= max(1, int(np.ceil(0.1 * g.size))) for g in groups)
    # a looser budget never keeps fewer channels
    loose = greedy_counts(groups, scores, table, 0.9)
    assert all(loose[g.id] >= counts[g.id] for g in groups)


def test_explicit_counts_hook_and_its_errors():
    m = _net()
    groups = analyze(m).groups
    want = {g.id: g.size // 2 for g in groups}
    _, report = prune(m, keep_counts=want, criterion="l1", scope="global")
    assert {r["id"]: r["channels_after"] for r in report.groups} == want
    seen = {}

    def decide(gs, scores):  # the callable sees every group's scores
        seen.update({g.id: len(scores[g.id]) for g in gs})
        return {gs[0].id: 4}

    _, report = prune(m, keep_counts=decide, criterion="l1", scope="global")
    assert seen == {g.id: g.size for g in groups}
    assert report.groups[0]["channels_after"] == 4 and report.groups[1]["channels_after"] == groups[1].size
    with pytest.raises(InputError):
        prune(m, keep_counts=want, ratio=0.5)


def test_measured_table_is_cached_and_the_recipe_replays(tmp_path):
    m = _net()
    table = cached_table(m, tmp_path, batch=4)
    files = list(tmp_path.glob("latency-table-*.json"))
    assert len(files) == 1 and set(table.layers) == {"w1", "w2", "w3"}
    assert all(v > 0 for lay in table.layers.values() for v in lay.out_ms.values())
    stamp = files[0].stat().st_mtime_ns
    again = cached_table(m, tmp_path, batch=4)
    assert files[0].stat().st_mtime_ns == stamp and again.to_dict() == table.to_dict()
    r, pruned = rec.resolve(m, rec.Recipe(flops_target=0.5, latency_aware=True), None, table)
    assert r.keep_counts  # something was removed, and the counts are recorded
    doc = rec.to_json(r, {})
    path = tmp_path / "recipe.json"
    import json

    path.write_text(json.dumps(doc))
    back = rec.load(path)
    assert back == r and back.key() != rec.Recipe(flops_target=0.5).key()
    assert rec.build(m, back).SerializeToString() == pruned.SerializeToString()
    with pytest.raises(InputError):
        rec.build(m, rec.Recipe(flops_target=0.5, latency_aware=True))  # no counts, no table
