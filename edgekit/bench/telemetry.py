"""Jetson telemetry during a benchmark: tegrastats power/GPU/temperature, nvpmodel mode, clock lock.

tegrastats prints one line per interval, and the line format changed with every JetPack:

* JetPack 4 (TX2, Nano, Xavier): rails without a unit, ``VDD_IN 1876/1876`` (current/average, mW);
  the Nano calls its input rail ``POM_5V_IN``; GPU as ``GR3D_FREQ 0%@114``; temps ``GPU@32C``.
* JetPack 5 (Orin): ``VDD_GPU_SOC 2340mW/2340mW``; Orin may print per-GPC clocks ``GR3D_FREQ 0%@[0,0]``;
  a powered-off sensor reads ``GPU@-256C``.
* JetPack 6: an optional leading timestamp, ``GR3D_FREQ 0%@[1018]``, lower-case temps ``gpu@49.593C``.
  Run without root, some fields disappear (no ``EMC_FREQ``, ``GR3D_FREQ 0%`` without a clock).
* JetPack 7: rails ``inst/avg/max`` (``5139mW/5139mW/5139mW``), temps ``cur/max``, per-GPC clocks.

The parser is tolerant: it pulls out every field it recognises anywhere in the line, keeps the rest in
``unparsed`` and lists the fields it did not find in ``missing``, so a new format degrades instead of
failing. Board power is ``VDD_IN`` (or ``POM_5V_IN``) when present, else the sum of the rails, and
every summary says which (``power_mw.source``).

Tested here against recorded lines (tests/fixtures/tegrastats) and fake executables; the sampler has
never run on a board in this project's CI.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

# Rails that measure the whole module input; the first one present is the board power.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
# Rails left out of a sum: "NC" is an unconnected monitor channel; VDDQ_VDD2_1V8AO is the AGX Orin
# memory rail that sits on the second monitor next to two NC channels (jtop and the fixtures report it
# apart from the VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 total).
SUM_EXCLUDED_RAILS = ("NC", "VDDQ_VDD2_1V8AO")
# Sensors that do not measure anything useful: PMIC reads a constant 100C on JetPack 4 boards.
FAKE_SENSORS = ("PMIC",)
# A sensor reading at or below this is "off / invalid" (Orin reports -256C for powered-down domains).
INVALID_TEMP_C = -40.0

_TS_RE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})")
_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)([kKMG]B)")
_SWAP_RE = re.compile(r"\bSWAP (\d+)/(\d+)([kKMG]B)(?: \(cached \d+[kKMG]B\))?")
_IRAM_RE = re.compile(r"\bIRAM \d+/\d+kB ?\(lfb \d+kB\)")
_LFB_RE = re.compile(r"\(lfb [^)]*\)")
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]")
# L4T 28 (JetPack 3) spelled them "EMC 17%@1600" and "GR3D 0%@76"
_EMC_RE = re.compile(r"\bEMC(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
_GR3D_RE = re.compile(r"\bGR3D(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP_RE = re.compile(r"(?<![\w%@])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?(?![\w])")
_RAIL_RE = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\w/])")
_ENGINE_RE = re.compile(r"\b([A-Z][A-Z0-9_]*) (off|\d+%@\[?[\d,]+\]?|\d+)(?=\s|$)")
_MTS_RE = re.compile(r"\bMTS fg (\d+)% bg (\d+)%")

_UNIT_TO_MB = {"kB": 1 / 1024.0, "KB": 1 / 1024.0, "MB": 1.0, "GB": 1024.0}


@dataclass
class Rail:
    current_mw: float
    average_mw: float
    max_mw: Optional[float] = None  # JetPack 7 only


@dataclass
class TegrastatsSample:
    """One tegrastats line. Fields the line did not carry are None and named in ``missing``."""

    timestamp: Optional[str] = None
    ram_used_mb: Optional[float] = None
    ram_total_mb: Optional[float] = None
    swap_used_mb: Optional[float] = None
    swap_total_mb: Optional[float] = None
    cpu_loads: List[Optional[float]] = field(default_factory=list)  # % per core, None = core off
    cpu_freqs_mhz: List[Optional[float]] = field(default_factory=list)
    emc_load: Optional[float] = None
    emc_freq_mhz: Optional[float] = None
    gpu_load: Optional[float] = None
    gpu_freq_mhz: Optional[float] = None  # max over GPCs when tegrastats lists several
    gpu_freqs_mhz: List[float] = field(default_factory=list)
    temperatures: Dict[str, float] = field(default_factory=dict)  # valid readings only
    invalid_temperatures: Dict[str, float] = field(default_factory=dict)
    rails: Dict[str, Rail] = field(default_factory=dict)
    power_mw: Optional[float] = None
    power_source: str = ""
    engines: Dict[str, str] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)
    unparsed: str = ""

    @property
    def cpu_load_mean(self) -> Optional[float]:
        loads = [x for x in self.cpu_loads if x is not None]
        return sum(loads) / len(loads) if loads else None

    @property
    def gpu_temp_c(self) -> Optional[float]:
        for name, value in self.temperatures.items():
            if name.lower() == "gpu":
                return value
        return None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cpu_load_mean"] = self.cpu_load_mean
        d["gpu_temp_c"] = self.gpu_temp_c
        return d


def _freqs(text: Optional[str]) -> List[float]:
    return [float(x) for x in (text or "").split(",") if x.strip()]


def parse_tegrastats_line(line: str) -> Optional[TegrastatsSample]:
    """Parse one tegrastats line (any JetPack). None when the line carries no tegrastats field."""
    text = line.strip()
    if not text:
        return None
    s = TegrastatsSample()
    spans: List[Tuple[int, int]] = []

    def take(m: "re.Match") -> "re.Match":
        spans.append(m.span())
        return m

    m = _TS_RE.match(text)
    if m:
        s.timestamp = take(m).group(1)
    m = _RAM_RE.search(text)
    if m:
        take(m)
        unit = _UNIT_TO_MB.get(m.group(3), 1.0)
        s.ram_used_mb, s.ram_total_mb = float(m.group(1)) * unit, float(m.group(2)) * unit
    m = _SWAP_RE.search(text)
    if m:
        take(m)
        unit = _UNIT_TO_MB.get(m.group(3), 1.0)
        s.swap_used_mb, s.swap_total_mb = float(m.group(1)) * unit, float(m.group(2)) * unit
    for rx in (_IRAM_RE, _LFB_RE, _MTS_RE):
        for m in rx.finditer(text):
            take(m)
    m = _CPU_RE.search(text)
    if m:
        take(m)
        for entry in m.group(1).split(","):
            entry = entry.strip()
            cm = re.match(r"(\d+)%(?:@(\d+))?", entry)
            if cm:
                s.cpu_loads.append(float(cm.group(1)))
                s.cpu_freqs_mhz.append(float(cm.group(2)) if cm.group(2) else None)
            else:  # "off" (core parked)
                s.cpu_loads.append(None)
                s.cpu_freqs_mhz.append(None)
    m = _EMC_RE.search(text)
    if m:
        take(m)
        s.emc_load = float(m.group(1))
        f = _freqs(m.group(2))
        s.emc_freq_mhz = max(f) if f else None
    m = _GR3D_RE.search(text)
    if m:
        take(m)
        s.gpu_load = float(m.group(1))
        s.gpu_freqs_mhz = _freqs(m.group(2))
        s.gpu_freq_mhz = max(s.gpu_freqs_mhz) if s.gpu_freqs_mhz else None
    for m in _TEMP_RE.finditer(text):
        take(m)
        name, value = m.group(1), float(m.group(2))
        if value <= INVALID_TEMP_C or name.upper() in FAKE_SENSORS:
            s.invalid_temperatures[name] = value
        else:
            s.temperatures[name] = value
    for m in _RAIL_RE.finditer(text):
        name = m.group(1)
        if name in ("RAM", "SWAP", "IRAM"):
            continue
        take(m)
        rail = Rail(float(m.group(2)), float(m.group(3)), float(m.group(4)) if m.group(4) else None)
        if name == "NC":
            continue
        s.rails[name] = rail
    for m in _ENGINE_RE.finditer(text):
        name = m.group(1)
        if name in ("RAM", "SWAP", "CPU", "EMC", "EMC_FREQ", "GR3D", "GR3D_FREQ") or name in s.rails:
            continue
        if any(a <= m.start() < b for a, b in spans):
            continue
        take(m)
        s.engines[name] = m.group(2)

    s.power_mw, s.power_source = board_power(s.rails)
    found_any = s.ram_used_mb is not None or s.cpu_loads or s.gpu_load is not None or s.rails or s.temperatures
    if not found_any:
        return None
    # what the line did not carry
    for name, value in (("ram", s.ram_used_mb), ("cpu", s.cpu_loads or None), ("gpu_load", s.gpu_load),
                        ("gpu_freq", s.gpu_freq_mhz), ("emc", s.emc_load), ("power", s.power_mw),
                        ("gpu_temp", s.gpu_temp_c)):
        if value is None:
            s.missing.append(name)
    # the leftovers, for "say what could not be read"
    rest = []
    last = 0
    for a, b in sorted(spans):
        if a > last:
            rest.append(text[last:a])
        last = max(last, b)
    rest.append(text[last:])
    s.unparsed = " ".join(" ".join(rest).split())
    return s


def board_power(rails: Dict[str, Rail]) -> Tuple[Optional[float], str]:
    """(total board power in mW, which rails it came from) for one sample's rails."""
    for name in TOTAL_RAILS:
        if name in rails:
            return rails[name].current_mw, name
    used = [n for n in rails if n not in SUM_EXCLUDED_RAILS]
    if not used:
        return None, ""
    return sum(rails[n].current_mw for n in used), "sum:" + "+".join(used)


