"""Issue 17, quantize: calibration sample counts that are not a multiple of the batch, clean ``--json -``,
``--trt-version`` forms, and .npz array names."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.quantize import calibrate as cal
from edgekit.errors import CalibrationError, InputError
from edgekit.graph.io import TensorSpec
from edgekit.quantize.cpu import stdout_to_stderr
from edgekit.quantize.ptq import quantize
from edgekit.trt.calibration_cache import check_trt_version

ROOT = Path(__file__).resolve().parents[2]


def _tiny(dynamic: bool = True, cin: int = 3):
    """Conv-ReLU-GAP-Gemm on [N, cin, 8, 8] (dynamic batch by default; cin=16 for the TensorRT placer)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, cin, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(16, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "fw"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fb"),
             numpy_helper.from_array(np.array([-1, 16], np.int64), "sh")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Reshape", ["g", "sh"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc")]
    batch = "N" if dynamic else 1
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(_tiny(), str(p))
    return p


@pytest.fixture(scope="module")
def tiny16_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("tiny16") / "tiny16.onnx"
    onnx.save(_tiny(cin=16), str(p))
    return p


def _no_traces(r, out):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert not out.exists() and not out.with_suffix(".calib").exists()


def cal_spec(name):
    return TensorSpec(name, "float32", ("N", 3, 8, 8))


# --- defect 3: any calibration sample count on a dynamic-batch model -----------------------------------


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
@pytest.mark.parametrize("n", [3, 9, 13, 33])
def test_cpu_calibration_any_sample_count(method, n):
    data = cal.CalibrationData({"x": np.random.default_rng(n).standard_normal((n, 3, 8, 8)).astype(np.float32)},
                               "test")
    ticks = []
    out, rep = quantize(_tiny(), data, method=method, target="cpu", sensitivity="off",
                        progress=lambda advance=0, total=None: ticks.append(advance))
    assert rep.samples + rep.holdout == n
    assert sum(ticks) == math.ceil(rep.samples / 8)  # every batch was read, the partial last one included
    assert rep.quantized_nodes
    assert rep.fidelity.get("sqnr_db")


def test_cpu_default_synthetic_cli_dynamic_batch(cli, tiny_path, tmp_path):
    # the command: 32 synthetic samples by default, 26 left after the hold-out
    out = tmp_path / "x.onnx"
    r = cli(["quantize", tiny_path, "-o", out, "--calib", "synthetic", "--target", "cpu", "--json", "-"])
    assert r.exit_code == 0, r.output
    assert r.json()["samples"] % 8 != 0
    assert out.exists()


# --- defect 4: --json - stays clean although ORT prints ---------------------------------------------


def test_stdout_to_stderr_catches_python_and_native_writes(capfd):
    with stdout_to_stderr():
        print("from python")
        os.write(1, b"from fd 1\n")
    print("after")
    got = capfd.readouterr()
    assert "from python" in got.err and "from fd 1" in got.err
    assert got.out == "after\n"


def test_json_stdout_is_clean_in_a_real_process(tiny_path, tmp_path):
    out = tmp_path / "x.onnx"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", EDGEKIT_DEBUG="0")
    r = subprocess.run([sys.executable, "-m", "edgekit", "quantize", str(tiny_path), "-o", str(out), "--calib",
                        "synthetic", "--target", "cpu", "--method", "entropy", "--json", "-"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["target"] == "cpu"
    assert "Collecting tensor data" not in r.stdout  # (ORT's calibrators, when used, print to stderr: test_q17)


# --- defect 9: --trt-version X.Y like build; .npz array names must match the inputs -------------------


@pytest.mark.parametrize("text,want", [("8.5", "8.5.0"), ("8.5.2", "8.5.2"), (" 10.3 ", "10.3.0"), ("7.1.3", "7.1.3")])
def test_check_trt_version_accepts_xy_and_xyz(text, want):
    assert check_trt_version(text) == want


@pytest.mark.parametrize("text", ["abc", "8", "8.5.2.1", "8.x", "-8.5", "11.0", "6.0.1", ""])
def test_check_trt_version_refuses(text):
    with pytest.raises(InputError, match="--trt-version"):
        check_trt_version(text)


def test_cli_trt_version_xy(cli, tiny16_path, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli(["quantize", tiny16_path, "-o", out, "--calib", "synthetic", "--trt-version", "8.5", "--json", "-"])
    assert r.exit_code == 0, r.output
    assert r.json()["calibration_cache"]["header"] == "TRT-8500-EntropyCalibration2"


def test_cli_bad_trt_version_refused_before_the_work(cli, tiny16_path, tmp_path, monkeypatch):
    import edgekit.quantize.ptq as ptq

    def no_work(*a, **k):
        raise AssertionError("quantized before checking --trt-version")

    monkeypatch.setattr(ptq, "quantize", no_work)
    out = tmp_path / "q.onnx"
    r = cli(["quantize", tiny16_path, "-o", out, "--calib", "synthetic", "--trt-version", "8.5.x"])
    _no_traces(r, out)
    assert "--trt-version must look like X.Y or X.Y.Z" in r.output


def test_npz_array_name_must_match_an_input(cli, tiny_path, tmp_path):
    calib = tmp_path / "c.npz"
    np.savez(calib, images=np.zeros((10, 3, 8, 8), np.float32))  # the model's input is 'x'
    with pytest.raises(CalibrationError, match=r"the model's inputs: \['x'\]"):
        cal.load_calibration(str(calib), [cal_spec("x")])
    out = tmp_path / "q.onnx"
    before = calib.read_bytes()
    r = cli(["quantize", tiny_path, "-o", out, "--calib", calib, "--target", "cpu"])
    _no_traces(r, out)
    assert "no array named after model input 'x'" in r.output and "'images'" in r.output
    assert calib.read_bytes() == before


def test_npz_extra_arrays_beside_the_inputs_are_fine(tmp_path):
    calib = tmp_path / "c.npz"
    x = np.ones((10, 3, 8, 8), np.float32)
    np.savez(calib, x=x, labels=np.arange(10))
    data = cal.load_calibration(str(calib), [cal_spec("x")])
    assert list(data.arrays) == ["x"] and np.array_equal(data.arrays["x"], x)
