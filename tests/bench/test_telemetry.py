"""tegrastats / nvpmodel / jetson_clocks parsing and the background sampler (with fake executables)."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from edgekit.bench.telemetry import (TelemetrySampler, parse_jetson_clocks, parse_nvpmodel, parse_tegrastats,
                                     parse_tegrastats_line, read_board_state)
from fixtures import recorded

FIX = recorded("tegrastats")

# Expected values for the FIRST line of each fixture, as written in fixtures/tegrastats/SOURCES.md.
# (ram used, ram total, GR3D %, GPU MHz, power mW, power source, GPU temp C, cores)
EXPECTED = {
    "tx2-jp4.txt": (1004, 7852, 0, 114, 1876, "VDD_IN", 32, 6),
    "nano-jp4-singleline.txt": (534, 3964, 0, 76, 1022, "POM_5V_IN", 36, 4),
    "xavier-nx-jp4-singleline.txt": (4412, 7772, 62, 306, 4067, "VDD_IN", 43, 6),
    "agx-orin64-jp5-singleline-gpu-neg256.txt": (4321, 62801, 0, 0, 6755, "sum:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0",
                                                 None, 12),
    "agx-orin64-jp6-nosudo-singleline.txt": (2448, 62840, 0, None, 10370, "sum:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0",
                                             37.75, 12),
    "agx-orin64-jp7.2-singleline.txt": (20642, 62817, 12, 1300, 13907, "sum:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0",
                                        47.625, 12),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_first_line(name):
    samples = parse_tegrastats((FIX / name).read_text())
    assert samples, name
    s = samples[0]
    used, total, load, mhz, power, source, gpu_temp, cores = EXPECTED[name]
    assert (s.ram_used_mb, s.ram_total_mb) == (used, total)
    assert s.gpu_load == load and s.gpu_freq_mhz == mhz
    assert s.power_mw == power and s.power_source == source
    assert s.gpu_temp_c == gpu_temp
    assert len(s.cpu_loads) == cores
    assert s.unparsed == "", s.unparsed  # every token of a real line is understood


def test_tx2_three_lines_and_averages():
    samples = parse_tegrastats((FIX / "tx2-jp4.txt").read_text())
    assert len(samples) == 3
    assert [s.rails["VDD_SYS_DDR"].average_mw for s in samples] == [134, 124, 127]
    assert [s.rails["VDD_SYS_DDR"].current_mw for s in samples] == [134, 115, 134]
    assert samples[1].cpu_freqs_mhz == [346, 499, 499, 345, 345, 346]
    assert samples[0].temperatures["thermal"] == 33.2 and "PMIC" not in samples[0].temperatures


def test_jp5_invalid_gpu_temperature_and_nc_rails():
    s = parse_tegrastats_line((FIX / "agx-orin64-jp5-singleline-gpu-neg256.txt").read_text())
    assert s.invalid_temperatures["GPU"] == -256 and "GPU" not in s.temperatures
    assert "gpu_temp" in s.missing
    assert "NC" not in s.rails and s.rails["VDDQ_VDD2_1V8AO"].current_mw == 301
    assert s.timestamp == "04-11-2025 10:36:27" and s.gpu_freqs_mhz == [0, 0]
    assert s.emc_freq_mhz == 2133 and s.engines["VIC_FREQ"] == "729"


def test_jp7_triples_and_cur_max_temps():
    s = parse_tegrastats_line((FIX / "agx-orin64-jp7.2-singleline.txt").read_text())
    r = s.rails["VDD_GPU_SOC"]
    assert (r.current_mw, r.average_mw, r.max_mw) == (5139, 5139, 5139)
    assert s.temperatures["cpu"] == 52.968 and s.engines["NVDLA0"] == "off"
    assert s.cpu_loads[0] == 23 and s.cpu_freqs_mhz[0] == 2201


def test_jp6_nosudo_reports_missing_clock():
    s = parse_tegrastats_line((FIX / "agx-orin64-jp6-nosudo-singleline.txt").read_text())
    assert s.gpu_load == 0 and s.gpu_freq_mhz is None and s.emc_load is None
    assert {"gpu_freq", "emc"} <= set(s.missing)


def test_synthetic_variants():
    # JP6 with a timestamp and a bracketed single clock; an unknown field is kept, not fatal.
    line = ("11-21-2026 01:02:03 RAM 3000/7620MB (lfb 4x4MB) CPU [5%@1510,off,off,7%@1510] EMC_FREQ 1%@2133 "
            "GR3D_FREQ 37%@[1018] NEWTHING 42x cpu@49.5C gpu@-1.25C VDD_IN 5971mW/5800mW VDD_CPU_GPU_CV 1200mW/1100mW")
    s = parse_tegrastats_line(line)
    assert s.timestamp == "11-21-2026 01:02:03"
    assert s.cpu_loads == [5, None, None, 7] and s.cpu_load_mean == 6
    assert s.gpu_load == 37 and s.gpu_freq_mhz == 1018
    assert s.temperatures["gpu"] == -1.25  # cold but plausible: kept
    assert s.power_mw == 5971 and s.power_source == "VDD_IN" and s.rails["VDD_IN"].average_mw == 5800
    assert "NEWTHING 42x" in s.unparsed
    old = parse_tegrastats_line("RAM 1234/3983MB (lfb 5x4MB) CPU [2%@102,0%@102,off,off] EMC 5%@1600 GR3D 10%@76 "
                                "PLL@33C GPU@31.5C POM_5V_IN 1516/1516 POM_5V_GPU 0/0")
    assert old.emc_load == 5 and old.emc_freq_mhz == 1600 and old.gpu_load == 10 and old.gpu_freq_mhz == 76
    assert old.power_mw == 1516 and old.power_source == "POM_5V_IN" and old.unparsed == ""
    assert parse_tegrastats_line("tegrastats: permission denied") is None
    assert parse_tegrastats_line("") is None


# ---- nvpmodel / jetson_clocks: hand-written samples shaped after real output (no recorded fixture) ----

NVPMODEL_ORIN = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
NVPMODEL_NANO = "NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2\n"
CLOCKS_UNLOCKED = """SOC family:tegra234  Machine:Jetson AGX Orin
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=1190400 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1 c7=1
cpu2: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=0
FAN Dynamic Speed control=active hwmon4_pwm=77
NV Power Mode: MAXN
"""
CLOCKS_LOCKED = """SOC family:tegra186  Machine:quill
Online CPUs: 0-5
cpu0: Online=1 Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: C1=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: C1=0 c7=0
GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=40800000 MaxFreq=1866000000 CurrentFreq=1866000000 FreqOverride=1
NV Power Mode: MAXN
"""


def test_parse_nvpmodel():
    assert parse_nvpmodel(NVPMODEL_ORIN).to_dict() == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel(NVPMODEL_NANO).to_dict() == {"name": "15W", "id": 2}
    assert parse_nvpmodel("nvpmodel: command failed") is None


def test_parse_jetson_clocks():
    st = parse_jetson_clocks(CLOCKS_UNLOCKED)
    assert st.units["GPU"] == {"min": 306000000, "max": 1300500000, "current": 306000000}
    assert st.locked is False and st.unlocked == ["cpu0", "GPU"]  # cpu2 is offline: ignored
    assert "GPU 306/1300 MHz" in st.warning() and "jetson_clocks" in st.warning()
    ok = parse_jetson_clocks(CLOCKS_LOCKED)
    assert ok.locked is True and ok.warning() is None and ok.power_mode == "MAXN"
    assert parse_jetson_clocks("").locked is None


# ---- fake executables on PATH ----------------------------------------------------------------------

FAKE_TEGRASTATS = r'''#!{python}
import signal, sys, time
lines = open({lines!r}).read().splitlines()
args = sys.argv[1:]
interval = int(args[args.index("--interval") + 1]) / 1000.0 if "--interval" in args else 1.0
out = open(args[args.index("--logfile") + 1], "w") if "--logfile" in args else sys.stdout
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
sys.stderr.write({stderr!r})
i = 0
while True:
    time.sleep(interval)
    out.write(lines[i % len(lines)] + "\n"); out.flush()
    i += 1
'''


def _write_exe(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder) + os.pathsep + os.environ.get("PATH", ""))
    return folder


def _fake_tegrastats(folder: Path, lines: list, stderr: str = "") -> None:
    data = folder / "lines.txt"
    data.write_text("\n".join(lines) + "\n")
    _write_exe(folder, "tegrastats", FAKE_TEGRASTATS.format(python=sys.executable, lines=str(data), stderr=stderr))


LINE_A = "RAM 1000/7852MB CPU [10%@1000,20%@1000] GR3D_FREQ 50%@1300 GPU@40C VDD_IN 2000/2000 VDD_SYS_GPU 500/500"
LINE_B = "RAM 1100/7852MB CPU [30%@1000,40%@1000] GR3D_FREQ 90%@1300 GPU@42C VDD_IN 4000/3000 VDD_SYS_GPU 900/700"


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_sampler_runs_and_stops(fake_bin):
    _fake_tegrastats(fake_bin, [LINE_A, LINE_B])
    _write_exe(fake_bin, "nvpmodel", "#!/bin/sh\nprintf '%s' '" + NVPMODEL_ORIN + "'\n")
    _write_exe(fake_bin, "jetson_clocks", "#!/bin/sh\ncat <<'X'\n" + CLOCKS_UNLOCKED + "X\n")
    with TelemetrySampler(interval_ms=20, sudo=False) as tel:
        _wait(lambda: len(tel.samples) >= 4)
    proc_gone = tel._proc is None
    rep = tel.summary(latency_ms=2.0, iterations=100, walltime_s=0.5)
    assert proc_gone and rep["available"] and rep["samples"] >= 4
    powers = [s.power_mw for _, s in tel.samples]
    assert set(powers) <= {2000.0, 4000.0}
    mean = sum(powers) / len(powers)
    assert rep["power_mw"]["mean"] == pytest.approx(mean) and rep["power_mw"]["source"] == "VDD_IN"
    assert rep["power_mw"]["min"] == min(powers) and rep["power_mw"]["max"] == max(powers)
    assert rep["energy_mj_per_inference"] == pytest.approx(mean * 2.0 / 1000.0)
    assert rep["energy_mj_per_inference_walltime"] == pytest.approx(mean * 0.5 / 100)
    assert "latency" in rep["energy_basis"]
    assert rep["gpu_freq_mhz"]["max"] == 1300 and rep["ram_total_mb"] == 7852
    assert rep["power_mode"] == {"name": "MAXN", "id": 0}
    assert rep["clocks_locked"] is False and any("not locked" in w for w in rep["warnings"])
    # the fake tegrastats is gone after stop
    n = len(tel.samples)
    time.sleep(0.1)
    assert len(tel.samples) == n


def test_sampler_logfile_mode(fake_bin, tmp_path):
    _fake_tegrastats(fake_bin, [LINE_B])
    log = tmp_path / "tegra.log"
    with TelemetrySampler(interval_ms=20, sudo=False, logfile=log, board_state=False) as tel:
        _wait(lambda: log.is_file() and log.read_text().count("\n") >= 2)
    rep = tel.summary(latency_ms=1.0)
    assert rep["samples"] >= 2 and rep["power_mw"]["mean"] == 4000
    assert rep["energy_mj_per_inference"] == pytest.approx(4.0)


def test_sampler_without_tegrastats(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with TelemetrySampler(interval_ms=50, board_state=True) as tel:
        pass
    rep = tel.summary(latency_ms=1.0)
    assert rep["available"] is False and "tegrastats not found" in rep["reason"]
    assert rep["power_mw"] is None and rep["energy_mj_per_inference"] is None
    st = read_board_state()
    assert st["power_mode"] is None and st["clocks"] is None


def test_sampler_tegrastats_without_power_rails(fake_bin):
    # non-root JP6-like output with no rail at all: degrade, warn, no energy figure
    _fake_tegrastats(fake_bin, ["RAM 2448/62840MB CPU [0%@2201] GR3D_FREQ 0% gpu@37.75C"], stderr="some rails need root\n")
    with TelemetrySampler(interval_ms=20, sudo=False, board_state=False) as tel:
        _wait(lambda: len(tel.samples) >= 1)
    rep = tel.summary(latency_ms=1.0)
    assert rep["available"] and rep["power_mw"] is None and rep["energy_mj_per_inference"] is None
    assert any("no power rail" in w for w in rep["warnings"])
    assert any("GPU/EMC clock" in w for w in rep["warnings"])


def test_sampler_broken_tegrastats(fake_bin):
    _write_exe(fake_bin, "tegrastats", "#!/bin/sh\necho 'Error: could not open /sys/... (need root)' >&2\nexit 3\n")
    with TelemetrySampler(interval_ms=20, sudo=False, board_state=False) as tel:
        _wait(lambda: tel._proc.poll() is not None)
    rep = tel.summary(latency_ms=1.0)
    assert rep["available"] is False and "need root" in rep["reason"] and "exit code 3" in rep["reason"]


def test_bad_interval():
    with pytest.raises(ValueError):
        TelemetrySampler(interval_ms=0)
