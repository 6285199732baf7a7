"""Structural pruning of already quantised (QDQ) graphs.

Three ways a weight reaches its layer in a quantised ONNX file: QuantizeLinear -> DequantizeLinear on
the float weight (edgekit quantize, QAT exports, TensorRT's tools), DequantizeLinear of a stored
int8 weight (ONNX Runtime's QDQ format, int32 bias included), and blocked DequantizeLinear (opset
21). Per-channel scales and zero points must lose exactly the pruned channels; the pruned graph must
equal the quantised original with those channels zeroed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import UnsupportedError
from edgekit.prune import analyze, prune

from tests.prune.helpers import check_mask_equivalence, export


def _net():
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                            torch.nn.ReLU())
            self.body = torch.nn.Sequential(torch.nn.Conv2d(16, 24, 1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(24, 24, 3, padding=1, groups=24), torch.nn.ReLU(),
                                            torch.nn.Conv2d(24, 16, 1))
            self.side = torch.nn.Conv2d(16, 8, 1)
            self.head = torch.nn.Linear(24, 5)

        def forward(self, x):
            h = self.stem(x)
            h = torch.relu(h + self.body(h))
            y = torch.cat([self.side(h), h[:, :8]], dim=1)  # a concat and a channel slice
            y = torch.cat([y, self.side(h)], 1).mean((2, 3))[:, :24]
            return self.head(y)

    torch.manual_seed(0)
    net = Block().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _float_model():
    return export(_net(), (1, 3, 8, 8))


def _edgekit_qdq():
    from edgekit.quantize.ptq import quantize

    q, _ = quantize(_float_model(), "synthetic", samples=8, min_channels=1, measure_fidelity=False,
                    with_cache_scales=False)
    return q


def _ort_qdq(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_float_model(), src)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return onnx.load(str(dst))


def _per_channel_qparams(model):
    """``{scale or zero-point name: (its length, the length of the weight axis it describes)}``."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or n.input[0] not in inits:
            continue
        w = inits[n.input[0]]
        ax = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 1)
        for name in n.input[1:3]:
            if name in inits and inits[name].size > 1:
                out[name] = (inits[name].size, w.shape[ax])
    return out


def _check_pruned_qdq(model):
    before = model.SerializeToString()
    dg, pruned = check_mask_equivalence(model, seed=1, min_groups=3)
    assert model.SerializeToString() == before
    onnx.checker.check_model(pruned, full_check=True)
    qp = _per_channel_qparams(pruned)
    assert qp, "the quantised graph has per-channel scales"
    for name, (size, channels) in qp.items():
        assert size == channels, f"{name}: {size} scales for {channels} channels"
    # some per-channel scales really lost entries
    was = _per_channel_qparams(model)
    assert any(qp[k][0] < was[k][0] for k in qp if k in was) or len(qp) != len(was)
    return dg


def test_q_dq_on_float_weights_prunes_like_the_zeroed_original():
    q = _edgekit_qdq()
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the weights are float constants behind QuantizeLinear -> DequantizeLinear
    wq = [n for n in q.graph.node if n.op_type == "QuantizeLinear"
          and n.input[0] in {i.name for i in q.graph.initializer}]
    assert wq
    _check_pruned_qdq(q)


def test_int8_weights_and_int32_biases_behind_dequantize_prune_exactly(tmp_path):
    q = _ort_qdq(tmp_path)
    inits = {i.name: i for i in q.graph.initializer}
    assert any(i.data_type == TensorProto.INT8 for i in inits.values())
    assert any(i.data_type == TensorProto.INT32 for i in inits.values())  # the biases
    _check_pruned_qdq(q)


