"""Read what trtexec prints (console log) and writes (``--exportTimes`` / ``--exportProfile`` JSON).

trtexec's console output changed over the releases edgekit meets on Jetson boards:

* 7.1 / 7.2 (JetPack 4.4 / 4.5): no ``=== Performance summary ===`` header; a block per metric
  (``Host Latency``, ``Enqueue Time``, ``GPU Compute``) with one value per line (``min: 1.2 ms
  (end to end 1.3 ms)``, ``percentile: 2.9 ms at 99%``), the host block ending in ``throughput: N
  qps`` and ``walltime: N s``. Enqueue Time has no mean there. A one-line variant (``Host Latency:
  min: 1.2 ms, max: ..., percentile: 2.9 ms at 99%``) is read too.
* 8.0 / 8.2: the summary has one percentile (``percentile(99%)`` by default) and an extra
  ``End-to-End Host Latency`` line.
* 8.4: one percentile, no End-to-End line.
* 8.5+ (10.x, 11.x): ``percentile(90%)``, ``(95%)`` and ``(99%)`` on every line.
* with ``--dumpProfile`` and no ``--separateProfileRun`` there is *no* summary at all (the timing is
  not reported because the profiler adds synchronisations); a per-layer table is printed instead.
* a failed run ends in ``&&&& FAILED`` after ``[E]`` lines, which are the only useful error text.

Every line may carry a logger prefix (``[06/26/2023-11:30:51] [I] [TRT] ``), several stacked
timestamps (stdout captured through another logger), or none (pasted fragments). The parser is tolerant: unknown lines are ignored, and what it could not find is said
in :attr:`TrtexecLog.missing` rather than guessed. Numbers are returned exactly as written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from edgekit.errors import InputError
from edgekit.stats import Summary

_TIMESTAMP = re.compile(r"^\[\d{1,2}/\d{1,2}/\d{4}-\d{1,2}:\d{2}:\d{2}\]\s?")
_SEVERITY = re.compile(r"^\[(?P<sev>[IWEVF])\]\s?")
_TRT_TAG = re.compile(r"^\[TRT\]\s?")
_VERSION_TAG = re.compile(r"\[TensorRT v(?P<num>\d+)\]")
_VERSION_LINE = re.compile(r"^TensorRT version:\s*(?P<v>[0-9.]+)\s*$")
_STATUS = re.compile(r"^&&&& (?P<status>RUNNING|PASSED|FAILED|WAIVED)\s+\S+\s*(?:\[TensorRT v\d+\])?\s*#\s*(?P<cmd>.*)$")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf"
_STAT_LINE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9 \-]*?):\s*(?P<body>min\s*[=:].*)$")
# 8.x+ "percentile(99%) = 2.9 ms"; 7.x "percentile: 2.9 ms at 99%" (and "min: 1.2 ms")
_STAT_ITEM = re.compile(r"(?P<key>min|max|mean|median|percentile\((?P<p>[0-9.]+)%\))\s*=\s*(?P<val>" + _NUM + r")\s*ms"
                        r"|(?P<key7>min|max|mean|median|percentile):\s*(?P<val7>" + _NUM + r")\s*ms"
                        r"(?:\s*at\s*(?P<p7>[0-9.]+)%)?")
_THROUGHPUT = re.compile(r"^Throughput:\s*(?P<v>" + _NUM + r")\s*qps", re.I)
# trtexec 7.x: a header line per metric, then one statistic per line
_BLOCK7_HEAD = re.compile(r"^(?P<name>Host Latency|GPU Compute|Enqueue Time)$")
_BLOCK7_STAT = re.compile(r"^(?P<key>min|max|mean|median|percentile):\s*(?P<v>" + _NUM + r")\s*ms"
                          r"(?:\s*at\s*(?P<p>[0-9.]+)%)?"
                          r"(?:\s*\(end to end\s*(?P<e2e>" + _NUM + r")\s*ms(?:\s*at\s*[0-9.]+%)?\))?\s*$")
_BLOCK7_TOTAL = re.compile(r"^(?P<key>throughput|walltime|total compute time):\s*(?P<v>" + _NUM + r")\s*(?:qps|s)\s*$")
_WALLTIME = re.compile(r"^Total Host Walltime:\s*(?P<v>" + _NUM + r")\s*s")
_GPU_TOTAL = re.compile(r"^Total GPU Compute Time:\s*(?P<v>" + _NUM + r")\s*s")
_CV = re.compile(r"coefficient of variance\s*=\s*(?P<v>" + _NUM + r")\s*%")
_TRACE = re.compile(r"^Timing trace has (?P<n>\d+) queries over (?P<s>" + _NUM + r") s")
_DEVICE = re.compile(r"^Selected Device:\s*(?P<v>.+?)\s*$")
_CC = re.compile(r"^Compute Capability:\s*(?P<v>[0-9.]+)")
_SPARSE_ELIGIBLE = re.compile(r"\(Sparsity\) Layers eligible for sparse math:\s*(?P<v>.*)$")
_SPARSE_PICKED = re.compile(r"\(Sparsity\) TRT inference plan picked sparse implementation for layers:\s*(?P<v>.*)$")
# 8.4+: "Layer 'NAME' (TYPE): Unsupported on DLA. Switching this layer's device type to GPU."
_DLA_FALLBACK_NEW = re.compile(r"Layer '(?P<name>.+)' \((?P<type>[A-Za-z_]+)\): (?P<why>[^.]*on DLA[^.]*)\. Switching this layer's device type to GPU")
# 7.x/8.0-8.2: "Default DLA is enabled but layer NAME is not supported on DLA, falling back to GPU."
_DLA_FALLBACK_OLD = re.compile(r"(?:Default DLA is enabled but )?layer (?P<name>.+?) is not supported on DLA, falling back to GPU")
_PLACED = re.compile(r"^\[(?P<where>GpuLayer|DlaLayer)\]\s*(?P<name>.+?)\s*$")
_PROFILE_HEAD = re.compile(r"^=== Profile \((?P<n>\d+) iterations\s*\) ===")
_PROFILE_ROW = re.compile(r"^\s*(?P<name>\S.*?)\s+(?P<nums>(?:" + _NUM + r")(?:\s+(?:" + _NUM + r")){2,3})\s*$")

# Summary line names -> edgekit keys. Unknown stat lines are kept under a slug of their name.
METRIC_KEYS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end_host_latency",
    "Enqueue Time": "enqueue_time",
    "H2D Latency": "h2d_latency",
    "GPU Compute Time": "gpu_compute_time",
    "D2H Latency": "d2h_latency",
    # 7.x names
    "Host Latency": "latency",
    "GPU Compute": "gpu_compute_time",
}
_LEGACY_NAMES = ("Host Latency", "GPU Compute")


@dataclass
class Stat:
    """One summary line: min/max/mean/median and whatever percentiles that trtexec printed (ms)."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: Dict[float, float] = field(default_factory=dict)

    def percentile(self, p: float) -> Optional[float]:
        return self.percentiles.get(float(p))

    def to_dict(self) -> Dict[str, Optional[float]]:
        d: Dict[str, Optional[float]] = {"min": self.min, "max": self.max, "mean": self.mean, "median": self.median}
        for p, v in sorted(self.percentiles.items()):
            d["p" + (str(int(p)) if float(p).is_integer() else str(p))] = v
        return d


