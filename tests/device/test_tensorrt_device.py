"""Real TensorRT + CUDA: build a tiny engine with the installed TensorRT and run it.

Skipped wherever TensorRT or pycuda is missing (every development machine of this project). On a
Jetson or a GPU host: `pytest tests/device/test_tensorrt_device.py`.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt")
pytest.importorskip("pycuda.driver")
pytest.importorskip("pycuda.autoinit")  # fails to import without a CUDA device

pytestmark = pytest.mark.device

from edgekit.engine import build_engine, plan_build  # noqa: E402
from edgekit.runtime.tensorrt import TensorRTRunner  # noqa: E402
from edgekit.trt.manifest import read_manifest  # noqa: E402
from fakes.models import conv_model  # noqa: E402


def _device_for_installed_trt() -> str:
    major = int(trt.__version__.split(".")[0])
    return "x86-gpu" if major >= 10 else "agx-xavier"


def test_python_api_build_and_run_matches_onnxruntime(tmp_path, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    onnx_path = conv_model(tmp_path / "m.onnx", batch="N")
    device = _device_for_installed_trt()
    plan = plan_build(onnx_path, device, output=tmp_path / "m.engine", backend="python", precision="fp32",
                      trt_version=".".join(trt.__version__.split(".")[:2]), shapes=["input:2x4x16x16"],
                      min_shapes=["input:1x4x16x16"], max_shapes=["input:4x4x16x16"])
    res = build_engine(plan)
    assert res.engine_path.stat().st_size > 0 and plan.timing_cache.exists()
    assert read_manifest(res.engine_path)["tensorrt"] == trt.__version__
    x = np.random.default_rng(0).standard_normal((2, 4, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with TensorRTRunner(res.engine_path, device=device, shapes={"input": (2, 4, 16, 16)}, profile_layers=True) as r:
        out = r.infer({"input": x})["out"]
        t = r.last_timing()
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
    assert t["gpu_compute_ms"] > 0 and t["h2d_ms"] >= 0 and t["d2h_ms"] >= 0
    assert r.layer_times()


@pytest.mark.skipif(shutil.which("trtexec") is None, reason="trtexec not on PATH")
def test_trtexec_build_and_benchmark(tmp_path, monkeypatch):
    from edgekit.runtime.trtexec import TrtexecRunner

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    onnx_path = conv_model(tmp_path / "m.onnx")
    device = _device_for_installed_trt()
    plan = plan_build(onnx_path, device, output=tmp_path / "m.engine", backend="trtexec", precision="fp16",
                      trt_version=".".join(trt.__version__.split(".")[:2]))
    build_engine(plan)
    with TrtexecRunner(plan.output, device=device) as r:
        rep = r.benchmark(warmup_ms=50, duration_s=0.5, iterations=20)
    assert rep.iterations >= 20 and rep.phases["gpu_compute_ms"].median > 0
