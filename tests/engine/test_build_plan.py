"""Device-profile defaults, explicit overrides and input validation of `edgekit build`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgekit.engine import plan_build
from edgekit.engine.plan import default_timing_cache
from edgekit.errors import (CalibrationError, EngineMismatchError, InputError, ModelLoadError, ShapeError,
                            UnknownDeviceError, UnsupportedError)
from fakes.models import conv_model, two_input_model


def _cache(path: Path, code: int) -> Path:
    path.write_text(f"TRT-{code}-EntropyCalibration2\ninput: 3c010a14\n")
    return path


# ---- defaults from the profile ----

def test_tx2_defaults_to_fp16_and_refuses_int8_with_the_reason(tiny, tmp_path):
    plan = plan_build(tiny, "tx2")
    assert plan.precision == "fp16" and plan.fp16 and not plan.int8
    assert plan.trt_version == "8.2.1" and plan.generation == "8.0-8.3"
    assert not plan.sparse and plan.dla_core is None
    cache = _cache(tmp_path / "c.cache", 8201)
    with pytest.raises(UnsupportedError, match="sm_62") as e:
        plan_build(tiny, "tx2", precision="int8", calib_cache=cache)
    assert "--force" in e.value.hint
    forced = plan_build(tiny, "tx2", precision="int8", calib_cache=cache, force=True)
    assert forced.int8 and forced.int8_mode == "implicit-cache"
    assert any("no fast INT8" in w for w in forced.warnings)


def test_xavier_and_orin_default_to_int8_when_the_model_can_do_it(tmp_path):
    qdq = conv_model(tmp_path / "q.onnx", qdq=True)
    x = plan_build(qdq, "xavier-nx")
    assert x.precision == "int8" and x.int8_mode == "explicit-qdq" and not x.sparse
    o = plan_build(qdq, "orin")
    assert o.device == "agx-orin" and o.int8 and o.sparse  # Orin: INT8 + 2:4 sparse
    nano = plan_build(qdq, "orin-nano")
    assert nano.sparse and nano.int8
    with pytest.raises(UnsupportedError, match="no DLA"):
        plan_build(qdq, "orin-nano", dla_core=0)
    assert plan_build(qdq, "orin", dla_core=1, gpu_fallback=True).dla_core == 1


def test_int8_default_without_qdq_or_calibration_falls_back_to_fp16_with_a_warning(tiny):
    plan = plan_build(tiny, "agx-xavier")
    assert plan.precision == "fp16" and not plan.int8
    assert any("no Q/DQ nodes" in w for w in plan.warnings)
    with pytest.raises(CalibrationError, match="QDQ model"):
        plan_build(tiny, "agx-xavier", precision="int8")


def test_int8_routes(tiny, tmp_path):
    cache = _cache(tmp_path / "c.cache", 8502)
    assert plan_build(tiny, "xavier-nx", calib_cache=cache).int8_mode == "implicit-cache"
    data = tmp_path / "calib.npy"
    data.write_bytes(b"")
    assert plan_build(tiny, "xavier-nx", calib_data=data, backend="python").int8_mode == "implicit-calibrate"
    # a cache from another TensorRT version is refused, naming both versions
    other = _cache(tmp_path / "old.cache", 8201)
    with pytest.raises(EngineMismatchError) as e:
        plan_build(tiny, "xavier-nx", calib_cache=other)
    assert "8.2.1" in str(e.value) and "8.5" in str(e.value)
    # QDQ model + cache: the graph's scales win
    qdq = conv_model(tmp_path / "q.onnx", qdq=True)
    p = plan_build(qdq, "xavier-nx", calib_cache=cache)
    assert p.int8_mode == "explicit-qdq" and p.calib_cache is None and any("ignored" in w for w in p.warnings)


def test_trt11_is_strongly_typed(tiny, tmp_path):
    qdq = conv_model(tmp_path / "q.onnx", qdq=True)
    p = plan_build(qdq, "orin", trt_version="11.4")
    assert p.precision == "graph" and not p.fp16 and not p.int8 and p.int8_mode == "explicit-qdq"
    with pytest.raises(UnsupportedError, match="no implicit INT8"):
        plan_build(tiny, "orin", trt_version="11.4", calib_cache=_cache(tmp_path / "c", 8502))
    with pytest.raises(UnsupportedError, match="QDQ"):
        plan_build(tiny, "orin", trt_version="11.4", precision="int8")
    p16 = plan_build(tiny, "orin", trt_version="11.4", precision="fp16")
    assert any("strongly typed" in w for w in p16.warnings)


def test_explicit_flags_that_contradict_the_profile_warn(tiny):
    p = plan_build(tiny, "orin", precision="fp32")
    assert p.precision == "fp32" and any("overrides" in w for w in p.warnings)
    s = plan_build(tiny, "xavier-nx", precision="fp16", sparse=True)
    assert s.sparse and any("no sparse tensor cores" in w for w in s.warnings)
    assert not plan_build(tiny, "orin", sparse=False, precision="fp16").sparse


def test_timing_cache_is_per_device_and_version(tiny, tmp_path):
    a = plan_build(tiny, "orin")
    b = plan_build(tiny, "orin", trt_version="8.6")
    c = plan_build(tiny, "xavier-nx")
    assert a.timing_cache == tmp_path / "cache" / "timing" / "agx-orin-trt10.3.cache"
    assert b.timing_cache.name == "agx-orin-trt8.6.cache"
    assert c.timing_cache.name == "xavier-nx-trt8.5.cache"
    assert default_timing_cache("tx2", "8.2.1").name == "tx2-trt8.2.cache"


def test_plan_records_the_onnx_hash_and_leaves_the_input_alone(tiny):
    before = tiny.read_bytes()
    p = plan_build(tiny, "orin")
    assert p.onnx_sha256 == hashlib.sha256(before).hexdigest()
    assert tiny.read_bytes() == before
    assert p.output == tiny.with_name("tiny.agx-orin.engine")


# ---- bad input ----

@pytest.mark.parametrize("kwargs,err,match", [
    (dict(device="nosuchboard"), UnknownDeviceError, "unknown device"),
    (dict(device="orin", dla_core=2), InputError, "out of range"),
    (dict(device="orin", dla_core=-1), InputError, "out of range"),
    (dict(device="tx2", dla_core=0), UnsupportedError, "no DLA"),
    (dict(device="orin", gpu_fallback=True), InputError, "only applies with --dla"),
    (dict(device="orin", dla_core=0, precision="fp32"), UnsupportedError, "FP16 or INT8"),
    (dict(device="orin", dla_core=0, trt_version="11.0"), UnsupportedError, "no DLA support"),
    (dict(device="orin", workspace_mib=0), InputError, "positive"),
    (dict(device="orin-nano", workspace_mib=10 ** 6), InputError, "exceeds"),
    (dict(device="cpu"), UnsupportedError, "no TensorRT"),
    (dict(device="orin", precision="fp64"), InputError, "unknown precision"),
    (dict(device="orin", trt_version="7.1"), InputError, "not supported"),
    (dict(device="orin", shapes=["nope:1x4x16x16"]), ShapeError, "not an input"),
    (dict(device="orin", shapes=["input:1x4x16"]), ShapeError, "rank"),
    (dict(device="orin", shapes=["input:2x4x16x16"]), ShapeError, "fixed to 1"),
    (dict(device="orin", shapes=["input:1x4x16x16"], min_shapes=["input"]), ShapeError, "NAME:DIMS"),
    (dict(device="orin", min_shapes=["input:1x4x16x16"]), ShapeError, "need --shapes"),
])
def test_bad_requests(tiny, kwargs, err, match):
    device = kwargs.pop("device")
    with pytest.raises(err, match=match):
        plan_build(tiny, device, **kwargs)


def test_dynamic_shapes_need_a_profile_and_min_opt_max_order(tmp_path):
    dyn = conv_model(tmp_path / "dyn.onnx", batch="N")
    # only the batch axis dynamic and no --shapes: built for batch 1, as trtexec does, with a warning
    p1 = plan_build(dyn, "orin")
    assert (p1.shapes[0].min, p1.shapes[0].opt, p1.shapes[0].max) == ((1, 4, 16, 16),) * 3
    assert any("dynamic batch axis" in w for w in p1.warnings)
    # a dynamic spatial axis cannot be guessed
    import onnx

    m = onnx.load(str(dyn))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param = "H"
    dims[3].dim_param = "W"
    spatial = tmp_path / "spatial.onnx"
    onnx.save(m, str(spatial))
    with pytest.raises(ShapeError, match="dynamic"):
        plan_build(spatial, "orin")
    with pytest.raises(ShapeError, match="min <= opt <= max"):
        plan_build(dyn, "orin", shapes=["input:4x4x16x16"], min_shapes=["input:8x4x16x16"], max_shapes=["input:16x4x16x16"])
    with pytest.raises(ShapeError, match="min <= opt <= max"):
        plan_build(dyn, "orin", shapes=["input:4x4x16x16"], max_shapes=["input:2x4x16x16"])
    p = plan_build(dyn, "orin", shapes=["input:4x4x16x16"], min_shapes=["input:1x4x16x16"], max_shapes=["input:8x4x16x16"])
    assert (p.shapes[0].min, p.shapes[0].opt, p.shapes[0].max) == ((1, 4, 16, 16), (4, 4, 16, 16), (8, 4, 16, 16))
    two = two_input_model(tmp_path / "two.onnx")
    p2 = plan_build(two, "orin", shapes=["a:2x8,b:2x8"])
    assert [s.name for s in p2.shapes] == ["a", "b"]
    with pytest.raises(ShapeError, match="twice"):
        plan_build(two, "orin", shapes=["a:2x8", "a:3x8", "b:2x8"])


def test_non_onnx_and_broken_inputs(tmp_path):
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="not an .onnx file"):
        plan_build(txt, "orin")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelLoadError):
        plan_build(junk, "orin")
    with pytest.raises(ModelLoadError, match="no such file"):
        plan_build(tmp_path / "missing.onnx", "orin")


def test_output_may_not_overwrite_the_input(tiny):
    with pytest.raises(InputError, match="overwrite"):
        plan_build(tiny, "orin", output=tiny)
    with pytest.raises(InputError, match="ends in .onnx"):
        plan_build(tiny, "orin", output=tiny.with_name("other.onnx"))


def test_trtexec_backend_cannot_calibrate_from_data(tiny, tmp_path):
    data = tmp_path / "calib.npy"
    data.write_bytes(b"")
    with pytest.raises(UnsupportedError, match="trtexec cannot calibrate"):
        plan_build(tiny, "xavier-nx", calib_data=data, backend="trtexec")


# ---- CLI ----

def test_cli_bad_input_exits_nonzero_and_writes_nothing(cli, tiny, tmp_path):
    out = tmp_path / "o.engine"
    before = tiny.read_bytes()
    for args in (["--device", "orin", "--dla", "5"], ["--device", "tx2", "--dla", "0"], ["--device", "orinx"],
                 ["--device", "orin", "--shapes", "bogus:1x2"], ["--device", "tx2", "--precision", "int8"]):
        r = cli(["build", tiny, "-o", out, *args])
        assert r.exit_code == 1, (args, r.output)
        assert "error:" in r.output
        assert not out.exists() and not Path(str(out) + ".json").exists()
    assert tiny.read_bytes() == before
    r = cli(["build", tmp_path / "nope.onnx", "--device", "orin", "--json", "-"])
    assert r.exit_code == 1 and r.stdout and '"ModelLoadError"' in r.stdout


def test_cli_without_tensorrt_or_trtexec_says_how_to_get_them(cli, tiny, tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:  # pragma: no cover - only on a board
        pytest.skip("TensorRT is installed here")
    out = tmp_path / "o.engine"
    r = cli(["build", tiny, "--device", "orin", "-o", out])
    assert r.exit_code == 1 and "tensorrt" in r.output.lower() and "--dry-run" in r.output
    assert not out.exists()


def test_calib_cache_and_data_together(tiny, tmp_path):
    import numpy as np

    data = tmp_path / "calib.npy"
    np.save(data, np.zeros((2, 4, 16, 16), np.float32))
    new_cache = tmp_path / "new.cache"
    p = plan_build(tiny, "xavier-nx", calib_data=data, calib_cache=new_cache, backend="python")
    assert p.int8_mode == "implicit-calibrate" and p.calib_cache == new_cache  # written there after calibration
    _cache(new_cache, 8502)
    p2 = plan_build(tiny, "xavier-nx", calib_data=data, calib_cache=new_cache, backend="python")
    assert p2.int8_mode == "implicit-cache" and p2.calib_data is None and any("reused" in w for w in p2.warnings)
    with pytest.raises(InputError, match="does not exist"):
        plan_build(tiny, "xavier-nx", calib_cache=tmp_path / "missing.cache")
    with pytest.raises(InputError, match="does not exist"):
        plan_build(tiny, "xavier-nx", calib_data=tmp_path / "missing.npy")