@dataclass
class ProfileLayer:
    name: str
    time_ms: float
    average_ms: float
    median_ms: Optional[float]
    percentage: float

    def to_dict(self) -> dict:
        return {"name": self.name, "time_ms": self.time_ms, "average_ms": self.average_ms,
                "median_ms": self.median_ms, "percentage": self.percentage}


@dataclass
class LayerProfile:
    """Per-layer times from ``--dumpProfile`` (console table) or ``--exportProfile`` (JSON)."""

    iterations: Optional[int]
    layers: List[ProfileLayer]
    total: Optional[ProfileLayer] = None

    def to_dict(self) -> dict:
        return {"iterations": self.iterations, "layers": [l.to_dict() for l in self.layers],
                "total": self.total.to_dict() if self.total else None}


@dataclass
class DlaFallback:
    name: str
    layer_type: str
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.layer_type, "reason": self.reason}


@dataclass
class TrtexecLog:
    """Everything edgekit reads from one trtexec console log."""

    status: str = "unknown"  # passed | failed | running (log cut before the end) | unknown
    command: Optional[str] = None
    trt_version: Optional[str] = None  # dotted, e.g. "8.2.1", "10.3.0"
    device_name: Optional[str] = None
    compute_capability: Optional[str] = None
    throughput_qps: Optional[float] = None
    metrics: Dict[str, Stat] = field(default_factory=dict)
    total_host_walltime_s: Optional[float] = None
    total_gpu_compute_time_s: Optional[float] = None
    summary_warnings: List[str] = field(default_factory=list)
    gpu_compute_cv_percent: Optional[float] = None
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    sparsity_eligible: Optional[List[str]] = None
    sparsity_picked: Optional[List[str]] = None
    dla_fallback: List[DlaFallback] = field(default_factory=list)
    dla_layers: List[str] = field(default_factory=list)
    gpu_layers: List[str] = field(default_factory=list)
    profile: Optional[LayerProfile] = None
    trace_queries: Optional[int] = None
    trace_seconds: Optional[float] = None
    no_summary_reason: Optional[str] = None

    @property
    def has_summary(self) -> bool:
        return bool(self.metrics) or self.throughput_qps is not None

    @property
    def failed(self) -> bool:
        return self.status == "failed" or (self.status != "passed" and bool(self.errors))

    @property
    def missing(self) -> List[str]:
        """What a full summary would have and this log lacks (so callers can say so)."""
        out = []
        if self.throughput_qps is None:
            out.append("throughput")
        for key in ("latency", "gpu_compute_time", "h2d_latency", "d2h_latency", "enqueue_time"):
            if key not in self.metrics:
                out.append(key)
        if self.trt_version is None:
            out.append("trt_version")
        return out

    def error_text(self, limit: int = 12) -> str:
        """trtexec's own error lines, for a BuildError message."""
        lines = self.errors[-limit:] if self.errors else []
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "status": self.status, "command": self.command, "trt_version": self.trt_version,
            "device_name": self.device_name, "compute_capability": self.compute_capability,
            "has_summary": self.has_summary, "no_summary_reason": self.no_summary_reason,
            "throughput_qps": self.throughput_qps,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "total_host_walltime_s": self.total_host_walltime_s,
            "total_gpu_compute_time_s": self.total_gpu_compute_time_s,
            "summary_warnings": list(self.summary_warnings), "gpu_compute_cv_percent": self.gpu_compute_cv_percent,
            "errors": list(self.errors),
            "sparsity": {"eligible": self.sparsity_eligible, "picked": self.sparsity_picked},
            "dla_fallback": [f.to_dict() for f in self.dla_fallback],
            "dla_layers": list(self.dla_layers), "gpu_layers": list(self.gpu_layers),
            "profile": self.profile.to_dict() if self.profile else None,
            "trace_queries": self.trace_queries, "trace_seconds": self.trace_seconds,
        }


