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
from edgekit.quantize.cpu import stdout_to_stderr
from edgekit.quantize.ptq import quantize

ROOT = Path(__file__).resolve().parents[2]


def _tiny(dynamic: bool = True):
    """Conv-ReLU-GAP-Gemm on [N, 3, 8, 8] (dynamic batch by default)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
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
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(_tiny(), str(p))
    return p


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
    assert "Collecting tensor data" in r.stderr  # ORT's progress lines went to stderr