def test_cli_prunes_a_quantised_file_and_obspa_refuses_it(tmp_path):
    from typer.testing import CliRunner

    from edgekit.cli.main import app

    src = tmp_path / "q.onnx"
    onnx.save(_edgekit_qdq(), src)
    before = src.read_bytes()
    r = CliRunner().invoke(app, ["prune", str(src), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5",
                                 "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["flops_ratio"] < 0.8
    r = CliRunner().invoke(app, ["prune", str(src), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5",
                                 "--criterion", "obspa"])
    assert r.exit_code != 0 and "quantised" in r.output
    assert not (tmp_path / "o.onnx").exists()
    assert src.read_bytes() == before


def _blocked_mlp(block_axis_second: int):
    """x[1,8] @ DQ(W1 int8 [8,6], blocks of 4 along axis 0) -> Relu -> @ DQ(W2 [6,3], blocks of 2 along
    ``block_axis_second``): the 6 hidden channels are W1's axis 1 and W2's axis 0."""
    rng = np.random.default_rng(0)
    w1 = rng.integers(-100, 100, (8, 6)).astype(np.int8)
    s1 = rng.uniform(0.01, 0.02, (2, 6)).astype(np.float32)
    w2 = rng.integers(-100, 100, (6, 3)).astype(np.int8)
    s2 = rng.uniform(0.01, 0.02, (3, 3) if block_axis_second == 0 else (6, 2)).astype(np.float32)
    ins = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1q"), (s1, "s1"), (w2, "w2q"), (s2, "s2"))]
    nodes = [helper.make_node("DequantizeLinear", ["w1q", "s1"], ["w1"], axis=0, block_size=4),
             helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("DequantizeLinear", ["w2q", "s2"], ["w2"], axis=block_axis_second, block_size=2),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    g = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], ins)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_blocked_scales_are_cut_across_their_blocks():
    model = _blocked_mlp(block_axis_second=1)  # W2 blocked along its outputs, cut along its inputs
    dg = _check_pruned_qdq_blocked(model)
    assert [g.size for g in dg.groups] == [6]  # the hidden channels (the 3 outputs stay: graph output)


def _check_pruned_qdq_blocked(model):
    dg, pruned = check_mask_equivalence(model, seed=2, min_groups=1)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    kept = inits["w1q"].shape[1]
    assert kept < 6 and inits["s1"].shape == (2, kept) and inits["s2"].shape == (kept, 2)
    return dg


def test_cutting_along_a_blocked_axis_is_refused_with_the_reason():
    model = _blocked_mlp(block_axis_second=0)  # W2's blocks run along the hidden channels
    dg = analyze(model)
    assert not dg.groups
    reasons = " ".join(r for _, r in dg.pins)
    assert "quantisation blocks" in reasons
    p, rep = prune(model, ratio=0.5)
    assert rep.flops_ratio == pytest.approx(1.0)


def test_obspa_refuses_a_quantised_graph_with_a_typed_error():
    q = _edgekit_qdq()
    before = q.SerializeToString()
    with pytest.raises(UnsupportedError, match="quantised"):
        prune(q, ratio=0.5, criterion="obspa")
    assert q.SerializeToString() == before


def test_l1_scores_stored_int8_weights_by_their_dequantised_values(tmp_path):
    """ONNX Runtime's QDQ format stores int8 weights whose channels each use the full int8 range:
    their raw magnitudes say nothing. Scored through their DequantizeLinear, every group ranks its
    channels as the float model's l1 does (up to the int8 rounding)."""
    from edgekit.prune.core import PruneContext
    from edgekit.prune.criteria import Magnitude

    def scores(model):
        dg = analyze(model)
        ctx = PruneContext(dg)
        return {tuple(g.sources): Magnitude(p=1)(g, ctx) for g in dg.groups}

    sf, sq = scores(_float_model()), scores(_ort_qdq(tmp_path))
    common = set(sf) & set(sq)
    assert len(common) >= 3
    for k in common:
        assert np.allclose(sq[k], sf[k], rtol=0.03), k
        assert np.ptp(sq[k]) > 0.05 * np.mean(sq[k])  # the channels really differ


def _per_channel_activation_qdq(block: int = 0):
    """Conv(3->8) -> Q/DQ with one scale per channel (axis 1) -> Relu -> Conv(8->4)."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    n_s = 8 // block if block else 8
    s_shape = (1, n_s, 1, 1) if block else (n_s,)
    sc = rng.uniform(0.02, 0.05, s_shape).astype(np.float32)
    zp = rng.integers(-3, 3, s_shape).astype(np.int8)
    kw = {"axis": 1, **({"block_size": block} if block else {})}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["h", "sc", "zp"], ["hq"], name="q", **kw),
             helper.make_node("DequantizeLinear", ["hq", "sc", "zp"], ["hd"], name="dq", **kw),
             helper.make_node("Relu", ["hd"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (sc, "sc"), (zp, "zp"))]
    g = helper.make_graph(nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21 if block else 17)],
                             ir_version=10 if block else 8)


def test_per_channel_activation_scales_follow_the_channels():
    model = _per_channel_activation_qdq()
    dg, pruned = check_mask_equivalence(model, seed=4)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    kept = inits["w2"].shape[1]
    assert kept < 8
    qparams = [v for k, v in inits.items() if k.startswith(("sc", "zp"))]
    assert qparams and all(v.size == kept for v in qparams)


def test_blocked_activation_scales_along_the_channels_are_not_cut():
    dg = analyze(_per_channel_activation_qdq(block=2))
    assert not dg.groups
    assert "quantisation blocks" in " ".join(r for _, r in dg.pins)
