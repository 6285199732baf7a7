"""`edgekit build --backend trtexec` end to end, with a fake `trtexec` on PATH replaying recorded logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.engine import build_engine, plan_build
from edgekit.trt.manifest import manifest_path
from edgekit.errors import BuildError, DependencyMissingError
from fakes.models import conv_model
from fixtures import recorded

FIX = recorded("trtexec")


def test_successful_build_writes_engine_and_manifest_from_trtexecs_output(cli, tiny, tmp_path, fake_trtexec):
    argv_file = fake_trtexec(FIX / "jetson-nano-jp461-trt8201-onnx-build-fp32.log")
    out = tmp_path / "m.engine"
    r = cli(["build", tiny, "--device", "tx2", "--backend", "trtexec", "-o", out, "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    assert out.read_bytes() == b"fake-engine-bytes"
    man = json.loads(manifest_path(out).read_text())
    # the manifest records what trtexec itself reported, not only what the profile expected
    assert man["tensorrt"] == "8.2.1" and man["gpu"] == {"name": "NVIDIA Tegra X1", "sm": "5.3"}
    assert man["device"] == "tx2" and man["builder"] == "trtexec" and man["jetpack"] == "4.6.6"
    ran = argv_file.read_text().split()
    assert "--fp16" in ran and "--workspace=1024" in ran and "--buildOnly" in ran
    # trtexec wrote to a temporary name that was renamed into place
    saved = [a for a in ran if a.startswith("--saveEngine=")][0].split("=", 1)[1]
    assert saved != str(out) and Path(saved).parent == out.parent and not Path(saved).exists()
    assert d["engine"] == str(out) and d["backend"] == "trtexec"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.engine")) == []


def test_failed_build_reports_trtexecs_own_error_lines_and_leaves_nothing(cli, tiny, tmp_path, fake_trtexec):
    fake_trtexec(FIX / "desktop-trt8601-FAILED-qdq-onnx-parse.log", rc=1)
    out = tmp_path / "m.engine"
    r = cli(["build", tiny, "--device", "orin", "--trt-version", "8.6", "--backend", "trtexec", "-o", out])
    assert r.exit_code == 1
    assert "Scale coefficients must all be positive" in r.output
    assert "Failed to parse onnx file" in r.output
    assert not out.exists() and not manifest_path(out).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.engine")] == []


def test_failed_with_unknown_options(tiny, tmp_path, fake_trtexec):
    fake_trtexec(FIX / "jetson-jp6-trt100300-FAILED-unknown-option.log", rc=1)
    plan = plan_build(tiny, "orin", output=tmp_path / "o.engine", backend="trtexec")
    with pytest.raises(BuildError) as e:
        build_engine(plan)
    assert "Unknown option: --explicitBatch" in e.value.message and "exit code 1" in e.value.message


def test_failed_status_with_exit_code_zero_is_still_a_failure(tiny, tmp_path, fake_trtexec):
    fake_trtexec(FIX / "desktop-trt8601-FAILED-qdq-onnx-parse.log", rc=0)
    plan = plan_build(tiny, "orin", output=tmp_path / "o.engine", backend="trtexec", trt_version="8.6")
    with pytest.raises(BuildError, match="Engine set up failed"):
        build_engine(plan)
    assert not (tmp_path / "o.engine").exists()


def test_dla_fallback_and_sparsity_come_from_the_build_log(tmp_path, fake_trtexec):
    log = tmp_path / "build.log"
    log.write_text((FIX / "dla-unsupported-layer-warnings-fragment.log").read_text()
                   + (FIX / "sparsity-devguide-example.log").read_text()
                   + "&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec --onnx=x\n")
    fake_trtexec(log)
    qdq = conv_model(tmp_path / "q.onnx", qdq=True)
    plan = plan_build(qdq, "orin", output=tmp_path / "o.engine", backend="trtexec", dla_core=0, gpu_fallback=True)
    res = build_engine(plan)
    assert len(res.dla_fallback) == 9 and res.dla_fallback[0]["name"] == "/model.24/Constant_1_output_0"
    assert res.sparsity_eligible == ["conv1", "conv2", "conv3"] and res.sparsity_picked == ["conv2", "conv3"]
    man = json.loads(manifest_path(tmp_path / "o.engine").read_text())
    assert man["sparsity"]["picked"] == ["conv2", "conv3"] and len(man["dla_fallback"]) == 9


def test_trtexec_version_differs_from_the_profile(tiny, tmp_path, fake_trtexec):
    fake_trtexec(FIX / "jetson-nano-jp461-trt8201-onnx-build-fp32.log")
    plan = plan_build(tiny, "orin", output=tmp_path / "o.engine", backend="trtexec")  # profile: 10.3
    res = build_engine(plan)
    assert res.trt_version == "8.2.1" and any("trtexec is TensorRT 8.2.1" in w for w in res.warnings)


def test_no_trtexec_anywhere(tiny, tmp_path, monkeypatch):
    import edgekit.trt.trtexec as tx

    monkeypatch.setattr(tx, "DEFAULT_TRTEXEC", str(tmp_path / "none" / "trtexec"))
    plan = plan_build(tiny, "tx2", output=tmp_path / "o.engine", backend="trtexec")
    with pytest.raises(DependencyMissingError, match="trtexec"):
        build_engine(plan)


def test_auto_backend_prefers_trtexec_on_tx2(tiny, tmp_path, fake_trtexec):
    fake_trtexec(FIX / "jetson-nano-jp461-trt8201-onnx-build-fp32.log")
    assert plan_build(tiny, "tx2").backend == "trtexec"


def test_human_output_lists_fallback_and_sparse_layers(cli, tmp_path, fake_trtexec):
    log = tmp_path / "build.log"
    log.write_text((FIX / "dla-unsupported-layer-warnings-fragment.log").read_text()
                   + (FIX / "sparsity-devguide-example.log").read_text()
                   + "&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec --onnx=x\n")
    fake_trtexec(log)
    qdq = conv_model(tmp_path / "q.onnx", qdq=True)
    out = tmp_path / "q.engine"
    r = cli(["build", qdq, "--device", "orin", "--dla", "0", "--gpu-fallback", "--backend", "trtexec", "-o", out])
    assert r.exit_code == 0, r.output
    assert "9 layer(s) fell back to the GPU" in r.output and "(Unnamed Layer* 277) [Shuffle]" in r.output
    assert "picked ['conv2', 'conv3']" in r.output
    assert out.exists() and manifest_path(out).exists()