def version_from_tag(number: Union[str, int]) -> str:
    """trtexec's packed version number -> dotted: 8201 -> '8.2.1', 100300 -> '10.3.0'.

    8.x packs ``major*1000 + minor*100 + patch``; from 10.0 it is ``major*10000 + minor*100 + patch``.
    """
    n = int(number)
    if n >= 100000:
        return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
    return f"{n // 1000}.{(n % 1000) // 100}.{n % 100}"


def strip_prefix(line: str) -> Tuple[Optional[str], str]:
    """Remove the timestamp(s) / severity / [TRT] prefixes; return (severity letter or None, text).

    Timestamps may be stacked (``[date] [date] &&&& FAILED ...`` when trtexec's stdout went through
    a second logger); each one is removed, before or after the severity tag."""
    text = line.rstrip("\r\n")
    sev = None
    while True:
        m = _TIMESTAMP.match(text)
        if m:
            text = text[m.end():]
            continue
        m = _SEVERITY.match(text) if sev is None else None
        if m:
            sev = m.group("sev")
            text = text[m.end():]
            continue
        break
    text = _TRT_TAG.sub("", text, count=1)
    return sev, text


def _num(text: str) -> float:
    return float(text)


def _split_layers(text: str) -> List[str]:
    text = text.strip()
    if not text or text.lower() in ("none", "(none)"):
        return []
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_stat_body(body: str) -> Optional[Stat]:
    values: Dict[str, float] = {}
    pct: Dict[float, float] = {}
    for m in _STAT_ITEM.finditer(body):
        key, val, p = (m.group("key"), m.group("val"), m.group("p")) if m.group("key") else \
            (m.group("key7"), m.group("val7"), m.group("p7"))
        if key.startswith("percentile"):
            if p is not None:
                pct[float(p)] = _num(val)
        else:
            values[key] = _num(val)
    if not all(k in values for k in ("min", "max", "mean", "median")):
        return None
    return Stat(values["min"], values["max"], values["mean"], values["median"], pct)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def parse_log(text: str) -> TrtexecLog:
    """Parse one trtexec console log (any version 7.x-11.x, with or without logger prefixes)."""
    reader = _LogReader()
    for raw in text.splitlines():
        if raw.strip():
            reader.feed(raw)
    return reader.finish()


