"""Pipeline composition through the CLI (`python -m edgekit`, subprocesses): each stage's output is a
valid input to every later stage and to itself. export (both exporters) -> prune -> prune ->
quantize -> prune, quantize -> inspect qdq -> build --dry-run, quantize -> deploy -> deploy --verify.
Every step: the expected exit code, no traceback, outputs pass onnx.checker, and the working folder
holds exactly the files the steps asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]

# A small residual conv net: 32 channels so that the layers stay quantizable after two prunes.
TINYNET = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
            self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
            self.fc = nn.Linear(32, 5)

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.b2(self.c2(y)) + y)
            return self.fc(y.mean((2, 3)))


    def build():
        torch.manual_seed(0)
        return Net().eval()
""")


def ek(args: List[str], cwd: Path, rc: int = 0) -> subprocess.CompletedProcess:
    """Run ``python -m edgekit ARGS`` in ``cwd``; assert the exit code and that no traceback shows."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{cwd}", OMP_NUM_THREADS="1", EDGEKIT_DEBUG="0",
               COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    shown = proc.stdout + proc.stderr
    assert "Traceback" not in shown, f"edgekit {' '.join(args)}:\n{shown[-3000:]}"
    assert proc.returncode == rc, f"edgekit {' '.join(args)} -> {proc.returncode}:\n{shown[-3000:]}"
    return proc


def checked(path: Path) -> onnx.ModelProto:
    """Load ``path`` and run the full onnx.checker on it."""
    onnx.checker.check_model(str(path), full_check=True)
    return onnx.load(str(path))


def n_params(model: onnx.ModelProto) -> int:
    return sum(int(_prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def qdq_count(model: onnx.ModelProto) -> int:
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def listing(folder: Path) -> set:
    return {p.name for p in folder.iterdir() if p.name != "__pycache__"}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_prune_quantize_build_deploy_chain(tmp_path, exporter):
    (tmp_path / "tinynet.py").write_text(TINYNET)
    expected = {"tinynet.py"}

    ek(["export", "tinynet:build", "-o", "m.onnx", "--input-shape", "1x3x16x16", "--exporter", exporter], tmp_path)
    expected.add("m.onnx")
    base = checked(tmp_path / "m.onnx")

    # prune, then prune its output again (iterative pruning)
    r1 = json.loads(ek(["prune", "m.onnx", "-o", "p.onnx", "--ratio", "0.25", "--json", "-"], tmp_path).stdout)
    r2 = json.loads(ek(["prune", "p.onnx", "-o", "pp.onnx", "--ratio", "0.2", "--json", "-"], tmp_path).stdout)
    expected |= {"p.onnx", "pp.onnx"}
    p, pp = checked(tmp_path / "p.onnx"), checked(tmp_path / "pp.onnx")
    assert n_params(base) > n_params(p) > n_params(pp)
    assert r1["params_after"] < r1["params_before"] and r2["params_after"] < r2["params_before"]
    assert r2["params_before"] == r1["params_after"]

    # prune -> quantize (TensorRT Q/DQ + calibration cache)
    ek(["quantize", "pp.onnx", "-o", "q.onnx", "--target", "tensorrt", "--calib", "synthetic", "--samples", "8"],
       tmp_path)
    expected |= {"q.onnx", "q.calib"}
    q = checked(tmp_path / "q.onnx")
    assert qdq_count(q) > 0 and (tmp_path / "q.calib").stat().st_size > 0

    # quantize -> quantize is refused with one line, and writes nothing
    bad = ek(["quantize", "q.onnx", "-o", "qq.onnx", "--calib", "synthetic", "--samples", "8"], tmp_path, rc=1)
    assert "already quantized" in bad.stderr

    # prune -> quantize -> prune: the Q/DQ model prunes and keeps its Q/DQ nodes
    ek(["prune", "q.onnx", "-o", "qp.onnx", "--ratio", "0.2"], tmp_path)
    expected.add("qp.onnx")
    qp = checked(tmp_path / "qp.onnx")
    assert qdq_count(qp) > 0 and n_params(qp) < n_params(q)

    # quantize -> inspect qdq -> build --dry-run (read-only: nothing written)
    for model in ("q.onnx", "qp.onnx"):
        ek(["inspect", "qdq", model], tmp_path)
        dry = ek(["build", model, "--dry-run", "--device", "orin"], tmp_path)
        assert "trtexec" in dry.stdout and "--int8" in dry.stdout
    ek(["build", "pp.onnx", "--dry-run", "--device", "orin"], tmp_path)

    # quantize -> deploy -> deploy --verify
    bundle = tmp_path / "bundle"
    ek(["deploy", "q.onnx", "--device", "orin", "-o", str(bundle), "--calib-cache", "q.calib"], tmp_path)
    expected.add("bundle")
    ek(["deploy", str(bundle), "--verify"], tmp_path)
    files = listing(bundle)
    assert {"manifest.json", "run.sh"} <= files
    shipped = [f for f in files if f.endswith(".onnx")]
    assert shipped and all(qdq_count(checked(bundle / f)) > 0 for f in shipped)

    assert listing(tmp_path) == expected
