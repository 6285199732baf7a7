"""Patterns of the unoptimised dynamo export (``torch.onnx.export(..., dynamo=True, optimize=False)``,
the way to keep BatchNorm with that exporter):

* weights computed at run time from constants: every conv's zero bias is
  ``Expand(CastLike(0, x), Shape(W)[:1])``, and the activation ``x`` is read by CastLike for its
  type only. Before, each such group was refused ("CastLike is not in the handler table",
  "expanded weight of unknown shape") and the whole model pruned nothing;
* ``torch.split`` / ``chunk`` as SplitToSequence read back by SequenceAt: before, refused
  ("SplitToSequence is not in the handler table"); now the same as a Split."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.prune.helpers import check_mask_equivalence, run_any_batch


def _broadcast_bias_net(c_mid: int = 8, target_const: bool = True):
    """x -> Conv(bias = Expand(b1, [C])) -> Relu -> Conv -> y, with b1 a [1] constant (one value for
    every channel) and the target either constant or computed from the weight's shape."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((c_mid, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, c_mid, 1, 1)).astype(np.float32), "w2")
    b1 = numpy_helper.from_array(np.array([0.5], np.float32), "b1")
    nodes = []
    inits = [w1, w2, b1]
    if target_const:
        inits.append(numpy_helper.from_array(np.array([c_mid], np.int64), "tgt"))
    else:
        nodes.append(helper.make_node("Shape", ["w1"], ["tgt"], start=0, end=1))
    nodes += [
        helper.make_node("CastLike", ["b1", "x"], ["b1c"]),
        helper.make_node("Expand", ["b1c", "tgt"], ["bias"]),
        helper.make_node("Conv", ["x", "w1", "bias"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("CastLike", ["b1", "r"], ["unused_type_probe"]),
        helper.make_node("Conv", ["r", "w2"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("target_const", [True, False])
def test_a_bias_broadcast_over_the_channels_follows_the_cut(target_const):
    dg, pruned = check_mask_equivalence(_broadcast_bias_net(target_const=target_const), min_groups=1)
    assert any(g.size == 8 for g in dg.groups), dg.details()
    conv = next(n for n in pruned.graph.node if n.op_type == "Conv")
    kept = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}[conv.input[1]].shape[0]
    assert kept < 8


def test_unoptimised_dynamo_export_prunes_like_the_torchscript_one(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(2 * c),
                                         torch.nn.ReLU(), torch.nn.Conv2d(2 * c, c, 3, padding=1, bias=False),
                                         torch.nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.a(x))

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              Block(8), Block(8), torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5))
    from edgekit.prune import obspa

    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average: running statistics of the inputs measured on
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    net.train()
    with torch.no_grad():  # BN statistics of smooth noise, the inputs the errors are measured on
        for seed in range(4):
            net(torch.from_numpy(obspa.smooth_noise(np.random.default_rng(seed), (32, 3, 10, 10), 3)))
    net.eval()
    path = tmp_path / "d.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 10, 10),), str(path), input_names=["x"], output_names=["y"],
                          dynamo=True, optimize=False, opset_version=18,
                          dynamic_shapes=({0: torch.export.Dim("n")},))
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    # the pattern this file is about: computed zero biases, activations read by CastLike, BN kept
    assert "CastLike" in ops and "Expand" in ops and "BatchNormalization" in ops
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {i.name for i in model.graph.initializer}
    assert sum(len(n.input) > 2 and n.input[2] not in inits for n in convs) >= 5

    dg, _ = check_mask_equivalence(model, min_groups=3)
    assert not any("CastLike" in s or "expanded weight" in s for s in dg.details()), dg.details()

    from edgekit.prune import prune
    from tests.prune.helpers import export_bn

    ts = export_bn(net, tmp_path / "t.onnx", True, (1, 3, 10, 10))  # TorchScript, BN kept
    x = obspa.smooth_noise(np.random.default_rng(9), (16, 3, 10, 10), 3)
    errs = {}
    for name, m in (("dynamo", model), ("torchscript", ts)):
        ref = run_any_batch(m, x)
        for crit in ("l1", "obspa", "obspa-seq"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pm, rep = prune(m, ratio=0.4, criterion=crit)
            assert rep.flops_ratio < 0.8 and not rep.warnings, (name, crit, rep.flops_ratio, rep.warnings)
            onnx.checker.check_model(pm, full_check=True)
            errs[name, crit] = float(np.mean((run_any_batch(pm, x) - ref) ** 2))
            if crit == "obspa-seq":
                assert any("refitted" in s for s in rep.notes), rep.notes
    # the same network pruned the same way whichever exporter wrote it
    for crit in ("l1", "obspa", "obspa-seq"):
        assert errs["dynamo", crit] == pytest.approx(errs["torchscript", crit], rel=0.15), errs
    assert errs["dynamo", "obspa-seq"] < errs["dynamo", "obspa"] < errs["dynamo", "l1"], errs


def _sequence_net(split_value, index_order=(0, 1, -1), opset=17, extra_use=False):
    """x -> Conv(3->12) -> Relu -> SplitToSequence(split, axis 1) -> SequenceAt(i) for each i in
    index_order -> a 1x1 Conv per piece -> Concat -> y."""
    rng = np.random.default_rng(2)
    w0 = numpy_helper.from_array(rng.standard_normal((12, 3, 3, 3)).astype(np.float32), "w0")
    inits = [w0]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1], name="conv0"),
             helper.make_node("Relu", ["h"], ["r"], name="relu")]
    if split_value is None:
        nodes.append(helper.make_node("SplitToSequence", ["r"], ["seq"], axis=1, keepdims=1, name="seq"))
        sizes = [1] * 12
    else:
        inits.append(numpy_helper.from_array(np.asarray(split_value, dtype=np.int64), "split"))
        nodes.append(helper.make_node("SplitToSequence", ["r", "split"], ["seq"], axis=1, name="seq"))
        sizes = list(split_value) if np.ndim(split_value) else [min(int(split_value), 12 - k)
                                                                for k in range(0, 12, int(split_value))]
    outs = []
    for j, i in enumerate(index_order):
        inits.append(numpy_helper.from_array(np.asarray(i, dtype=np.int64), f"i{j}"))
        nodes.append(helper.make_node("SequenceAt", ["seq", f"i{j}"], [f"p{j}"], name=f"at{j}"))
        c = sizes[i]
        inits.append(numpy_helper.from_array(rng.standard_normal((4, c, 1, 1)).astype(np.float32), f"wp{j}"))
        nodes.append(helper.make_node("Conv", [f"p{j}", f"wp{j}"], [f"q{j}"], name=f"conv{j + 1}"))
        outs.append(f"q{j}")
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=1, name="cat"))
    graph_outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4 * len(outs), 6, 6])]
    if extra_use:
        nodes.append(helper.make_node("SequenceLength", ["seq"], ["n"], name="len"))
        graph_outs.append(helper.make_tensor_value_info("n", TensorProto.INT64, []))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          graph_outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("split_value,order,opset", [([4, 8], (0, 1), 17), ([2, 4, 6], (2, 0, -2), 17),
                                                    (5, (0, 1, -1), 17), ([6, 6], (1, 0), 11)])