class _LogReader:
    """:func:`parse_log`'s state while it walks the lines: the section it is in (performance
    summary, per-layer profile), whether the last line was an error, and the profile rows so far."""

    def __init__(self) -> None:
        self.log = TrtexecLog()
        self.in_summary = False
        self.in_profile = False
        self.profile_rows: List[ProfileLayer] = []
        self.profile_total: Optional[ProfileLayer] = None
        self.profile_iters: Optional[int] = None
        self.last_was_error = False
        self.saw_e2e_notice = False
        self.block: Optional[_Block7] = None

    def feed(self, raw: str) -> None:
        has_ts = bool(_TIMESTAMP.match(raw))
        sev, line = strip_prefix(raw)
        line_s = line.strip()
        if self._status(line_s):
            return
        # An [E] message can continue on lines with no prefix at all (assertion text).
        if sev is None and not has_ts and self.last_was_error and not line_s.startswith(("&&&&", "===")):
            self.log.errors.append(line_s)
            return
        self.last_was_error = sev in ("E", "F")
        if self.last_was_error:
            self.log.errors.append(line_s)
        if self._block7(line_s):
            return
        if self._section(line_s) or _read_fact(self.log, line_s):
            return
        if not self.in_summary and not self.in_profile and _read_legacy_line(self.log, line_s):
            return
        if "e2e network timing is not reported" in line_s:
            self.saw_e2e_notice = True
        if self.in_profile:
            self._profile_row(line, line_s)
            return
        if self.in_summary and _read_summary_line(self.log, sev, line_s):
            return
        if sev == "W":
            self.log.warnings.append(line_s)

    def _status(self, line_s: str) -> bool:
        """``&&&& RUNNING|PASSED|FAILED ...``: the run's status and command line; ends any section."""
        status = _STATUS.match(line_s)
        if not status:
            return False
        log = self.log
        st = status.group("status").lower()
        if st != "running" or log.status == "unknown":
            log.status = st
        log.command = status.group("cmd").strip() or log.command
        tag = _VERSION_TAG.search(line_s)
        if tag and log.trt_version is None:
            log.trt_version = version_from_tag(tag.group("num"))
        self.in_summary = self.in_profile = False
        self.last_was_error = False
        self._close_block()
        return True

    def _block7(self, line_s: str) -> bool:
        """trtexec 7.x: a metric name alone on a line opens a block of one statistic per line."""
        head = _BLOCK7_HEAD.match(line_s)
        if head:
            self._close_block()
            self.block = _Block7(head.group("name"))
            return True
        if self.block is None:
            return False
        m = _BLOCK7_STAT.match(line_s)
        if m:
            self.block.add(m.group("key"), _num(m.group("v")), m.group("p"), m.group("e2e"))
            return True
        m = _BLOCK7_TOTAL.match(line_s)
        if m:
            attr = {"throughput": "throughput_qps", "walltime": "total_host_walltime_s",
                    "total compute time": "total_gpu_compute_time_s"}[m.group("key")]
            setattr(self.log, attr, _num(m.group("v")))
            return True
        self._close_block()
        return False

    def _close_block(self) -> None:
        if self.block is not None:
            self.block.store(self.log)
            self.block = None

    def _section(self, line_s: str) -> bool:
        """``=== NAME ===`` starts a section: the performance summary, a profile, or another one."""
        if not line_s.startswith("=== "):
            return False
        self.in_summary = line_s.startswith("=== Performance summary ===")
        pm = _PROFILE_HEAD.match(line_s)
        self.in_profile = bool(pm)
        if pm:
            self.profile_iters = int(pm.group("n"))
        return True

    def _profile_row(self, line: str, line_s: str) -> None:
        pr = _PROFILE_ROW.match(line)
        if not pr or line_s.startswith("Layer "):
            return
        nums = [float(x) for x in pr.group("nums").split()]
        if len(nums) == 4:
            row = ProfileLayer(pr.group("name"), nums[0], nums[1], nums[2], nums[3])
        else:
            row = ProfileLayer(pr.group("name"), nums[0], nums[1], None, nums[2])
        if row.name == "Total":
            self.profile_total = row
        else:
            self.profile_rows.append(row)

    def finish(self) -> TrtexecLog:
        self._close_block()
        log = self.log
        if self.profile_rows or self.profile_total:
            log.profile = LayerProfile(self.profile_iters, self.profile_rows, self.profile_total)
        if not log.has_summary:
            if log.failed:
                log.no_summary_reason = "trtexec failed: " + (log.errors[-1] if log.errors else "see the log")
            elif self.saw_e2e_notice:
                log.no_summary_reason = ("no performance summary: trtexec does not report end-to-end timing when "
                                         "--dumpProfile runs without --separateProfileRun")
            else:
                log.no_summary_reason = "no '=== Performance summary ===' block in the log"
        return log


