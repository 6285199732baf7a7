"""The Python-API builder against test doubles of TensorRT 8.2 / 8.5 / 8.6 / 10.x / 11.x.

Each fake exposes only what that release's bindings have, so a call to a removed API
(``max_workspace_size`` on 10, ``BuilderFlag.INT8`` on 11, ``set_memory_pool_limit`` on 8.2, ...)
fails these tests. Nothing here ran on real TensorRT.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.engine import build_engine, plan_build
from edgekit.engine.python_api import code_path
from edgekit.trt.manifest import check_engine_compatible, manifest_path, read_manifest
from edgekit.devices import get_profile
from edgekit.errors import BuildError, CalibrationError, EngineMismatchError, UnsupportedError
from fakes.fake_pycuda import FakeCuda
from fakes.fake_tensorrt import make_tensorrt
from fakes.models import conv_model

GENERATIONS = [("8.0.1", "tx2"), ("8.2.1", "tx2"), ("8.5.2", "xavier-nx"), ("8.6.2", "agx-orin"), ("10.3.0", "agx-orin"),
               ("11.4.0", "agx-orin")]


def _fakes(version, device="agx-orin", **kw):
    fc = FakeCuda(cc=tuple(int(x) for x in get_profile(device).sm.split(".")))  # the board's own GPU
    return make_tensorrt(version, fc, **kw), fc


def _build(onnx, device, version, tmp_path, **kw):
    trt, fc = _fakes(version, device, num_dla_cores=kw.pop("num_dla_cores", 2))
    plan = plan_build(onnx, device, output=tmp_path / f"out-{version}.engine", backend="python",
                      trt_version=version, **kw)
    return build_engine(plan, trt=trt, cuda=fc.as_module()), trt, fc, plan


@pytest.mark.parametrize("version,device", GENERATIONS)
def test_each_generation_builds_through_its_own_api(tiny, tmp_path, version, device):
    res, trt, fc, plan = _build(tiny, device, version, tmp_path, precision="auto" if version.startswith("11") else "fp16")
    assert res.engine_path.exists() and res.engine_path.read_bytes()[:4] == b"FTRT"
    assert res.trt_version == version
    flags = trt._fake_events[0][1]
    if version.startswith("11"):
        assert "FP16" not in flags and plan.precision == "graph"
    else:
        assert "FP16" in flags
    man = json.loads(manifest_path(res.engine_path).read_text())
    assert man["tensorrt"] == version and man["device"] == plan.device
    assert man["onnx"]["sha256"] == plan.onnx_sha256 and man["gpu"]["sm"] == plan.sm
    assert man["jetpack"] and man["l4t"]
    assert man["flags"]["workspace_mib"] == plan.workspace_mib


def test_workspace_goes_through_the_generation_specific_api(tiny):
    trt82, _ = _fakes("8.2.1")
    cfg = trt82.Builder(trt82.Logger()).create_builder_config()
    code_path("8.2.1").set_workspace(cfg, trt82, 1 << 30)
    assert cfg.max_workspace_size == 1 << 30
    assert not hasattr(cfg, "set_memory_pool_limit")
    trt10, _ = _fakes("10.3.0")
    cfg10 = trt10.Builder(trt10.Logger()).create_builder_config()
    code_path("10.3.0").set_workspace(cfg10, trt10, 1 << 30)
    assert cfg10.pool_limits == {"WORKSPACE": 1 << 30}
    # the 8.2 path on a 10.x TensorRT fails, exactly as it would on the board
    with pytest.raises(AttributeError):
        code_path("8.2.1").set_workspace(cfg10, trt10, 1 << 30)
    # and the 8.4+ path on 8.2 too
    with pytest.raises(AttributeError):
        code_path("8.6.2").set_workspace(cfg, trt82, 1 << 30)


def test_network_flags_per_generation():
    trt82, _ = _fakes("8.2.1")
    assert code_path("8.2.1").network_flags(trt82) == 1 << int(trt82.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    trt10, _ = _fakes("10.3.0")
    assert code_path("10.3.0").network_flags(trt10) == 0
    trt11, _ = _fakes("11.4.0")
    assert not hasattr(trt11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert code_path("11.4.0").network_flags(trt11) == 0
    with pytest.raises(AttributeError):  # the 8.x path would touch the removed flag
        code_path("8.6.2").network_flags(trt11)
    # an implicit-batch network (what forgetting the flag gives on 8.x) is rejected by the parser
    net = trt82.Builder(trt82.Logger()).create_network(0)
    assert trt82.OnnxParser(net, trt82.Logger()).parse(b"") is False


def test_precision_flags_are_enum_members_not_raw_ints(tiny):
    trt11, _ = _fakes("11.4.0")
    trt10, _ = _fakes("10.3.0")
    assert not hasattr(trt11.BuilderFlag, "FP16") and not hasattr(trt11.BuilderFlag, "INT8")
    cfg = trt11.Builder(trt11.Logger()).create_builder_config()
    with pytest.raises(TypeError):  # a raw int remembered from 10.x is refused
        cfg.set_flag(int(trt10.BuilderFlag.SPARSE_WEIGHTS))
    assert int(trt10.BuilderFlag.SPARSE_WEIGHTS) != int(trt11.BuilderFlag.SPARSE_WEIGHTS)


def test_trt11_plan_cannot_be_built_with_precision_flags(tiny, tmp_path):
    # a plan made for 10.3 (FP16 flag) meeting an installed 11.4 must not silently drop the flag
    trt, fc = _fakes("11.4.0")
    plan = plan_build(tiny, "orin", output=tmp_path / "x.engine", backend="python", precision="fp16")
    with pytest.raises(UnsupportedError, match="strongly typed"):
        build_engine(plan, trt=trt, cuda=fc.as_module())
    assert not (tmp_path / "x.engine").exists()


def test_installed_version_differs_from_profile(tiny, tmp_path):
    trt, fc = _fakes("8.6.2")
    plan = plan_build(tiny, "orin", output=tmp_path / "x.engine", backend="python", precision="fp16")  # profile: 10.3
    res = build_engine(plan, trt=trt, cuda=fc.as_module())
    assert res.trt_version == "8.6.2" and any("TensorRT 8.6.2 is installed" in w for w in res.warnings)
    assert read_manifest(res.engine_path)["tensorrt"] == "8.6.2"
    # but an explicit --trt-version that is not installed is an error
    plan2 = plan_build(tiny, "orin", output=tmp_path / "y.engine", backend="python", trt_version="10.3")
    with pytest.raises(Exception, match="10.3 asked, but TensorRT 8.6.2 is installed"):
        build_engine(plan2, trt=trt, cuda=fc.as_module())


def test_dla_with_gpu_fallback_reports_the_layers_that_fell_back(tmp_path):
    m = conv_model(tmp_path / "m.onnx", extra_ops=("Softmax", "Transpose"))
    res, trt, _, _ = _build(m, "xavier-nx", "8.5.2", tmp_path, precision="fp16", dla_core=1, gpu_fallback=True)
    assert [(f["name"], f["type"]) for f in res.dla_fallback] == [
        ("softmax0", "SOFTMAX"), ("transpose1", "TRANSPOSE"), ("out_identity", "IDENTITY")]
    man = read_manifest(res.engine_path)
    assert man["flags"]["dla_core"] == 1 and len(man["dla_fallback"]) == 3
    assert res.to_dict()["dla"]["fell_back_to_gpu"][0]["name"] == "softmax0"


def test_dla_without_fallback_fails_with_tensorrts_error_and_leaves_nothing(tmp_path):
    m = conv_model(tmp_path / "m.onnx", extra_ops=("Softmax",))
    out = tmp_path / "out-8.5.2.engine"
    with pytest.raises(BuildError, match="Unsupported on DLA"):
        _build(m, "xavier-nx", "8.5.2", tmp_path, precision="fp16", dla_core=0)
    assert not out.exists() and not manifest_path(out).exists()


def test_dla_core_missing_on_the_actual_board(tiny, tmp_path):
    with pytest.raises(UnsupportedError, match="sees 1 DLA"):
        _build(tiny, "orin", "10.3.0", tmp_path, precision="fp16", dla_core=1, gpu_fallback=True, num_dla_cores=1)


def test_sparse_reports_eligible_and_picked_layers(tmp_path):
    sparse = conv_model(tmp_path / "s.onnx", sparse_24=True)
    res, trt, _, _ = _build(sparse, "orin", "10.3.0", tmp_path, precision="fp16")
    assert "SPARSE_WEIGHTS" in trt._fake_events[0][1]
    assert res.sparsity_eligible == ["conv1"] and res.sparsity_picked == ["conv1"]
    dense = conv_model(tmp_path / "d.onnx", sparse_24=False)
    res2, _, _, _ = _build(dense, "orin", "10.3.0", tmp_path, precision="fp16")
    assert res2.sparsity_eligible is None and any("no (Sparsity) lines" in w for w in res2.warnings)


def test_timing_cache_is_read_and_written_per_device_and_version(tiny, tmp_path):
    res, _, _, plan = _build(tiny, "orin", "10.3.0", tmp_path, precision="fp16")
    tc = plan.timing_cache
    assert tc.name == "agx-orin-trt10.3.cache" and tc.exists()
    first = tc.read_bytes()
    res2, _, _, _ = _build(tiny, "orin", "10.3.0", tmp_path, precision="fp16")
    assert tc.read_bytes() != first  # the fake's serialised cache grows with what it was given


def test_implicit_int8_calibration_feeds_device_buffers_and_writes_the_cache(tmp_path):
    m = conv_model(tmp_path / "m.onnx", batch="N")
    data = np.random.default_rng(0).standard_normal((10, 4, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", data)
    out = tmp_path / "o.engine"
    trt, fc = _fakes("8.5.2", "xavier-nx")
    plan = plan_build(m, "xavier-nx", output=out, backend="python", calib_data=tmp_path / "calib.npy",
                      shapes=["input:2x4x16x16"])
    assert plan.int8_mode == "implicit-calibrate"
    res = build_engine(plan, trt=trt, cuda=fc.as_module())
    assert ("calibrated", 5, 2) in trt._fake_events  # 10 samples in batches of 2
    assert fc.calls.count("htod") == 5
    cache = tmp_path / "o.calib"
    assert res.calibration_cache_written == str(cache)
    assert cache.read_text().startswith("TRT-8502-EntropyCalibration2")
    # the written cache is then accepted (same version) by a cache-only build ...
    trt2, fc2 = _fakes("8.5.2")
    plan2 = plan_build(m, "xavier-nx", output=tmp_path / "o2.engine", backend="python", calib_cache=cache,
                       shapes=["input:2x4x16x16"])
    build_engine(plan2, trt=trt2, cuda=fc2.as_module())
    assert trt2._fake_events[-1][0] == "calibration-cache-read"
    # ... and refused by another TensorRT version, before TensorRT sees it
    with pytest.raises(EngineMismatchError):
        plan_build(m, "orin", output=tmp_path / "o3.engine", calib_cache=cache, shapes=["input:2x4x16x16"])


def test_calibration_data_that_does_not_fit(tmp_path):
    m = conv_model(tmp_path / "m.onnx")
    np.save(tmp_path / "bad.npy", np.zeros((4, 3, 16, 16), np.float32))
    trt, fc = _fakes("8.5.2")
    plan = plan_build(m, "xavier-nx", output=tmp_path / "o.engine", backend="python", calib_data=tmp_path / "bad.npy")
    with pytest.raises(CalibrationError, match="shape"):
        build_engine(plan, trt=trt, cuda=fc.as_module())
    assert not (tmp_path / "o.engine").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    plan2 = plan_build(m, "xavier-nx", output=tmp_path / "o.engine", backend="python", calib_data=empty)
    with pytest.raises(CalibrationError, match="no .npy"):
        build_engine(plan2, trt=trt, cuda=fc.as_module())


def test_trt11_fake_has_no_calibrator():
    trt11, _ = _fakes("11.4.0")
    assert not hasattr(trt11, "IInt8EntropyCalibrator2")
    cfg = trt11.Builder(trt11.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        cfg.int8_calibrator = object()


def test_dynamic_input_without_profile_fails_in_tensorrt_terms(tmp_path):
    # bypass the planner's check to see the builder report TensorRT's own error text
    m = conv_model(tmp_path / "m.onnx", batch="N")
    trt, fc = _fakes("10.3.0")
    plan = plan_build(m, "orin", output=tmp_path / "o.engine", backend="python", precision="fp16",
                      shapes=["input:1x4x16x16"])
    plan.shapes = []
    with pytest.raises(BuildError, match="no optimization profile"):
        build_engine(plan, trt=trt, cuda=fc.as_module())


def test_engine_manifest_mismatch_names_both_sides(tiny, tmp_path):
    res, _, _, _ = _build(tiny, "xavier-nx", "8.5.2", tmp_path, precision="fp16")
    with pytest.raises(EngineMismatchError) as e:
        check_engine_compatible(res.engine_path, trt_version="10.3.0")
    assert "8.5.2" in str(e.value) and "10.3.0" in str(e.value)
    with pytest.raises(EngineMismatchError) as e2:
        check_engine_compatible(res.engine_path, trt_version="8.5.2", device="agx-orin")
    assert "xavier-nx" in str(e2.value) and "agx-orin" in str(e2.value)
    assert check_engine_compatible(res.engine_path, trt_version="8.5.1", device="xavier-nx")["device"] == "xavier-nx"


def test_building_on_a_gpu_other_than_the_profiles_warns(tiny, tmp_path):
    fc = FakeCuda(cc=(8, 7))
    trt = make_tensorrt("8.5.2", fc)
    plan = plan_build(tiny, "xavier-nx", output=tmp_path / "x.engine", backend="python", precision="fp16")
    res = build_engine(plan, trt=trt, cuda=fc.as_module())
    assert any("SM 8.7" in w and "7.2" in w for w in res.warnings)
    assert read_manifest(res.engine_path)["gpu"]["sm"] == "8.7"  # the manifest records the real builder GPU
