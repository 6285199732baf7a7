"""TensorRTRunner against fake TensorRT (8.2 / 8.5 / 10.x / 11.x) and fake pycuda.

The fake engine runs the embedded ONNX model with ONNX Runtime on the fake device memory, so the
runner's data path (pinned host -> H2D -> enqueue -> D2H) must deliver the model's real outputs.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.engine import build_engine, plan_build
from edgekit.trt.manifest import manifest_path
from edgekit.errors import EngineMismatchError, InputError, ShapeError
from edgekit.runtime import BACKENDS, runner_class
from edgekit.runtime.tensorrt import TensorRTRunner
from fakes.fake_pycuda import FakeCuda
from fakes.fake_tensorrt import install, make_tensorrt
from fakes.models import conv_model


def _engine(tmp_path, version, device, batch="N", shapes=("input:2x4x16x16",), max_shapes=("input:4x4x16x16",)):
    onnx_path = conv_model(tmp_path / f"m{version}.onnx", batch=batch)
    fc = FakeCuda()
    trt = make_tensorrt(version, fc)
    plan = plan_build(onnx_path, device, output=tmp_path / f"m{version}.engine", backend="python",
                      trt_version=version, precision="auto" if version.startswith("11") else "fp16",
                      shapes=list(shapes) if batch == "N" else None,
                      min_shapes=["input:1x4x16x16"] if batch == "N" else None,
                      max_shapes=list(max_shapes) if batch == "N" else None)
    res = build_engine(plan, trt=trt, cuda=fc.as_module())
    return onnx_path, res.engine_path, trt, fc


def _reference(onnx_path, x):
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_backends_are_registered():
    assert BACKENDS["tensorrt"] == ("edgekit.runtime.tensorrt", "TensorRTRunner")
    assert runner_class("tensorrt") is TensorRTRunner


@pytest.mark.parametrize("version,device,api", [("8.2.1", "tx2", "execute_async_v2"),
                                                ("8.5.2", "xavier-nx", "execute_async_v3"),
                                                ("10.3.0", "agx-orin", "execute_async_v3"),
                                                ("11.4.0", "agx-orin", "execute_async_v3")])
def test_outputs_match_the_model_through_each_execution_api(tmp_path, version, device, api):
    onnx_path, engine, trt, fc = _engine(tmp_path, version, device)
    x = np.random.default_rng(1).standard_normal((2, 4, 16, 16)).astype(np.float32)
    with TensorRTRunner(engine, device=device, trt=trt, cuda=fc.as_module(), shapes={"input": (2, 4, 16, 16)}) as r:
        out = r.infer({"input": x})
        np.testing.assert_allclose(out["out"], _reference(onnx_path, x), rtol=1e-6, atol=1e-6)
        assert trt._fake_events[-1] == (api,)
        t = r.last_timing()
        assert set(t) == {"h2d_ms", "gpu_compute_ms", "d2h_ms"} and all(v >= 0 for v in t.values())
        # a new batch size re-shapes the context and re-allocates buffers
        x3 = np.random.default_rng(2).standard_normal((3, 4, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(r.infer({"input": x3})["out"], _reference(onnx_path, x3), rtol=1e-6, atol=1e-6)
        assert [s.name for s in r.input_specs()] == ["input"] and r.input_specs()[0].shape[0] is None
        assert r.describe()["execution"] == api
    # pinned host buffers and async copies were used
    assert "pagelocked_empty" in fc.calls and fc.calls.count("htod") >= 2 and "stream.synchronize" in fc.calls


@pytest.mark.parametrize("version,device,v2,v3", [("8.2.1", "tx2", True, False), ("8.5.2", "xavier-nx", True, True),
                                                ("10.3.0", "agx-orin", False, True)])
def test_fake_contexts_expose_exactly_their_generations_execution_api(tmp_path, version, device, v2, v3):
    _, engine, trt, _ = _engine(tmp_path, version, device)
    eng = trt.Runtime(trt.Logger()).deserialize_cuda_engine(engine.read_bytes())
    ctx = eng.create_execution_context()
    assert hasattr(ctx, "execute_async_v2") is v2 and hasattr(ctx, "execute_async_v3") is v3
    assert hasattr(eng, "num_bindings") is v2 and hasattr(eng, "num_io_tensors") is v3


def test_static_engine_and_per_layer_profiler(tmp_path):
    onnx_path, engine, trt, fc = _engine(tmp_path, "10.3.0", "agx-orin", batch=1)
    x = np.ones((1, 4, 16, 16), np.float32)
    with TensorRTRunner(engine, device="agx-orin", trt=trt, cuda=fc.as_module(), profile_layers=True) as r:
        r.infer({"input": x})
        r.infer({"input": x})
        layers = r.layer_times()
    names = {l["name"] for l in layers}
    assert names == {"conv1", "relu1", "out_identity"}
    assert all(l["calls"] == 2 for l in layers)
    assert sum(l["percentage"] for l in layers) == pytest.approx(100.0)


def test_manifest_mismatch_is_reported_before_tensorrt_deserialises(tmp_path):
    _, engine, _, _ = _engine(tmp_path, "8.5.2", "xavier-nx")
    fc = FakeCuda()
    trt10 = make_tensorrt("10.3.0", fc)
    with pytest.raises(EngineMismatchError) as e:
        TensorRTRunner(engine, trt=trt10, cuda=fc.as_module()).activate()
    assert "8.5.2" in e.value.message and "10.3.0" in e.value.message
    with pytest.raises(EngineMismatchError, match="xavier-nx"):
        TensorRTRunner(engine, device="agx-orin", trt=make_tensorrt("8.5.2", fc), cuda=fc.as_module()).activate()


def test_engine_without_manifest_that_tensorrt_rejects(tmp_path):
    _, engine, _, _ = _engine(tmp_path, "8.5.2", "xavier-nx")
    manifest_path(engine).unlink()
    fc = FakeCuda()
    with pytest.raises(EngineMismatchError, match="could not deserialize"):
        TensorRTRunner(engine, trt=make_tensorrt("10.3.0", fc), cuda=fc.as_module()).activate()


def test_bad_inputs(tmp_path):
    onnx_path, engine, trt, fc = _engine(tmp_path, "10.3.0", "agx-orin")
    with pytest.raises(InputError, match="ONNX model, not a TensorRT engine"):
        TensorRTRunner(onnx_path, trt=trt, cuda=fc.as_module()).activate()
    with pytest.raises(InputError, match="no such engine"):
        TensorRTRunner(tmp_path / "nope.engine", trt=trt, cuda=fc.as_module()).activate()
    with pytest.raises(ShapeError, match="dynamic"):  # dynamic batch and no shape given
        TensorRTRunner(engine, trt=trt, cuda=fc.as_module()).activate()
    with TensorRTRunner(engine, trt=trt, cuda=fc.as_module(), shapes={"input": (1, 4, 16, 16)}) as r:
        with pytest.raises(ShapeError, match="missing"):
            r.infer({})
        with pytest.raises(ShapeError, match="expects"):
            r.infer({"input": np.zeros((1, 3, 16, 16), np.float32)})


def test_cuda_graph_without_cuda_python_falls_back(tmp_path, monkeypatch):
    from edgekit.runtime import tensorrt as rt_mod

    monkeypatch.setattr(rt_mod._CudaGraph, "load_cudart", staticmethod(lambda: None))
    onnx_path, engine, trt, fc = _engine(tmp_path, "10.3.0", "agx-orin", batch=1)
    x = np.ones((1, 4, 16, 16), np.float32)
    with TensorRTRunner(engine, trt=trt, cuda=fc.as_module(), cuda_graph=True) as r:
        np.testing.assert_allclose(r.infer({"input": x})["out"], _reference(onnx_path, x), rtol=1e-6, atol=1e-6)
        assert not r.cuda_graph and any("CUDA graph disabled" in w for w in r.warnings)


def test_cuda_graph_is_captured_once_and_replayed(tmp_path):
    from fakes.fake_cudart import FakeCudart

    onnx_path, engine, trt, fc = _engine(tmp_path, "10.3.0", "agx-orin", batch=1)
    rt = FakeCudart(trt)
    rng = np.random.default_rng(3)
    with TensorRTRunner(engine, trt=trt, cuda=fc.as_module(), cuda_graph=True, cudart=rt) as r:
        for _ in range(3):
            x = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
            # a replayed graph must still read the new input and write the new output
            np.testing.assert_allclose(r.infer({"input": x})["out"], _reference(onnx_path, x), rtol=1e-6, atol=1e-6)
        assert r.cuda_graph
    # plain enqueue first, then one capture, then a launch per call
    assert rt.calls == ["begin", "end", "instantiate", "launch", "launch", "launch"]


def test_runner_imports_tensorrt_lazily(tmp_path, monkeypatch):
    onnx_path, engine, _, _ = _engine(tmp_path, "10.3.0", "agx-orin", batch=1)
    trt, fc = install(monkeypatch, "10.3.0")
    r = runner_class("tensorrt")(engine)
    with r:
        out = r.infer({"input": np.ones((1, 4, 16, 16), np.float32)})
    assert out["out"].shape == (1, 8, 16, 16)
    assert json.loads(manifest_path(engine).read_text())["tensorrt"] == "10.3.0"


def test_engine_from_another_gpu_is_refused_with_both_sms(tmp_path):
    onnx_path = conv_model(tmp_path / "m.onnx")
    xavier_gpu = FakeCuda(cc=(7, 2))
    trt = make_tensorrt("8.5.2", xavier_gpu)
    plan = plan_build(onnx_path, "xavier-nx", output=tmp_path / "m.engine", backend="python", precision="fp16")
    build_engine(plan, trt=trt, cuda=xavier_gpu.as_module())
    orin_gpu = FakeCuda(cc=(8, 7))
    with pytest.raises(EngineMismatchError) as e:
        TensorRTRunner(plan.output, trt=make_tensorrt("8.5.2", orin_gpu), cuda=orin_gpu.as_module()).activate()
    assert "SM 7.2" in e.value.message and "SM 8.7" in e.value.message