def test_a_sequence_read_back_piece_by_piece_is_pruned_as_a_split(split_value, order, opset):
    from edgekit.runtime.verify import random_feeds, run
    from edgekit.prune.canon import split_sequences

    model = _sequence_net(split_value, order, opset)
    before = model.SerializeToString()
    canon = split_sequences(model)
    assert model.SerializeToString() == before  # the caller's model is not changed
    assert [n.op_type for n in canon.graph.node].count("Split") == 1
    assert not any(n.op_type in ("SplitToSequence", "SequenceAt") for n in canon.graph.node)
    feeds = random_feeds(model, 0)
    for a, b in zip(run(model, feeds), run(canon, feeds)):  # the same function
        assert np.array_equal(a, b)
    dg, pruned = check_mask_equivalence(model, min_groups=1)
    group = next(g for g in dg.groups if "conv0" in g.sources)
    assert group.size == 12 and not any("SplitToSequence" in s for s in dg.details())


def test_a_sequence_used_otherwise_is_left_alone_and_refused_by_name():
    from edgekit.prune import analyze
    from edgekit.prune.canon import split_sequences

    model = _sequence_net([4, 8], (0, 1), extra_use=True)
    assert split_sequences(model) is model
    dg = analyze(model)
    assert not any("conv0" in g.sources for g in dg.groups)
    assert any("SplitToSequence" in (g.reason or "") for g in dg.skipped), dg.details()
    no_split = _sequence_net(None, (0, 1))  # no split input: pieces of one channel, left alone too
    assert split_sequences(no_split) is no_split


def test_unoptimised_dynamo_res2net_prunes_through_its_splits():
    torch = pytest.importorskip("torch")
    from edgekit.models.zoo import CORPUS
    from edgekit.prune import analyze

    factory, shape = CORPUS["res2net"]
    torch.manual_seed(0)
    net = factory().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.onnx.export(net, (torch.randn(*shape),), dynamo=True, optimize=False, opset_version=18,
                                  verbose=False).model_proto
    assert any(n.op_type == "SplitToSequence" for n in model.graph.node)
    dg = analyze(model)
    prunable = sum(g.size for g in dg.groups) / (sum(g.size for g in dg.groups) + sum(g.size for g in dg.skipped))
    assert prunable > 0.9, dg.details()  # 0.36 before: every group through a split was refused
    check_mask_equivalence(model, min_groups=5)