class _Block7:
    """The values of one 7.x metric block so far (and its "end to end" twins for Host Latency)."""

    def __init__(self, name: str) -> None:
        self.key = METRIC_KEYS.get(name, _slug(name))
        self.values: Dict[str, float] = {}
        self.pct: Dict[float, float] = {}
        self.e2e: Dict[str, float] = {}
        self.e2e_pct: Dict[float, float] = {}

    def add(self, key: str, value: float, p: Optional[str], e2e: Optional[str]) -> None:
        if key == "percentile":
            if p is None:
                return
            self.pct[float(p)] = value
            if e2e is not None:
                self.e2e_pct[float(p)] = _num(e2e)
            return
        self.values[key] = value
        if e2e is not None:
            self.e2e[key] = _num(e2e)

    def store(self, log: TrtexecLog) -> None:
        """Complete statistics only (7.x prints Enqueue Time without a mean: it stays missing)."""
        for key, values, pct in ((self.key, self.values, self.pct),
                                 ("end_to_end_host_latency", self.e2e, self.e2e_pct)):
            if all(k in values for k in ("min", "max", "mean", "median")) and key not in log.metrics:
                log.metrics[key] = Stat(values["min"], values["max"], values["mean"], values["median"], dict(pct))


def _read_legacy_line(log: TrtexecLog, line_s: str) -> bool:
    """Outside a summary section: a one-line 7.x statistic (``Host Latency: min: ...``) or the
    throughput (``Throughput: N qps``)."""
    m = _THROUGHPUT.match(line_s)
    if m and log.throughput_qps is None:
        log.throughput_qps = _num(m.group("v"))
        return True
    m = _STAT_LINE.match(line_s)
    if m and m.group("name").strip() in _LEGACY_NAMES:
        stat = parse_stat_body(m.group("body"))
        if stat is not None:
            log.metrics.setdefault(METRIC_KEYS[m.group("name").strip()], stat)
            return True
    return False