def parse_tegrastats(text: str) -> List[TegrastatsSample]:
    """Every parseable line of a tegrastats log (lines that are not tegrastats output are skipped)."""
    out = []
    for line in text.splitlines():
        s = parse_tegrastats_line(line)
        if s is not None:
            out.append(s)
    return out


# ---- nvpmodel and jetson_clocks ----------------------------------------------------------------

@dataclass
class PowerMode:
    name: str
    id: Optional[int]

    def to_dict(self) -> dict:
        return asdict(self)


def parse_nvpmodel(text: str) -> Optional[PowerMode]:
    """``nvpmodel -q`` output -> active mode. The id is the number on the line after the name."""
    lines = [ln.strip() for ln in (text or "").splitlines()]
    for i, ln in enumerate(lines):
        m = re.match(r"NV Power Mode\s*:\s*(\S.*)$", ln, re.IGNORECASE)
        if m:
            mode_id = None
            for nxt in lines[i + 1:]:
                if re.fullmatch(r"\d+", nxt):
                    mode_id = int(nxt)
                    break
                if nxt:
                    break
            return PowerMode(m.group(1).strip(), mode_id)
    return None


@dataclass
class ClockState:
    """``jetson_clocks --show``: per unit (cpuN, GPU, EMC) min/max/current in Hz or kHz as printed."""

    units: Dict[str, Dict[str, int]] = field(default_factory=dict)
    power_mode: Optional[str] = None

    @property
    def unlocked(self) -> List[str]:
        """Units whose current clock is below their maximum (CPU cores that are offline are ignored)."""
        out = []
        for name, u in self.units.items():
            if u.get("online", 1) == 0:
                continue
            if "current" in u and "max" in u and u["current"] < u["max"]:
                out.append(name)
        return out

    @property
    def locked(self) -> Optional[bool]:
        needed = [n for n in self.units if n.startswith("cpu") or n in ("GPU", "EMC")]
        if not needed:
            return None
        return not self.unlocked

    def warning(self) -> Optional[str]:
        if self.locked is None:
            return "clock state unknown (jetson_clocks --show printed no CPU/GPU/EMC clocks)"
        if self.locked:
            return None
        parts = []
        for name in self.unlocked:
            u = self.units[name]
            scale = 1e6 if name in ("GPU", "EMC") else 1e3  # GPU/EMC print Hz, CPUs kHz
            parts.append(f"{name} {u['current'] / scale:.0f}/{u['max'] / scale:.0f} MHz")
        shown = ", ".join(parts[:4]) + (f" and {len(parts) - 4} more" if len(parts) > 4 else "")
        return ("clocks are not locked (" + shown + "): latency will drift with DVFS; run `sudo jetson_clocks` "
                "before benchmarking")

    def to_dict(self) -> dict:
        return {"units": self.units, "power_mode": self.power_mode, "locked": self.locked,
                "unlocked": self.unlocked, "warning": self.warning()}


