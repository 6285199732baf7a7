"""`edgekit inspect sparsity MODEL` on ONNX, TorchScript and state_dict files, and on bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.sparsity import nm_mask


def _onnx(tmp_path, good: bool):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    w = w * nm_mask(w, 2, 4, axis=1 if good else 0)
    w6 = rng.normal(size=(8, 6, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["h"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Slice", ["h", "st", "en", "ax"], ["h6"]),
             helper.make_node("Conv", ["h6", "W6"], ["y"], name="conv_c6")]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w6, "W6"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([6], np.int64), "en"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / ("good.onnx" if good else "bad.onnx")
    onnx.save(m, str(p))
    return p


def test_inspect_sparsity_onnx_json(cli, tmp_path):
    r = cli(["inspect", "sparsity", _onnx(tmp_path, True), "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    layers = {layer["name"]: layer for layer in d["layers"]}
    assert layers["conv_a"]["status"] == "ok" and layers["conv_a"]["zero_fraction"] == pytest.approx(0.5)
    assert layers["conv_c6"]["status"] == "skipped" and "multiple of 4" in layers["conv_c6"]["reason"]
    assert d["compliant"] is True


def test_inspect_sparsity_flags_wrong_layout_and_strict_exit(cli, tmp_path):
    bad = _onnx(tmp_path, False)
    r = cli(["inspect", "sparsity", bad, "--json", "-"])
    assert r.exit_code == 0
    d = r.json()
    assert d["compliant"] is False and d["layers_violating"] == 1
    r = cli(["inspect", "sparsity", bad, "--strict"])
    assert r.exit_code == 1
    assert "violat" in r.output


def test_inspect_sparsity_torchscript_and_state_dict(cli, tmp_path):
    torch = pytest.importorskip("torch")
    from edgekit.sparsity import apply_nm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1, groups=8),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    apply_nm(model)
    ts = tmp_path / "m.ts.pt"
    torch.jit.trace(model, torch.randn(1, 4, 3, 3)).save(str(ts))
    r = cli(["inspect", "sparsity", ts, "--json", "-"])
    assert r.exit_code == 0, r.output
    st = {layer["name"]: layer["status"] for layer in r.json()["layers"]}
    assert st == {"0": "ok", "2": "skipped", "4": "ok"}
    sd = tmp_path / "m.pt"
    with torch.no_grad():
        model[0].weight[0, :, 0, 0] = 1.0          # break one group of layer 0
    torch.save(model.state_dict(), str(sd))
    r = cli(["inspect", "sparsity", sd, "--json", "-"])
    st = {layer["name"]: layer["status"] for layer in r.json()["layers"]}
    assert st["0"] == "violates" and st["4"] == "ok"


def test_inspect_sparsity_bad_input(cli, tmp_path):
    r = cli(["inspect", "sparsity", tmp_path / "missing.onnx"])
    assert r.exit_code == 1 and "no such file" in r.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    r = cli(["inspect", "sparsity", junk])
    assert r.exit_code == 1 and "error" in r.output.lower()
    r = cli(["inspect", "sparsity", _onnx(tmp_path, True), "--n", "5", "--m", "4"])
    assert r.exit_code == 1 and "invalid N:M" in r.output
