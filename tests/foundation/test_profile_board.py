"""`edgekit profile` on a board, end to end through the CLI: a fake `trtexec` replays a recorded
TensorRT 10.3 log and --exportTimes JSON, a fake `tegrastats` prints JetPack-4-style lines. The JSON
must carry the GPU phases, board power and energy per inference computed from those numbers."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from edgekit.stats import Summary
from edgekit.trt.manifest import write_manifest
from fakes.pytest_fixtures import fake_trtexec  # noqa: F401  (pytest fixture)
from fixtures import recorded

LOG = recorded("trtexec") / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log"
TIMES = recorded("trtexec-json") / "trex-mobilenet-titanrtx-times.first200.DERIVED.json"

TEGRA = "RAM 2000/7620MB CPU [5%@1510,7%@1510] GR3D_FREQ 61%@1020 GPU@45C VDD_IN 6000/6000 VDD_CPU_GPU_CV 1500/1500"


def _fake_tegrastats(folder: Path) -> None:
    exe = folder / "tegrastats"
    exe.write_text(f"""#!{sys.executable}
import sys, time
while True:
    print({TEGRA!r}, flush=True)
    time.sleep(0.02)
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_profile_engine_with_trtexec_and_tegrastats(cli, tmp_path, fake_trtexec):  # noqa: F811
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    write_manifest(engine, {"tensorrt": "10.3.0", "device": "orin-nano", "gpu": {"sm": "8.7"},
                            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]})
    fake_trtexec(LOG, times=TIMES)
    bindir = Path(os.environ["PATH"].split(os.pathsep)[0])
    _fake_tegrastats(bindir)
    r = cli(["profile", engine, "--device", "orin-nano", "--backend", "trtexec", "--duration-s", "1",
             "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    records = json.loads(TIMES.read_text())
    assert d["backend"] == "trtexec" and d["device"] == "orin-nano"
    assert d["gpu_compute_ms"] == Summary.of([x["computeMs"] for x in records]).to_dict()
    assert d["latency_ms"] == Summary.of([x["latencyMs"] for x in records]).to_dict()
    assert {"h2d_ms", "d2h_ms"} <= set(d)
    assert d["power_mw"]["mean"] == pytest.approx(6000.0) and d["power_mw"]["source"] == "VDD_IN"
    mean_latency = d["latency_ms"]["mean"]
    assert d["energy_mj_per_inference"] == pytest.approx(6000.0 * mean_latency / 1000.0)
    assert d["telemetry"]["gpu_freq_mhz"]["max"] == 1020


def test_engine_for_another_board_is_refused(cli, tmp_path, fake_trtexec):  # noqa: F811
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    write_manifest(engine, {"tensorrt": "8.5.2", "device": "xavier-nx", "gpu": {"sm": "7.2"},
                            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]})
    fake_trtexec(LOG, times=TIMES)
    r = cli(["profile", engine, "--device", "orin-nano", "--backend", "trtexec", "--duration-s", "1"])
    assert r.exit_code == 1
    assert "xavier-nx" in r.output and "orin-nano" in r.output
    assert "Traceback" not in r.output
