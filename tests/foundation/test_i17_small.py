"""Issue 17, small defects: incomplete models, the profiles folder, wording, help text, plot labels."""

from __future__ import annotations

import hashlib

import onnx
import pytest

from edgekit.errors import InputError
from edgekit.graph.view import check_inputs_defined


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def broken_onnx(tmp_path, make_tiny):
    """The tiny model with its Conv bias initializer lost."""
    m = make_tiny()
    del m.graph.initializer[1]
    path = tmp_path / "broken.onnx"
    onnx.save(m, str(path))
    return path


def test_check_inputs_defined_names_the_missing_tensor(make_tiny):
    check_inputs_defined(make_tiny())
    m = make_tiny()
    del m.graph.initializer[1]
    with pytest.raises(InputError, match="reads 'b'.*incomplete"):
        check_inputs_defined(m)


@pytest.mark.parametrize("args", [
    ["deploy", "{m}", "--device", "agx-orin", "-o", "{d}/bundle"],
    ["prune", "{m}", "-o", "{d}/p.onnx", "--ratio", "0.3"],
    ["quantize", "{m}", "-o", "{d}/q.onnx", "--calib", "synthetic", "--target", "cpu"],
    ["quantize", "{m}", "-o", "{d}/q.onnx", "--calib", "synthetic"],
], ids=["deploy", "prune", "quantize-cpu", "quantize-trt"])
def test_incomplete_model_refused(cli, broken_onnx, tmp_path, args):
    before = _sha(broken_onnx)
    r = cli([a.format(m=broken_onnx, d=tmp_path) for a in args])
    assert r.exit_code == 1, r.output
    assert "incomplete" in r.output and "Traceback" not in r.output
    assert _sha(broken_onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_profiles_dir_that_holds_no_profiles_is_an_error(cli, tmp_path, folder):
    (tmp_path / "empty").mkdir()
    r = cli(["devices"], env={"EDGEKIT_PROFILES_DIR": str(tmp_path / folder)})
    assert r.exit_code == 1, r.output
    assert "profiles folder" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("typed, meant", [("orin-nan", "orin-nano"), ("jetson-oirn-nano", "orin-nano"), ("orn", "orin"),
                                          ("xavir", "xavier")])
def test_device_suggestion_by_similarity(cli, typed, meant):
    r = cli(["devices", "show", typed])
    assert r.exit_code == 1
    assert f"did you mean '{meant}'?" in r.output


def test_vendor_prefix_resolves():
    from edgekit.devices import get_profile

    assert get_profile("jetson-agx-orin").name == "agx-orin"
    assert get_profile("nvidia-jetson-orin-nx").name == "orin-nx"


def test_devices_show_lists_max_opset_once(cli):
    r = cli(["devices", "show", "tx2"])
    assert r.exit_code == 0
    assert r.output.count("max_onnx_opset") == 1


def test_deploy_title_does_not_repeat_bundle(cli, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli(["deploy", tiny_onnx, "--device", "agx-orin", "-o", "bundle"])
    assert r.exit_code == 0, r.output
    assert "bundle bundle" not in r.output and "bundle/ for agx-orin" in r.output


def test_deploy_int8_hint_names_deploy_flags(cli, tiny_onnx, tmp_path):
    r = cli(["deploy", tiny_onnx, "--device", "agx-orin", "--precision", "int8", "-o", tmp_path / "b"])
    assert r.exit_code == 1
    assert "--calib-cache" in r.output
    assert "--calib " not in r.output.replace("--calib-cache", "") and "--calib\n" not in r.output
    assert not (tmp_path / "b").exists()


def test_deploy_fp16_fallback_warning_names_deploy_flags(cli, tiny_onnx, tmp_path):
    r = cli(["deploy", tiny_onnx, "--device", "agx-orin", "-o", tmp_path / "b"])
    assert r.exit_code == 0
    line = next(ln for ln in r.output.splitlines() if "defaults to INT8" in ln)
    assert "--calib-cache" in line and "--calib " not in line


def test_deploy_cache_version_error_names_users_file(cli, tiny_onnx, tmp_path):
    cache = tmp_path / "old.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nx: 3c000000\n")
    r = cli(["deploy", tiny_onnx, "--device", "agx-orin", "--precision", "int8", "--calib-cache", cache,
             "-o", tmp_path / "b"])
    assert r.exit_code == 1
    assert str(cache) in r.output and ".tmp" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.cache", "tiny.onnx"]


COMMANDS = ["export", "prune", "quantize", "build", "profile", "deploy", "devices", "doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_bool_type_on_flags(cli, command):
    r = cli([command, "--help"])
    assert r.exit_code == 0
    assert "<bool>" not in r.output


def test_flag_options_keep_their_value_types(cli):
    r = cli(["prune", "--help"])
    assert "<float>" in r.output and "<int>" in r.output


def test_prune_help_has_examples_and_every_criterion(cli):
    from edgekit.cli.prune import _BUILTIN_CRITERIA
    from edgekit.prune import criteria

    assert set(_BUILTIN_CRITERIA) == set(criteria.names())
    r = cli(["prune", "--help"], env={"COLUMNS": "300"})
    assert r.exit_code == 0
    assert "Examples:" in r.output and "edgekit prune " in r.output
    for name in criteria.names():
        assert name in r.output, name


def test_plot_labels_the_p99_lines(cli, tiny_onnx, tiny_static_onnx, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "p.svg"
    r = cli(["profile", tiny_onnx, tiny_static_onnx, "--device", "cpu", "--warmup-ms", "5", "--duration-s", "0.1",
             "--iterations", "10", "--threads", "1", "--plot", plot])
    assert r.exit_code == 0, r.output
    svg = plot.read_text()  # matplotlib keeps each text as an SVG comment
    for name in ("tiny.onnx", "tiny_static.onnx"):
        assert f"{name}: p99 " in svg and f"{name}: median " in svg
