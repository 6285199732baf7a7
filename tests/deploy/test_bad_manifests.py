"""Damaged or hand-edited board files give a one-line error, never a traceback: a bundle manifest
with a null / string file entry or that is a list, an engine manifest with "gpu": "sm87", a device
profile with dla_cores = "two" (and other wrongly typed fields)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.deploy import create_bundle
from edgekit.trt.manifest import check_engine_compatible, write_manifest
from fakes.models import conv_model
from fakes.pytest_fixtures import fake_trtexec  # noqa: F401  (pytest fixture)
from fixtures import recorded

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    errors = [l for l in r.output.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, r.output
    for n in needles:
        assert n in errors[0], r.output


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("b")
    create_bundle(conv_model(tmp / "m.onnx"), "orin", tmp / "bundle", recipe="none")
    return tmp / "bundle"


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["files"].update({next(iter(m["files"])): None}), "null"),
    (lambda m: m["files"].update({next(iter(m["files"])): "abc123"}), '"abc123"'),
    (lambda m: m["files"].update({next(iter(m["files"])): {"sha256": "ab"}}), "sha256"),
    (lambda m: [m], "not an edgekit bundle manifest"),
    (lambda m: "just text", "not an edgekit bundle manifest"),
])
def test_verify_a_damaged_bundle_manifest(cli, bundle, tmp_path, edit, needle):
    b = tmp_path / "bundle"
    shutil.copytree(bundle, b)
    man = json.loads((b / "manifest.json").read_text())
    changed = edit(man)
    (b / "manifest.json").write_text(json.dumps(man if changed is None else changed))
    before = (b / "manifest.json").read_bytes()
    for args in ([], ["--json", "-"]):
        _one_line_error(cli(["deploy", b, "--verify"] + args), "manifest.json", needle)
    assert (b / "manifest.json").read_bytes() == before


def test_an_intact_bundle_still_verifies(cli, bundle):
    r = cli(["deploy", bundle, "--verify", "--json", "-"])
    assert r.exit_code == 0 and r.json()["verify"]["ok"] is True, r.output


@pytest.mark.parametrize("gpu,field", [("sm87", "'gpu'"), ({"sm": "sm87"}, "gpu.sm"), ({"sm": [8, 7]}, "gpu.sm")])
def test_engine_manifest_with_a_malformed_gpu(cli, tmp_path, fake_trtexec, gpu, field):  # noqa: F811
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    write_manifest(engine, {"tensorrt": "10.3.0", "device": "orin-nano", "gpu": gpu,
                            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]})
    fake_trtexec(recorded("trtexec") / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log")
    r = cli(["profile", engine, "--device", "orin-nano", "--backend", "trtexec", "--duration-s", "1"])
    _one_line_error(r, "m.engine.json", field)
    from edgekit.errors import InputError

    with pytest.raises(InputError, match=field.strip("'")):
        check_engine_compatible(engine, gpu_sm="8.7")


def test_engine_manifest_with_malformed_inputs_or_onnx(tmp_path):
    from edgekit.errors import InputError

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    for extra, field in (({"inputs": ["input"]}, "inputs[0]"), ({"onnx": "m.onnx"}, "'onnx'"),
                         ({"device": 7}, "'device'")):
        write_manifest(engine, {"tensorrt": "10.3.0", **extra})
        with pytest.raises(InputError, match=field.replace("[", r"\[").replace("]", r"\]")):
            check_engine_compatible(engine, device="orin-nano")


@pytest.mark.parametrize("line,field", [
    ('dla_cores = "two"', "dla_cores"),
    ("dla_cores = -1", "dla_cores"),
    ('fast_int8 = "yes"', "fast_int8"),
    ('memory_gb = "8GB"', "memory_gb"),
    ('aliases = "jetson-tx2"', "aliases"),
])
def test_profile_toml_with_a_wrongly_typed_field(cli, tmp_path, monkeypatch, line, field):
    folder = tmp_path / "profiles"
    folder.mkdir()
    key = line.split("=")[0].strip()
    text = "\n".join(line if l.split("=")[0].strip() == key else l
                     for l in (PROFILES / "tx2.toml").read_text().splitlines())
    assert line in text
    (folder / "tx2.toml").write_text(text)
    monkeypatch.setenv("EDGEKIT_PROFILES_DIR", str(folder))
    for args in (["devices"], ["devices", "show", "tx2"], ["build", conv_model(tmp_path / "m.onnx"), "--device",
                                                             "tx2", "--dry-run"]):
        _one_line_error(cli(args), "tx2.toml", field)
