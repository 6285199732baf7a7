"""`edgekit prune`: flags, JSON report, --explain, and every bad input of the issue."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _conv_net(rng, c=16, in_dims=(1, 3, 8, 8), extra_nodes=(), mid_op=None):
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    src = "r1"
    if mid_op is not None:
        nodes.append(helper.make_node(mid_op, [src], ["m"], name="mid"))
        src = "m"
    nodes += [helper.make_node("Conv", [src, "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3")]
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b2"),
             numpy_helper.from_array(rng.standard_normal((4, c, 1, 1)).astype(np.float32), "w3")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [in_dims[0], 4, in_dims[2], in_dims[3]])
    g = helper.make_graph(nodes, "net", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def net(tmp_path):
    p = tmp_path / "net.onnx"
    onnx.save(_conv_net(np.random.default_rng(0)), str(p))
    return p


def test_cli_prune_json_report_and_valid_output(cli, net, tmp_path):
    out = tmp_path / "out.onnx"
    before = _digest(net)
    r = cli(["prune", net, "-o", out, "--ratio", "0.5", "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    for key in ("flops_before", "flops_after", "params_before", "params_after", "groups", "skipped"):
        assert key in d
    assert d["flops_after"] < d["flops_before"] and d["params_after"] < d["params_before"]
    assert [g["channels_after"] for g in d["groups"]] == [8, 8]
    assert all(s["reason"] for s in d["skipped"])
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    from edgekit.graph.flops import count_params

    assert count_params(m) == d["params_after"]
    assert _digest(net) == before


def test_cli_flops_target_round_to_and_explain(cli, net, tmp_path):
    out = tmp_path / "out.onnx"
    r = cli(["prune", net, "-o", out, "--flops-target", "0.6", "--round-to", "8", "--explain"])
    assert r.exit_code == 0, r.output
    assert "coupled ops" in r.output and "NOT PRUNED" in r.output and "graph output" in r.output
    m = onnx.load(str(out))
    w = {t.name: t for t in m.graph.initializer}
    assert all(d % 8 == 0 for d in (w["w1"].dims[0], w["w2"].dims[0]))


def test_cli_global_and_params_target(cli, net, tmp_path):
    out = tmp_path / "out.onnx"
    r = cli(["prune", net, "-o", out, "--params-target", "0.7", "--global", "--criterion", "l2", "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    assert d["scope"] == "global" and d["params_after"] <= 0.75 * d["params_before"]


@pytest.mark.parametrize("ratio", ["1.0", "-0.1", "1.5"])
def test_ratio_outside_range(cli, net, tmp_path, ratio):
    out = tmp_path / "out.onnx"
    r = cli(["prune", net, "-o", out, "--ratio", ratio])
    assert r.exit_code == 1 and "ratio" in r.output
    assert not out.exists()


def test_no_target_and_two_targets(cli, net, tmp_path):
    out = tmp_path / "out.onnx"
    assert cli(["prune", net, "-o", out]).exit_code == 1
    assert cli(["prune", net, "-o", out, "--ratio", "0.2", "--flops-target", "0.5"]).exit_code == 1
    assert not out.exists()


def test_protect_matching_nothing(cli, net, tmp_path):
    out = tmp_path / "out.onnx"
    before = _digest(net)
    r = cli(["prune", net, "-o", out, "--ratio", "0.5", "--protect", "no_such_layer"])
    assert r.exit_code == 1 and "no_such_layer" in r.output
    assert not out.exists() and _digest(net) == before
    assert not list(tmp_path.glob(".out.onnx*"))


def test_protect_keeps_group(cli, net, tmp_path):
    out = tmp_path / "out.onnx"
    r = cli(["prune", net, "-o", out, "--ratio", "0.5", "--protect", "conv1", "--json", "-"])
    assert r.exit_code == 0
    d = r.json()
    assert any("protect" in s["reason"] for s in d["skipped"])
    w = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    assert w["w1"].dims[0] == 16 and w["w2"].dims[0] == 8


def test_unsupported_op_on_every_path(cli, tmp_path):
    p = tmp_path / "u.onnx"
    onnx.save(_conv_net(np.random.default_rng(0), mid_op="Hardmax"), str(p))
    # Hardmax sits between conv1 and conv2; conv2's group reaches the graph output through conv3's input
    out = tmp_path / "out.onnx"
    r = cli(["prune", p, "-o", out, "--ratio", "0.5", "--json", "-", "--protect", "conv2"])
    assert r.exit_code == 0
    d = r.json()
    assert d["flops_after"] == d["flops_before"]
    assert any("Hardmax" in s["reason"] for s in d["skipped"])
    assert any("no prunable group" in n and "unpruned" in n for n in d["warnings"])


def test_dynamic_channel_dimension(cli, tmp_path):
    m = _conv_net(np.random.default_rng(0))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    p = tmp_path / "dyn.onnx"
    onnx.save(m, str(p))
    out = tmp_path / "out.onnx"
    r = cli(["prune", p, "-o", out, "--ratio", "0.5"])
    assert r.exit_code == 1 and "channel" in r.output
    assert not out.exists()


def test_graph_failing_shape_inference(cli, tmp_path):
    m = _conv_net(np.random.default_rng(0))
    bad = numpy_helper.from_array(np.zeros((16, 5, 3, 3), np.float32), "w2")  # 5 != 16 input channels
    for i, t in enumerate(m.graph.initializer):
        if t.name == "w2":
            m.graph.initializer[i].CopyFrom(bad)
    p = tmp_path / "bad.onnx"
    onnx.save(m, str(p))
    out = tmp_path / "out.onnx"
    before = _digest(p)
    r = cli(["prune", p, "-o", out, "--ratio", "0.5"])
    assert r.exit_code == 1 and "shape inference" in r.output, repr(r.exception)
    assert not out.exists() and _digest(p) == before


def test_external_data_model(cli, tmp_path):
    m = _conv_net(np.random.default_rng(0), c=32)
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    data = tmp_path / "ext.onnx.data"
    before = (_digest(p), _digest(data))
    out = tmp_path / "out.onnx"
    r = cli(["prune", p, "-o", out, "--ratio", "0.5", "--json", "-"])
    assert r.exit_code == 0, r.output
    assert (_digest(p), _digest(data)) == before
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    # the same model without its data file: a clear error, nothing written
    data.rename(tmp_path / "moved.data")
    out2 = tmp_path / "out2.onnx"
    r = cli(["prune", p, "-o", out2, "--ratio", "0.5"])
    assert r.exit_code == 1 and "external" in r.output, repr(r.exception)
    assert not out2.exists()


def test_unknown_criterion(cli, net, tmp_path):
    r = cli(["prune", net, "-o", tmp_path / "o.onnx", "--ratio", "0.5", "--criterion", "magic"])
    assert r.exit_code == 1 and "l1" in r.output


def test_library_never_modifies_input():
    from edgekit.prune import prune

    m = _conv_net(np.random.default_rng(0))
    before = m.SerializeToString()
    prune(m, ratio=0.5)
    assert m.SerializeToString() == before


def test_a_target_the_prunable_groups_cannot_reach_is_warned(cli, tmp_path):
    """Only part of the FLOPs lie in prunable groups (conv2 protected, Hardmax in the way): a FLOPs
    target below what they can give is missed, and the report says so (not only the numbers); a
    reachable target gives no such warning."""
    p = tmp_path / "u.onnx"
    onnx.save(_conv_net(np.random.default_rng(0), mid_op="Hardmax"), str(p))
    r = cli(["prune", p, "-o", tmp_path / "o.onnx", "--flops-target", "0.9", "--json", "-"])
    assert r.exit_code == 0
    d = r.json()
    assert d["flops_ratio"] <= 0.9 + 0.02 and not any("not reached" in w for w in d["warnings"]), d
    r = cli(["prune", p, "-o", tmp_path / "o2.onnx", "--flops-target", "0.05", "--json", "-"])
    assert r.exit_code == 0
    d = r.json()
    assert d["flops_ratio"] > 0.07
    assert any(w.startswith("FLOPs target 0.05 not reached") for w in d["warnings"]), d["warnings"]