def _read_fact(log: TrtexecLog, line_s: str) -> bool:
    """Lines that say something wherever they appear: version, GPU, sparsity, DLA placement, trace."""
    m = _VERSION_LINE.match(line_s)
    if m:
        v = m.group("v")
        log.trt_version = v if "." in v else version_from_tag(v)
        return True
    m = _DEVICE.match(line_s)
    if m and log.device_name is None:
        log.device_name = m.group("v")
        return True
    m = _CC.match(line_s)
    if m and log.compute_capability is None:
        log.compute_capability = m.group("v")
        return True
    m = _SPARSE_ELIGIBLE.search(line_s)
    if m:
        log.sparsity_eligible = (log.sparsity_eligible or []) + _split_layers(m.group("v"))
        return True
    m = _SPARSE_PICKED.search(line_s)
    if m:
        log.sparsity_picked = (log.sparsity_picked or []) + _split_layers(m.group("v"))
        return True
    return _read_placement(log, line_s)


def _read_placement(log: TrtexecLog, line_s: str) -> bool:
    """DLA fallback notices (both wordings), [GpuLayer] / [DlaLayer] lines, the timing trace size."""
    m = _DLA_FALLBACK_NEW.search(line_s)
    if m:
        log.dla_fallback.append(DlaFallback(m.group("name"), m.group("type"), m.group("why").strip()))
        return True
    m = _DLA_FALLBACK_OLD.search(line_s)
    if m:
        log.dla_fallback.append(DlaFallback(m.group("name"), "", "not supported on DLA"))
        return True
    m = _PLACED.match(line_s)
    if m:
        (log.dla_layers if m.group("where") == "DlaLayer" else log.gpu_layers).append(m.group("name"))
        return True
    m = _TRACE.match(line_s)
    if m:
        log.trace_queries, log.trace_seconds = int(m.group("n")), _num(m.group("s"))
        return True
    return False


def _read_summary_line(log: TrtexecLog, sev: Optional[str], line_s: str) -> bool:
    """One line of the performance summary: totals, a statistics line, or a stability warning."""
    for pattern, attr in ((_THROUGHPUT, "throughput_qps"), (_WALLTIME, "total_host_walltime_s"),
                          (_GPU_TOTAL, "total_gpu_compute_time_s")):
        m = pattern.match(line_s)
        if m:
            setattr(log, attr, _num(m.group("v")))
            return True
    m = _STAT_LINE.match(line_s)
    if m:
        stat = parse_stat_body(m.group("body"))
        if stat is not None:
            log.metrics[METRIC_KEYS.get(m.group("name").strip(), _slug(m.group("name")))] = stat
            return True
    if sev == "W" or "unstable" in line_s:
        text_w = line_s.lstrip("* ").strip()
        if text_w:
            log.summary_warnings.append(text_w)
            cv = _CV.search(text_w)
            if cv and "GPU compute" in text_w:
                log.gpu_compute_cv_percent = _num(cv.group("v"))
        return True
    return False


def parse_log_file(path: Union[str, Path]) -> TrtexecLog:
    return parse_log(Path(path).read_text(errors="replace"))


# ---- --exportTimes ------------------------------------------------------------------------------

# trtexec 8.x+ names, and the 7.x names they replaced (inMs/outMs).
_TIME_ALIASES = {
    "h2d": ("h2dMs", "inMs"),
    "compute": ("computeMs",),
    "d2h": ("d2hMs", "outMs"),
    "latency": ("latencyMs",),
    "start_enq": ("startEnqMs",),
    "end_enq": ("endEnqMs",),
    "start": ("startH2dMs", "startInMs", "startComputeMs"),
    "end": ("endD2hMs", "endOutMs", "endComputeMs"),
}


