"""TensorRT INT8 calibration cache: the text file implicit-INT8 builds read instead of calibrating.

Format (TensorRT 8.x-10.x, what ``IInt8Calibrator.write_calibration_cache`` produces)::

    TRT-8502-EntropyCalibration2
    images: 3c010a14
    /conv1/Conv_output_0: 3d2f1e0a

Line 1 names the TensorRT version as one integer and the calibrator. The version integer changed
encoding at TensorRT 10: 8.x uses ``major*1000 + minor*100 + patch`` (8.5.2 -> ``8502``), 10.x
uses ``major*10000 + minor*100 + patch`` (10.3.0 -> ``100300``). Every other line is
``<tensor name>: <hex of the IEEE-754 float32 scale, big-endian bit pattern>``; the scale is the
tensor's dynamic range divided by 127. TensorRT silently ignores a cache whose header does not match
its own version or calibrator and then recalibrates (trtexec with random data!), so
:func:`read_cache` checks the header itself and raises :class:`EngineMismatchError`.

Implicit INT8 (and so this cache) exists only in TensorRT 8.x-10.x; it was removed in 11.0.
Nothing here runs TensorRT: this module only reads, writes and checks the text (``edgekit quantize``
writes it, the engine build checks its header before TensorRT reads it).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from edgekit.errors import CalibrationError, EngineMismatchError, InputError
from edgekit.graph.io import atomic_output

# Calibrator class -> name in the header.
CALIBRATORS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
# edgekit calibration method -> header calibrator. TensorRT has no percentile calibrator; a percentile
# cache carries the EntropyCalibration2 header, which is what trtexec's own calibrator uses, so that
# `trtexec --int8 --calib=cache` accepts it.
METHOD_CALIBRATOR = {"entropy": "EntropyCalibration2", "percentile": "EntropyCalibration2", "minmax": "MinMaxCalibration"}

_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")


def version_code(version: Union[str, int, Tuple[int, ...]]) -> int:
    """'8.5.2' -> 8502, '10.3' -> 100300, 8502 -> 8502 (an int is taken as already encoded)."""
    if isinstance(version, int):
        return version
    if isinstance(version, str):
        text = version.strip()
        if text.isdigit() and len(text) >= 4:
            return int(text)
        try:
            parts = tuple(int(p) for p in text.split(".")[:3])
        except ValueError:
            raise InputError(f"not a TensorRT version: {version!r}", hint="write it like 8.6.2 or 10.3.0") from None
    else:
        parts = tuple(int(p) for p in version[:3])
    major, minor, patch = (list(parts) + [0, 0, 0])[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def version_tuple(code: int) -> Tuple[int, int, int]:
    """8502 -> (8, 5, 2); 100300 -> (10, 3, 0)."""
    if code >= 100000:
        return code // 10000, (code // 100) % 100, code % 100
    return code // 1000, (code // 100) % 10, code % 100


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


@dataclass
class CalibrationCache:
    version: int  # encoded header integer (8502, 100300, ...)
    calibrator: str = "EntropyCalibration2"
    scales: Dict[str, float] = field(default_factory=dict)  # tensor name -> scale (= amax / 127)

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.calibrator}"

    @property
    def version_string(self) -> str:
        return ".".join(str(p) for p in version_tuple(self.version))

    def dynamic_ranges(self) -> Dict[str, float]:
        """tensor -> amax (what ``ITensor.dynamic_range`` / set_dynamic_range wants)."""
        return {k: v * 127.0 for k, v in self.scales.items()}

    def to_text(self) -> str:
        lines = [self.header]
        for name, s in self.scales.items():
            if ":" in name and name.rsplit(":", 1)[-1].strip() == "":
                raise InputError(f"tensor name {name!r} cannot be written to a calibration cache")
            lines.append(f"{name}: {scale_to_hex(s)}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"header": self.header, "version": self.version_string, "calibrator": self.calibrator,
                "tensors": len(self.scales)}


def make_cache(scales: Dict[str, float], trt_version: Union[str, int], method: str = "entropy",
               calibrator: Optional[str] = None) -> CalibrationCache:
    cal = calibrator or METHOD_CALIBRATOR.get(method, "EntropyCalibration2")
    if cal not in CALIBRATORS:
        raise InputError(f"unknown TensorRT calibrator {cal!r}", hint="one of " + ", ".join(CALIBRATORS))
    bad = [k for k, v in scales.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise CalibrationError(f"non-positive or non-finite scale for tensor(s) {bad[:3]}")
    code = version_code(trt_version)
    if version_tuple(code)[0] >= 11:
        raise InputError("TensorRT 11 removed implicit INT8 calibration: a calibration cache is useless there",
                         hint="use the QDQ ONNX (explicit quantization) for TensorRT 11")
    return CalibrationCache(code, cal, dict(scales))


def write_cache(path: Union[str, Path], cache: CalibrationCache) -> Path:
    """Write atomically (no half-written cache on error)."""
    text = cache.to_text()
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def parse_cache(text: str, source: str = "<cache>") -> CalibrationCache:
    lines = [ln.rstrip("\r") for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise InputError(f"{source}: empty calibration cache")
    m = _HEADER.match(lines[0].strip())
    if not m:
        raise InputError(f"{source}: first line {lines[0][:60]!r} is not a TensorRT cache header",
                         hint="expected e.g. TRT-8502-EntropyCalibration2")
    cache = CalibrationCache(int(m.group(1)), m.group(2), {})
    for i, ln in enumerate(lines[1:], start=2):
        name, sep, hx = ln.rpartition(":")
        hx = hx.strip()
        if not sep or not name or not re.fullmatch(r"[0-9a-fA-F]{1,8}", hx):
            raise InputError(f"{source}:{i}: not a 'tensor: hexscale' line: {ln[:80]!r}")
        cache.scales[name.strip()] = hex_to_scale(hx)
    return cache


def read_cache(path: Union[str, Path], expect_version: Union[str, int, None] = None,
               expect_calibrator: Optional[str] = None, match: str = "exact") -> CalibrationCache:
    """Read a cache; with ``expect_version`` refuse one written for another TensorRT.

    ``match``: ``"exact"`` compares the whole version (what TensorRT itself does), ``"minor"``
    compares major.minor only.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such calibration cache: {p}")
    cache = parse_cache(p.read_text(errors="replace"), str(p))
    if expect_version is not None:
        want = version_code(expect_version)
        got_t, want_t = version_tuple(cache.version), version_tuple(want)
        same = cache.version == want if match == "exact" else got_t[:2] == want_t[:2]
        if not same:
            raise EngineMismatchError(
                f"{p} was written for TensorRT {cache.version_string} (header {cache.header}), "
                f"not {'.'.join(map(str, want_t))}: TensorRT would silently ignore it and recalibrate",
                hint="re-run `edgekit quantize ... --trt-version X.Y.Z` for the board's TensorRT",
            )
    if expect_calibrator is not None and cache.calibrator != expect_calibrator:
        raise EngineMismatchError(f"{p} comes from {cache.calibrator}, the build uses {expect_calibrator}",
                                  hint="TensorRT ignores a cache from another calibrator")
    return cache


def check_cache_version(path: Union[str, Path], trt_version: str, exact: bool = False) -> CalibrationCache:
    """Refuse a calibration cache written by another TensorRT version (EngineMismatchError).

    ``exact`` compares the whole version, as TensorRT does when it reads the cache; otherwise
    major.minor, which is what a plan for a board's TensorRT release can promise.
    """
    return read_cache(path, expect_version=trt_version, match="exact" if exact else "minor")


_VERSION = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.(\d{1,2}))?$")


def check_trt_version(text: str) -> str:
    """``quantize --trt-version`` as ``build`` takes it (X.Y) or with the patch level (X.Y.Z); returns X.Y.Z.

    Checked before any work, so a typo does not cost a whole calibration.
    """
    m = _VERSION.match(str(text).strip())
    if not m:
        raise InputError(f"--trt-version must look like X.Y or X.Y.Z (8.5, 8.5.2, 10.3), got {text!r}")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if not 7 <= major <= 10:
        raise InputError(f"--trt-version {text}: TensorRT calibration caches exist for TensorRT 7 to 10",
                         hint="TensorRT 11 removed implicit INT8 calibration: use the QDQ ONNX with --no-cache")
    return f"{major}.{minor}.{patch}"
