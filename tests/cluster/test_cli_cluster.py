"""The farm's commands as a person runs them: subprocesses, piped, `--json -`, against the shared
cluster (its address) and once against `local`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def edgekit(*args, cwd=None, timeout=180):
    env = dict(os.environ, PYTHONPATH=str(ROOT), EDGEKIT_DEBUG="0", OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def test_sweep_cli_table_json_journal_and_plot(farm, models, tmp_path):
    out = tmp_path / "sw"
    r = edgekit("sweep", models[0], models[1], "--devices", "orin-nano,orin-nx", "--precision", "fp16",
                "--cluster", farm.address, "-o", out, "--duration-s", "0.1", "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # nothing but JSON on stdout
    assert len(d["results"]) == 4 and d["complete"] and not d["failed"]
    assert {x["device"] for x in d["results"]} == {"orin-nano", "orin-nx"}
    assert len((out / "journal.jsonl").read_text().splitlines()) == 4
    assert json.loads((out / "sweep.json").read_text())["results"] == d["results"]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    again = edgekit("sweep", models[0], models[1], "--devices", "orin-nano,orin-nx", "--precision", "fp16",
                    "--cluster", farm.address, "-o", out, "--resume", "--no-plot")
    assert again.returncode == 0, again.stderr
    assert "4 from the journal" in again.stdout and "orin-nx" in again.stdout and "median ms" in again.stdout


@pytest.mark.slow
def test_profile_and_build_on_a_board(farm, models, tmp_path):
    r = edgekit("profile", models[2], "--device", "orin-nx", "--cluster", farm.address, "--duration-s", "0.1",
                "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["backend"] == "trtexec" and d["device"] == "orin-nx" and d["latency_ms"]["median"] > 0
    engine = tmp_path / "m.engine"
    b = edgekit("build", models[2], "--device", "orin-nx", "--precision", "fp16", "--cluster", farm.address,
                "-o", engine, "--json", "-")
    assert b.returncode == 0, b.stderr
    assert engine.read_bytes() == b"fake-engine-bytes"
    man = json.loads(Path(str(engine) + ".json").read_text()) if Path(str(engine) + ".json").exists() else None
    assert json.loads(b.stdout)["node"]["node_id"] in (farm.node_id("head"), farm.node_id("second"))
    assert man is None or man["device"] == "orin-nx"


def test_status_lists_the_boards(farm):
    r = edgekit("cluster", "status", "--address", farm.address, "--json", "-")
    assert r.returncode == 0, r.stderr
    by_id = {b["node_id"]: b for b in json.loads(r.stdout)["boards"]}
    head = by_id[farm.node_id("head")]
    assert head["alive"] and head["labels"]["edgekit-tensorrt"] == "10.3" and "orin-nano" in head["devices"]
    human = edgekit("cluster", "status", "--address", farm.address)
    assert "TensorRT" in human.stdout and "idle" in human.stdout


def test_a_trt_mismatch_and_bad_input_are_one_line_errors(farm, models, tmp_path):
    r = edgekit("sweep", models[0], "--devices", "orin-nx", "--cluster", farm.address, "-o", tmp_path / "x",
                "--trt-version", "7.1")
    assert r.returncode == 1 and "no orin-nx board with TensorRT 7.1" in r.stderr and "Traceback" not in r.stderr
    bad = edgekit("sweep", models[0], "--devices", "orin-nx", "--precision", "fp9", "--cluster", "local",
                  "-o", tmp_path / "y")
    assert bad.returncode == 1 and "fp9" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "y").exists()


def test_worker_dry_run_prints_the_ray_start_line():
    r = edgekit("worker", "--address", "10.0.0.5:6379", "--device", "orin-nx", "--trt-version", "10.3",
                "--power-mode", "MAXN", "--dry-run", "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    cmd = d["command"]
    assert cmd[:4] == ["ray", "start", "--address", "10.0.0.5:6379"] and not d["started"]
    assert json.loads(cmd[cmd.index("--resources") + 1]) == {"edgekit-device:orin-nx": 1.0}
    assert "edgekit-tensorrt=10.3" in cmd[cmd.index("--labels") + 1]


@pytest.mark.slow
def test_sweep_on_local_runs_here_with_the_onnx_runtime_stand_in(tmp_path, models):
    r = edgekit("sweep", models[0], "--devices", "cpu,orin-nx", "--cluster", "local", "-o", tmp_path / "o",
                "--duration-s", "0.1", "--no-plot", "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert len(d["results"]) == 2 and all(x["stand_in"] and x["backend"] == "onnxruntime" for x in d["results"])
