"""`edgekit estimate` as a person runs it: piped with --json -, in a terminal, with bad input, and
the refit loop (board profile -> local calibration -> later estimates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from edgekit.devices import list_profiles

from fixtures import recorded
from pty_harness import run_in_pty, strip_ansi

REPO = Path(__file__).resolve().parents[2]


def _run(args, env=None):
    e = dict(os.environ, PYTHONPATH=str(REPO), EDGEKIT_DEBUG="0", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=120)


@pytest.fixture
def model(tmp_path, net):
    p = tmp_path / "net.onnx"
    onnx.save(net(width=64, hw=64), str(p))
    return p


def test_json_on_stdout_only(model, cache):
    r = _run(["estimate", model, "--device", "orin-nx", "--precision", "int8", "--json", "-"],
             {"EDGEKIT_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["label"] == "estimate" and d["device"] == "orin-nx" and d["latency_ms"] > 0
    assert d["error_band"]["n"] > 0 and d["throughput"] > 0
    assert len(d["layers"]) >= 5 and {"op", "macs", "bytes_moved", "us", "bound"} <= set(d["layers"][0])


def test_device_all_covers_every_board(model, cache):
    r = _run(["estimate", model, "--device", "all", "--json", "-"], {"EDGEKIT_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    boards = {p.name for p in list_profiles() if p.kind != "cpu"}
    assert {e["device"] for e in d["estimates"]} == boards
    assert all(e["label"] == "estimate" for e in d["estimates"])


def test_terminal_shows_the_band_and_the_layer_table(model, cache):
    r = run_in_pty(["estimate", str(model), "--device", "agx-orin", "--top", "3"],
                   env={"EDGEKIT_CACHE_DIR": str(cache)}, columns=160)
    text = strip_ansi(r.terminal)
    assert r.returncode == 0, text
    assert "estimate ±" in text and "most expensive" in text
    assert "compute" in text or "memory" in text


@pytest.mark.parametrize("args, words", [
    (["--device", "orin-nxx"], "did you mean"),
    (["--device", "orin-nx", "--batch", "0"], "batch"),
    (["--device", "orin-nx", "--power-mode", "TURBO"], "power mode"),
])
def test_bad_input_is_one_line_without_traceback(model, cache, args, words):
    before = model.read_bytes()
    r = _run(["estimate", model, *args], {"EDGEKIT_CACHE_DIR": str(cache)})
    assert r.returncode != 0 and words in (r.stdout + r.stderr)
    assert "Traceback" not in r.stderr and model.read_bytes() == before


def test_refit_from_a_trtexec_profile_moves_the_estimate_to_the_measurement(tmp_path, model, cache, net):
    env = {"EDGEKIT_CACHE_DIR": str(cache)}
    base = json.loads(_run(["estimate", model, "-d", "agx-orin", "-p", "fp16", "--json", "-"], env).stdout)
    # a measured profile in trtexec --exportProfile format, TensorRT-style fused names, 3x slower convs
    names = {}
    for lay in base["layers"]:
        names[" + ".join(lay["nodes"])] = lay["us"] / 1000 * (3.0 if lay["op"] == "conv" else 1.0)
    prof = [{"count": 100}] + [{"name": n, "timeMs": ms * 100, "averageMs": ms, "medianMs": ms, "percentage": 1}
                               for n, ms in names.items()]
    pfile = tmp_path / "layers.json"
    pfile.write_text(json.dumps(prof))
    r = _run(["estimate", model, "-d", "agx-orin", "-p", "fp16", "--refit", pfile, "--json", "-"], env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    measured = sum(names.values())
    assert abs(d["latency_ms"] - measured) / measured < 0.05
    assert d["refit"]["class_scale"]["conv"] > 1 and (cache / "estimate" / "agx-orin.json").is_file()
    # later estimates for that board use it; other boards do not
    again = json.loads(_run(["estimate", model, "-d", "agx-orin", "-p", "fp16", "--json", "-"], env).stdout)
    assert abs(again["latency_ms"] - d["latency_ms"]) < 1e-6 and again["params_version"].endswith("+local")
    other = json.loads(_run(["estimate", model, "-d", "orin-nx", "-p", "fp16", "--json", "-"], env).stdout)
    assert not other["params_version"].endswith("+local")
    # a profile of another model (names do not match) still gives a whole-engine scale
    r = _run(["estimate", model, "-d", "x86-gpu", "--refit", recorded("trtexec-json") /
              "trex-mobilenet-titanrtx-profile.json", "--json", "-"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["refit"]["class_scale"] == {}


def test_refit_rejects_a_file_that_is_not_a_profile(tmp_path, model, cache):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    r = _run(["estimate", model, "-d", "agx-orin", "--refit", bad], {"EDGEKIT_CACHE_DIR": str(cache)})
    assert r.returncode != 0 and "not a layer profile" in (r.stdout + r.stderr) and "Traceback" not in r.stderr
    assert not (cache / "estimate" / "agx-orin.json").exists()


def test_profile_export_layers_needs_a_board_backend(model, tmp_path):
    r = _run(["profile", model, "--duration-s", "0", "--iterations", "1", "--warmup-ms", "0",
              "--export-layers", tmp_path / "l.json"])
    assert r.returncode != 0 and "--export-layers" in (r.stdout + r.stderr) and "Traceback" not in r.stderr
    assert not (tmp_path / "l.json").exists()
