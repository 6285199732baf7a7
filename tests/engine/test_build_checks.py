"""The dry run refuses what the real build would fail on: an opset newer than the board's TensorRT
parser, and a Q/DQ model on a board without fast INT8 (TensorRT builds Q/DQ nodes only as INT8)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from fakes.models import conv_model


def _with_opset(path: Path, opset: int) -> Path:
    model = onnx.load(str(path))
    model.opset_import[0].version = opset
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def qdq18(tmp_path):
    return _with_opset(conv_model(tmp_path / "q18.onnx", qdq=True), 18)


@pytest.fixture
def float18(tmp_path):
    return _with_opset(conv_model(tmp_path / "f18.onnx"), 18)


def _one_line_error(r, *needles):
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output
    first = [l for l in r.output.splitlines() if l.startswith("error:")]
    assert len(first) == 1, r.output
    for n in needles:
        assert n in first[0], r.output


@pytest.mark.parametrize("dry", [True, False])
def test_opset_18_qdq_on_tx2_is_refused_dry_or_not(cli, fake_trtexec, tmp_path, qdq18, dry):
    argv_file = fake_trtexec(tmp_path / "never-read.log")
    before = qdq18.read_bytes()
    r = cli(["build", qdq18, "--device", "tx2", "-o", tmp_path / "m.engine"] + (["--dry-run"] if dry else []))
    _one_line_error(r, "opset 18", "13")
    assert "trtexec --onnx" not in r.output  # no plan printed
    assert not argv_file.exists()  # trtexec never ran
    assert not (tmp_path / "m.engine").exists() and qdq18.read_bytes() == before


def test_opset_cap_follows_the_trt_version(cli, float18):
    assert cli(["build", float18, "--device", "orin", "--dry-run"]).exit_code == 0  # 10.3: opset <= 20
    _one_line_error(cli(["build", float18, "--device", "orin", "--trt-version", "8.6", "--dry-run"]), "opset 18", "17")
    _one_line_error(cli(["build", float18, "--device", "tx2", "--dry-run"]), "opset 18", "13")


def test_force_turns_the_opset_refusal_into_a_warning(cli, float18):
    r = cli(["build", float18, "--device", "tx2", "--force", "--dry-run", "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    assert any("opset 18" in w and "13" in w for w in d["warnings"])
    assert d["plan"]["precision"] == "fp16"


def test_qdq_on_a_board_without_fast_int8_is_refused(cli, tmp_path):
    q13 = conv_model(tmp_path / "q13.onnx", qdq=True)
    _one_line_error(cli(["build", q13, "--device", "tx2", "--dry-run"]), "INT8 refused", "Q/DQ")
    r = cli(["build", q13, "--device", "tx2", "--force", "--dry-run", "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    assert d["plan"]["int8_mode"] == "explicit-qdq" and "--int8" in d["trtexec_command"]
    assert any("INT8" in w and "--force" in w for w in d["warnings"])


def test_qdq_model_gets_int8_where_the_default_is_fp16(cli, tmp_path):
    q13 = conv_model(tmp_path / "q13.onnx", qdq=True)
    d = cli(["build", q13, "--device", "x86-gpu", "--dry-run", "--json", "-"]).json()
    assert d["plan"]["int8"] is True and d["plan"]["int8_mode"] == "explicit-qdq"
    assert d["builder_settings"]["builder_flags"][:2] == ["FP16", "INT8"]


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_explicit_float_precision_on_a_qdq_model_is_refused(cli, tmp_path, precision):
    q13 = conv_model(tmp_path / "q13.onnx", qdq=True)
    _one_line_error(cli(["build", q13, "--device", "x86-gpu", "--precision", precision, "--dry-run"]),
                    f"--precision {precision}", "Q/DQ")


def test_float_model_on_tx2_still_builds_fp16(cli, tiny):
    d = cli(["build", tiny, "--device", "tx2", "--dry-run", "--json", "-"]).json()
    assert d["plan"]["precision"] == "fp16" and d["warnings"] == []