def parse_jetson_clocks(text: str) -> ClockState:
    state = ClockState()
    for ln in (text or "").splitlines():
        ln = ln.strip()
        m = re.match(r"(cpu\d+|GPU|EMC|DLA\d_CORE|DLA\d_FALCON|PVA\d_VPS\d?|PVA\d_AXI)\s*:?\s*(.*)$", ln)
        if m:
            unit: Dict[str, int] = {}
            for key, value in re.findall(r"(\w+)=(-?\d+)", m.group(2)):
                k = key.lower()
                if k in ("minfreq", "maxfreq", "currentfreq", "online"):
                    unit[{"minfreq": "min", "maxfreq": "max", "currentfreq": "current", "online": "online"}[k]] = int(value)
            if unit:
                state.units[m.group(1)] = unit
            continue
        pm = re.match(r"NV Power Mode\s*:\s*(\S.*)$", ln)
        if pm:
            state.power_mode = pm.group(1).strip()
    return state


def _run_quiet(argv: Sequence[str], timeout: float = 5.0) -> Tuple[int, str]:
    try:
        proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              universal_newlines=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, str(exc)
    return proc.returncode, proc.stdout


def read_board_state(sudo: Optional[bool] = None) -> dict:
    """nvpmodel mode and jetson_clocks state, with warnings; fields are None where a tool is missing."""
    result: dict = {"power_mode": None, "clocks": None, "clocks_locked": None, "warnings": []}
    if shutil.which("nvpmodel"):
        rc, text = _run_quiet(["nvpmodel", "-q"])
        mode = parse_nvpmodel(text)
        if mode is not None:
            result["power_mode"] = mode.to_dict()
        else:
            result["warnings"].append(f"could not read the power mode from `nvpmodel -q` (exit {rc})")
    if shutil.which("jetson_clocks"):
        argv = ["jetson_clocks", "--show"]
        if _use_sudo(sudo):
            argv = ["sudo", "-n"] + argv
        rc, text = _run_quiet(argv)
        state = parse_jetson_clocks(text)
        result["clocks"] = state.to_dict()
        result["clocks_locked"] = state.locked
        if rc != 0 and not state.units:
            result["warnings"].append("`jetson_clocks --show` failed (it needs root): clock lock state unknown")
        elif state.warning():
            result["warnings"].append(state.warning())
        if result["power_mode"] is None and state.power_mode:
            result["power_mode"] = {"name": state.power_mode, "id": None}
    return result


