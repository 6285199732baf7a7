"""Moved to :mod:`edgekit.trt.calibration_cache` (the TensorRT calibration cache format); re-exported here."""

from edgekit.trt.calibration_cache import (CALIBRATORS, METHOD_CALIBRATOR, CalibrationCache, hex_to_scale,
                                           make_cache, parse_cache, read_cache, scale_to_hex,
                                           version_code, version_tuple, write_cache)

__all__ = ["CALIBRATORS", "METHOD_CALIBRATOR", "CalibrationCache", "hex_to_scale", "make_cache",
           "parse_cache", "read_cache", "scale_to_hex", "version_code", "version_tuple", "write_cache"]