@dataclass
class ExportedTimes:
    """Per-query records from ``--exportTimes`` (ms), column by column."""

    h2d_ms: List[float]
    gpu_compute_ms: List[float]
    d2h_ms: List[float]
    latency_ms: List[float]
    enqueue_ms: List[float]
    walltime_s: float

    @property
    def count(self) -> int:
        return len(self.latency_ms)

    def summaries(self) -> Dict[str, Summary]:
        """edgekit's trtexec-compatible statistics per phase (:class:`edgekit.stats.Summary`)."""
        out: Dict[str, Summary] = {}
        for key, vals in (("latency_ms", self.latency_ms), ("gpu_compute_ms", self.gpu_compute_ms),
                          ("h2d_ms", self.h2d_ms), ("d2h_ms", self.d2h_ms), ("enqueue_ms", self.enqueue_ms)):
            if vals:
                out[key] = Summary.of(vals)
        return out


def _pick(rec: dict, key: str) -> Optional[float]:
    for name in _TIME_ALIASES[key]:
        if name in rec:
            return float(rec[name])
    return None


def parse_export_times(data: Union[str, Path, Sequence[dict]]) -> ExportedTimes:
    """Parse ``--exportTimes`` output (a path, JSON text, or the loaded list)."""
    records = _load_json(data, "--exportTimes")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError("--exportTimes JSON must be a list of per-query records")
    if not records:
        raise InputError("--exportTimes JSON holds no records", hint="the run timed no queries")
    h2d, comp, d2h, lat, enq = [], [], [], [], []
    for i, rec in enumerate(records):
        c = _pick(rec, "compute")
        if c is None:
            raise InputError(f"--exportTimes record {i} has no computeMs field", hint=f"fields: {sorted(rec)}")
        hv, dv = _pick(rec, "h2d") or 0.0, _pick(rec, "d2h") or 0.0
        lv = _pick(rec, "latency")
        comp.append(c)
        h2d.append(hv)
        d2h.append(dv)
        lat.append(lv if lv is not None else hv + c + dv)
        se, ee = _pick(rec, "start_enq"), _pick(rec, "end_enq")
        if se is not None and ee is not None:
            enq.append(ee - se)
    starts = [s for s in (_pick(r, "start") for r in records) if s is not None]
    ends = [e for e in (_pick(r, "end") for r in records) if e is not None]
    wall = (max(ends) - min(starts)) / 1000.0 if starts and ends else sum(lat) / 1000.0
    return ExportedTimes(h2d, comp, d2h, lat, enq, wall)


def parse_export_profile(data: Union[str, Path, Sequence[dict]]) -> LayerProfile:
    """Parse ``--exportProfile`` output: ``[{"count": N}, {name, timeMs, averageMs, [medianMs,] percentage}, ...]``."""
    items = _load_json(data, "--exportProfile")
    if not isinstance(items, list):
        raise InputError("--exportProfile JSON must be a list")
    count = None
    layers: List[ProfileLayer] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "count" in item and "name" not in item:
            count = int(item["count"])
            continue
        if "name" not in item:
            continue
        layers.append(ProfileLayer(
            name=str(item["name"]), time_ms=float(item.get("timeMs", math.nan)),
            average_ms=float(item.get("averageMs", math.nan)),
            median_ms=float(item["medianMs"]) if "medianMs" in item else None,
            percentage=float(item.get("percentage", math.nan)),
        ))
    return LayerProfile(count, layers)


def _load_json(data, what: str):
    if isinstance(data, (list, tuple)):
        return list(data)
    if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith(("[", "{"))):
        p = Path(data)
        if not p.exists():
            raise InputError(f"{what} file not found: {p}")
        data = p.read_text()
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} output is not valid JSON: {exc}") from exc
