"""--target cpu mixed precision: the sensitivity pass keeps the layer whose INT8 error dominates in float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError
from edgekit.quantize.calibrate import CalibrationData
from edgekit.quantize.cpu import node_macs
from edgekit.quantize.ptq import quantize


def _sensitive_model(seed: int = 0):
    """3x3 conv A -> relu -> 1x1 conv B -> relu -> 3x3 conv C -> relu -> GAP -> Gemm head.

    A's output channel 0 is always 0 after the ReLU (bias -1e3); B has a huge weight (50, about 500x
    its others) on exactly that input channel. In float it contributes nothing, but per-channel INT8
    takes B's scale from it, so B's real weights round to a handful of levels: B alone dominates the
    quantization error. B is also cheap (< 10 % of the MACs), so the default budget allows it.
    """
    r = np.random.default_rng(seed)
    wa = (r.standard_normal((32, 16, 3, 3)) * np.sqrt(2 / 144)).astype(np.float32)
    ba = (r.standard_normal(32) * 0.1).astype(np.float32)
    ba[0] = -1e3
    wb = (r.standard_normal((32, 32, 1, 1)) * np.sqrt(2 / 32)).astype(np.float32)
    wb[:, 0, 0, 0] = 50.0
    bb = np.zeros(32, np.float32)
    wc = (r.standard_normal((32, 32, 3, 3)) * np.sqrt(2 / 288)).astype(np.float32)
    bc = np.zeros(32, np.float32)
    wg = (r.standard_normal((10, 32)) * 0.5).astype(np.float32)
    bg = np.zeros(10, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(wa, "wa"), (ba, "ba"), (wb, "wb"), (bb, "bb"), (wc, "wc"), (bc, "bc"), (wg, "wg"), (bg, "bg")]]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="convA", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="reluA"),
        helper.make_node("Conv", ["ar", "wb", "bb"], ["b"], name="convB"),
        helper.make_node("Relu", ["b"], ["br"], name="reluB"),
        helper.make_node("Conv", ["br", "wc", "bc"], ["c"], name="convC", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["cr"], name="reluC"),
        helper.make_node("GlobalAveragePool", ["cr"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], name="head", transB=1),
    ]
    g = helper.make_graph(nodes, "sens", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    x = np.random.default_rng(seed + 1).standard_normal((80, 16, 8, 8)).astype(np.float32)
    return m, x


def _q(m, x, **kw):
    return quantize(m, CalibrationData({"x": x}, "test"), method="minmax", target="cpu", threads=1, **kw)


def test_sensitivity_pass_keeps_exactly_the_sensitive_layer_float():
    m, x = _sensitive_model()
    macs = node_macs(m)
    assert macs["convB"] / sum(macs.values()) < 0.10
    q_off, rep_off = _q(m, x, sensitivity="off")
    q_on, rep_on = _q(m, x, sensitivity="on")
    kept = rep_on.sensitivity["kept_float"]
    assert kept == ["convB"], rep_on.sensitivity
    assert {"convB", "head"} == {f["node"] for f in rep_on.float_nodes}
    assert not [q for q in rep_on.quantized_nodes if q.startswith("convB")]
    assert [q for q in rep_on.quantized_nodes if q.startswith("convA")]
    assert "convB" in rep_on.to_dict()["sensitivity"]["kept_float"]
    # the float layer is really float in the graph, the others really INT8
    ops = {n.name: n.op_type for n in q_on.graph.node}
    assert ops.get("convB") == "Conv" and not any(n.op_type == "Conv" and n.name != "convB" for n in q_on.graph.node)
    # held-out fidelity improves clearly
    s_off, s_on = rep_off.fidelity["sqnr_db"]["logits"], rep_on.fidelity["sqnr_db"]["logits"]
    assert s_on > s_off + 6.0, (s_off, s_on)
    assert rep_on.fidelity["top1_agreement"] >= rep_off.fidelity["top1_agreement"]
    # "off" runs no trials
    assert rep_off.sensitivity.get("ran") is False


def test_float_budget_is_respected():
    m, x = _sensitive_model()
    _q0, rep = _q(m, x, sensitivity="on", float_budget=0.0)
    assert rep.sensitivity["kept_float"] == []
    assert [f["node"] for f in rep.float_nodes] == ["head"]
    assert rep.sensitivity["trials"] == 3  # convA, convB, convC tried (the head is always float)


def test_bad_sensitivity_options():
    m, x = _sensitive_model()
    with pytest.raises(InputError):
        _q(m, x, sensitivity="sometimes")
    with pytest.raises(InputError):
        _q(m, x, float_budget=1.5)


def test_cli_reports_the_layers_kept_float(cli, tmp_path):
    m, x = _sensitive_model()
    src, calib, out = tmp_path / "s.onnx", tmp_path / "c.npy", tmp_path / "s.cpu.onnx"
    onnx.save(m, str(src))
    np.save(calib, x)
    before = src.read_bytes()
    r = cli(["quantize", src, "-o", out, "--calib", calib, "--target", "cpu", "--method", "minmax",
             "--sensitivity", "on", "--json", "-"])
    assert r.exit_code == 0, r.output
    data = r.json()
    assert data["sensitivity"]["kept_float"] == ["convB"]
    assert {f["node"] for f in data["float_nodes"]} == {"convB", "head"}
    assert src.read_bytes() == before
    assert any(n.op_type == "Conv" and n.name == "convB" for n in onnx.load(str(out)).graph.node)
    bad = cli(["quantize", src, "-o", tmp_path / "bad.onnx", "--calib", calib, "--target", "cpu",
               "--float-budget", "2"])
    assert bad.exit_code != 0 and not (tmp_path / "bad.onnx").exists()
