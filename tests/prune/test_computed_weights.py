"""Weights computed at run time from constants: the unoptimised dynamo export writes every conv's
zero bias as ``Expand(CastLike(0, x), Shape(W)[:1])`` and reads the activation ``x`` into CastLike
for its type only. Before, each such group was refused ("CastLike is not in the handler table",
"expanded weight of unknown shape") and the whole model pruned nothing."""

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
