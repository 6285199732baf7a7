"""The TensorRT calibration cache format lives in :mod:`edgekit.trt.calibration_cache`; re-exported here
for old imports."""

from edgekit.trt.calibration_cache import (CALIBRATORS, METHOD_CALIBRATOR, CalibrationCache, check_trt_version,
                                           hex_to_scale, make_cache, parse_cache, read_cache, scale_to_hex,
                                           version_code, version_tuple, write_cache)

__all__ = ["CALIBRATORS", "METHOD_CALIBRATOR", "CalibrationCache", "check_trt_version", "hex_to_scale",
           "make_cache", "parse_cache", "read_cache", "scale_to_hex", "version_code", "version_tuple",
           "write_cache"]
