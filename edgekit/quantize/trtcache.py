"""The TensorRT calibration cache format lives in :mod:`edgekit.trt.calibration_cache`; re-exported here,
with the check of ``quantize --trt-version``."""

import re

from edgekit.errors import InputError
from edgekit.trt.calibration_cache import (CALIBRATORS, METHOD_CALIBRATOR, CalibrationCache, hex_to_scale,
                                           make_cache, parse_cache, read_cache, scale_to_hex,
                                           version_code, version_tuple, write_cache)

__all__ = ["CALIBRATORS", "METHOD_CALIBRATOR", "CalibrationCache", "check_trt_version", "hex_to_scale",
           "make_cache", "parse_cache", "read_cache", "scale_to_hex", "version_code", "version_tuple",
           "write_cache"]

_VERSION = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.(\d{1,2}))?$")


def check_trt_version(text: str) -> str:
    """``--trt-version`` as ``build`` takes it (X.Y) or with the patch level (X.Y.Z); returns X.Y.Z.

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
