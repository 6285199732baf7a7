"""`edgekit quantize` and `edgekit inspect qdq` end to end, including every bad input of the issue."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.trt.calibration_cache import read_cache


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def calib_npy(digits_onnx, tmp_path_factory):
    _, xtr, _, _, _ = digits_onnx
    p = tmp_path_factory.mktemp("calib") / "calib.npy"
    np.save(p, xtr[:60])
    return p


def test_quantize_cli_writes_model_cache_and_json(cli, digits_onnx, calib_npy, tmp_path):
    model = digits_onnx[0]
    before = _sha(model)
    out = tmp_path / "d.int8.onnx"
    r = cli(["quantize", model, "-o", out, "--calib", calib_npy, "--method", "entropy", "--trt-version", "8.5.2",
             "--json", "-"])
    assert r.exit_code == 0, r.output
    data = r.json()
    assert data["fidelity"]["top1_agreement"] >= 0.9
    assert data["fidelity"]["samples"] == 12 and data["samples"] == 48
    assert "logits" in data["fidelity"]["sqnr_db"]
    cache = read_cache(tmp_path / "d.int8.calib", expect_version="8.5.2")
    assert cache.header == "TRT-8502-EntropyCalibration2"
    assert "images" in cache.scales and len(cache.scales) == data["calibration_cache"]["tensors"]
    assert _sha(model) == before
    r2 = cli(["inspect", "qdq", out, "--json", "-"])
    assert r2.exit_code == 0, r2.output
    assert r2.json()["ok"] is True
    # the float model fails the checker with a non-zero exit
    r3 = cli(["inspect", "qdq", model, "--json", "-"])
    assert r3.exit_code == 1 and r3.json()["counts"] == {"no-qdq": 1}


def test_inspect_qdq_reports_violations_per_rule(cli, tmp_path):
    from qdq_graphs import make_model

    p = tmp_path / "bad.onnx"
    onnx.save(make_model(bad="residual-add"), p)
    r = cli(["inspect", "qdq", p])
    assert r.exit_code == 1
    assert "residual-add" in r.output and "violated" in r.output


def test_cpu_target_cli(cli, digits_onnx, calib_npy, tmp_path):
    out = tmp_path / "d.cpu.onnx"
    r = cli(["quantize", digits_onnx[0], "-o", out, "--calib", calib_npy, "--target", "cpu", "--method", "minmax",
             "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["target"] == "cpu" and data["calibration_cache"] is None
    assert not (tmp_path / "d.cpu.calib").exists()
    assert any(n.op_type == "QLinearConv" for n in onnx.load(str(out)).graph.node)


def test_synthetic_is_loudly_warned(cli, digits_onnx, tmp_path):
    # the digits model has a dynamic batch but fixed C/H/W: synthetic data can be generated
    r = cli(["quantize", digits_onnx[0], "-o", tmp_path / "s.onnx", "--calib", "synthetic", "--samples", "16",
             "--method", "minmax"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output or "synthetic" in r.output
    assert "NOT preserved" in r.output


def test_image_folder(cli, digits_onnx, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    r = cli(["quantize", digits_onnx[0], "-o", tmp_path / "i.onnx", "--calib", folder, "--json", "-"])
    assert r.exit_code == 0, r.output
    assert r.json()["samples"] == 8 and r.json()["holdout"] == 2


# ------------------------------------------------------------------ bad input


def _assert_clean_failure(r, out, model, before):
    assert r.exit_code == 1, r.output
    assert "error" in r.output.lower()
    assert "Traceback" not in r.output
    assert not out.exists() and not out.with_suffix(".calib").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith("." + out.name)]  # no temp leftovers
    assert _sha(model) == before


@pytest.mark.parametrize("kind", ["shape", "dtype", "empty-folder", "nan", "npz-name", "missing"])
def test_bad_calibration_data(cli, digits_onnx, tmp_path, kind):
    model = digits_onnx[0]
    before = _sha(model)
    if kind == "shape":
        calib = tmp_path / "c.npy"
        np.save(calib, np.zeros((10, 3, 16, 16), np.float32))
    elif kind == "dtype":
        calib = tmp_path / "c.npy"
        np.save(calib, np.zeros((10, 1, 16, 16), np.int64))
    elif kind == "empty-folder":
        calib = tmp_path / "empty"
        calib.mkdir()
    elif kind == "nan":
        calib = tmp_path / "c.npy"
        np.save(calib, np.full((10, 1, 16, 16), np.nan, np.float32))
    elif kind == "npz-name":
        calib = tmp_path / "c.npz"
        np.savez(calib, a=np.zeros((10, 1, 16, 16), np.float32), b=np.zeros((10, 1, 16, 16), np.float32))
    else:
        calib = tmp_path / "nothing.npy"
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    r = cli(["quantize", model, "-o", out, "--calib", calib])
    _assert_clean_failure(r, out, model, before)


def test_already_quantized_model_is_refused(cli, digits_onnx, calib_npy, tmp_path):
    q = tmp_path / "q.onnx"
    assert cli(["quantize", digits_onnx[0], "-o", q, "--calib", calib_npy, "--method", "minmax"]).exit_code == 0
    before = _sha(q)
    out = tmp_path / "out" / "qq.onnx"
    out.parent.mkdir()
    r = cli(["quantize", q, "-o", out, "--calib", calib_npy])
    _assert_clean_failure(r, out, q, before)
    assert "already quantized" in r.output


def test_output_equal_to_input_refused(cli, digits_onnx, calib_npy):
    model = digits_onnx[0]
    before = _sha(model)
    r = cli(["quantize", model, "-o", model, "--calib", calib_npy])
    assert r.exit_code == 1 and _sha(model) == before


def test_unknown_exclude_node(cli, digits_onnx, calib_npy, tmp_path):
    out = tmp_path / "x.onnx"
    r = cli(["quantize", digits_onnx[0], "-o", out, "--calib", calib_npy, "--exclude", "no_such_node"])
    assert r.exit_code == 1 and not out.exists()


def _model_with_uncovered_matmul():
    """Conv (quantizable) -> Reshape -> MatMul with a rank-3 constant weight (no per-channel layout)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w")
    b3 = numpy_helper.from_array(rng.standard_normal((1, 32, 16)).astype(np.float32), "b3")
    shp = numpy_helper.from_array(np.array([-1, 1, 32], np.int64), "shp")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Reshape", ["g", "shp"], ["f"], name="reshape"),
             helper.make_node("MatMul", ["f", "b3"], ["y"], name="batched_matmul")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w, b3, shp])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_uncovered_op_is_reported_skipped(cli, tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_model_with_uncovered_matmul(), p)
    calib = tmp_path / "c.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((20, 16, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    r = cli(["quantize", p, "-o", out, "--calib", calib, "--json", "-"])
    assert r.exit_code == 0, r.output
    data = r.json()
    assert [s["node"] for s in data["skipped"]] == ["batched_matmul"]
    assert data["quantized_nodes"] == ["conv"]
    q = onnx.load(str(out))
    mm = next(n for n in q.graph.node if n.op_type == "MatMul")
    assert mm.input[1] == "b3"  # left float, untouched