def _use_sudo(sudo: Optional[bool]) -> bool:
    if sudo is not None:
        return sudo
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return False
    if not shutil.which("sudo"):
        return False
    rc, _ = _run_quiet(["sudo", "-n", "true"], timeout=3)
    return rc == 0


# ---- the sampler -------------------------------------------------------------------------------

def _stats(values: Sequence[float]) -> Optional[Dict[str, float]]:
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}


class TelemetrySampler:
    """Run tegrastats in the background while a benchmark runs; summarise power, GPU, temperature, RAM.

    Use::

        with TelemetrySampler(interval_ms=100) as tel:
            ...timed loop...
        report = tel.summary(latency_ms=3.2, iterations=1000, walltime_s=3.4)

    Where tegrastats is not installed (a PC, CI) the sampler is inert and ``summary()`` returns
    ``{"available": False, "reason": ...}``. It never raises for a missing or failing tegrastats.
    ``sudo=None`` uses ``sudo -n`` only when that works without a password (JetPack 6 hides some
    fields from non-root users); ``board_state=True`` also reads nvpmodel and jetson_clocks.
    """

    def __init__(self, interval_ms: int = 100, executable: Optional[str] = None, sudo: Optional[bool] = False,
                 logfile: Optional[Union[str, Path]] = None, board_state: bool = True, min_samples: int = 1):
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self.sudo = sudo
        self.logfile = Path(logfile) if logfile else None
        self.board_state_wanted = board_state
        self.min_samples = min_samples
        self.samples: List[Tuple[float, TegrastatsSample]] = []
        self.warnings: List[str] = []
        self.reason = ""
        self.board_state: Optional[dict] = None
        self.started_at: Optional[float] = None
        self.stopped_at: Optional[float] = None
        self.command: List[str] = []
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._stderr = ""

    # -- lifecycle --
    @property
    def available(self) -> bool:
        return self._proc is not None or bool(self.samples)

    def start(self) -> "TelemetrySampler":
        exe = self.executable or shutil.which("tegrastats") or ("/usr/bin/tegrastats" if os.path.exists("/usr/bin/tegrastats") else None)
        if self.board_state_wanted:
            try:
                self.board_state = read_board_state(self.sudo)
                self.warnings.extend(self.board_state.get("warnings", []))
            except Exception as exc:  # telemetry must never break a benchmark
                self.warnings.append(f"could not read the board state: {exc}")
        if not exe:
            self.reason = "tegrastats not found (not a Jetson, or not on PATH)"
            return self
        argv = [exe, "--interval", str(self.interval_ms)]
        if self.logfile is not None:
            argv += ["--logfile", str(self.logfile)]
        if _use_sudo(self.sudo):
            argv = ["sudo", "-n"] + argv
        self.command = argv
        try:
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          universal_newlines=True, bufsize=1, start_new_session=True)
        except OSError as exc:
            self.reason = f"could not start tegrastats: {exc}"
            self._proc = None
            return self
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name="tegrastats-reader", daemon=True)
        self._thread.start()
        return self

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats_line(line)
            if sample is not None:
                with self._lock:
                    self.samples.append((time.monotonic(), sample))

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # Wait (a little) for the first line on runs shorter than one interval.
        deadline = time.monotonic() + 2.5 * self.interval_ms / 1000.0 + 0.5
        while self.logfile is None and len(self.samples) < self.min_samples and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stopped_at = time.monotonic()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except PermissionError:  # started through sudo: signal it through sudo as well
                _run_quiet(["sudo", "-n", "kill", "-TERM", f"-{proc.pid}"])
            except (OSError, AttributeError):
                proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (OSError, AttributeError):
                    proc.kill()
                proc.wait(timeout=3)
        if self._thread is not None:
            self._thread.join(timeout=3)
        try:
            self._stderr = proc.stderr.read() if proc.stderr else ""
        except (OSError, ValueError):
            self._stderr = ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if self.logfile is not None and self.logfile.exists():
            now = time.monotonic()
            with self._lock:
                self.samples.extend((now, s) for s in parse_tegrastats(self.logfile.read_text(errors="replace")))
        if not self.samples:
            err = " ".join(self._stderr.split())[:200]
            self.reason = "tegrastats printed no parseable line" + (f" ({err})" if err else "") + \
                (f"; exit code {proc.returncode}" if proc.returncode not in (None, 0, -15) else "")
        self._proc = None

    def __enter__(self) -> "TelemetrySampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- report --
    def summary(self, latency_ms: Optional[float] = None, iterations: Optional[int] = None,
                walltime_s: Optional[float] = None, batch: int = 1) -> dict:
        """Mean/min/max board power, energy per inference, GPU load/clock, temperatures, RAM.

        ``energy_mj_per_inference`` = mean board power x ``latency_ms`` (the harness's mean latency
        per query, divided by ``batch``): the energy the whole board spent during one inference,
        idle baseline included. With ``iterations`` and ``walltime_s`` the walltime-based figure
        (mean power x walltime / (iterations x batch)) is reported as well; it also counts host gaps.
        """
        with self._lock:
            samples = [s for _, s in self.samples]
        out: dict = {"available": bool(samples), "samples": len(samples), "interval_ms": self.interval_ms,
                     "command": self.command, "board_state": self.board_state, "warnings": list(self.warnings)}
        if self.board_state:
            out["power_mode"] = self.board_state.get("power_mode")
            out["clocks_locked"] = self.board_state.get("clocks_locked")
        if not samples:
            out["reason"] = self.reason or "no tegrastats samples (run shorter than one interval?)"
            out["power_mw"] = None
            out["energy_mj_per_inference"] = None
            return out
        out.update(summarize_samples(samples))
        power = out["power_mw"]
        out["energy_mj_per_inference"] = None
        out["energy_basis"] = None
        if power is not None and latency_ms is not None and latency_ms > 0:
            # mW x ms = microjoule; / 1000 -> mJ
            out["energy_mj_per_inference"] = power["mean"] * float(latency_ms) / 1000.0 / max(1, batch)
            out["energy_basis"] = f"mean board power ({power['source']}) x mean latency {float(latency_ms):.4g} ms"
        if power is not None and iterations and walltime_s:
            # mW x s = mJ
            out["energy_mj_per_inference_walltime"] = power["mean"] * float(walltime_s) / (int(iterations) * max(1, batch))
            if out["energy_mj_per_inference"] is None:
                out["energy_mj_per_inference"] = out["energy_mj_per_inference_walltime"]
                out["energy_basis"] = f"mean board power ({power['source']}) x walltime / inferences"
        missing = sorted({m for s in samples for m in s.missing})
        if "gpu_freq" in missing or "emc" in missing:
            out["warnings"].append("tegrastats did not print the GPU/EMC clock (JetPack 6 hides it from non-root "
                                   "users): run with sudo for the full picture")
        if power is None:
            out["warnings"].append("tegrastats printed no power rail: no power or energy figure")
        out["missing"] = missing
        return out


def summarize_samples(samples: Sequence[TegrastatsSample]) -> dict:
    """Aggregate parsed samples (mean/min/max) into the JSON the profile report carries."""
    powers = [s.power_mw for s in samples if s.power_mw is not None]
    sources = sorted({s.power_source for s in samples if s.power_source})
    power = _stats(powers)
    if power is not None:
        power["source"] = sources[0] if len(sources) == 1 else " | ".join(sources)
    temps: Dict[str, List[float]] = {}
    for s in samples:
        for name, value in s.temperatures.items():
            temps.setdefault(name, []).append(value)
    rails: Dict[str, List[float]] = {}
    for s in samples:
        for name, rail in s.rails.items():
            rails.setdefault(name, []).append(rail.current_mw)
    hottest = max(((max(v), k) for k, v in temps.items()), default=None)
    gpu_temp = _stats([s.gpu_temp_c for s in samples if s.gpu_temp_c is not None])
    return {
        "power_mw": power,
        "gpu_load_percent": _stats([s.gpu_load for s in samples if s.gpu_load is not None]),
        "gpu_freq_mhz": _stats([s.gpu_freq_mhz for s in samples if s.gpu_freq_mhz is not None]),
        "emc_freq_mhz": _stats([s.emc_freq_mhz for s in samples if s.emc_freq_mhz is not None]),
        "cpu_load_percent": _stats([s.cpu_load_mean for s in samples if s.cpu_load_mean is not None]),
        "gpu_temp_c": gpu_temp,
        "temperatures_c": {k: _stats(v) for k, v in sorted(temps.items())},
        "max_temperature_c": {"sensor": hottest[1], "value": hottest[0]} if hottest else None,
        "ram_used_mb": _stats([s.ram_used_mb for s in samples if s.ram_used_mb is not None]),
        "ram_total_mb": next((s.ram_total_mb for s in samples if s.ram_total_mb is not None), None),
        "rails_mw": {k: _stats(v) for k, v in sorted(rails.items())},
    }


__all__ = ["ClockState", "PowerMode", "Rail", "TegrastatsSample", "TelemetrySampler", "board_power",
           "parse_jetson_clocks", "parse_nvpmodel", "parse_tegrastats", "parse_tegrastats_line", "read_board_state",
           "summarize_samples"]
