"""Moved to :mod:`edgekit.trt.trtexec_log` (trtexec's output is TensorRT knowledge); re-exported here."""

from edgekit.trt.trtexec_log import (METRIC_KEYS, DlaFallback, ExportedTimes, LayerProfile, ProfileLayer, Stat,
                                     TrtexecLog, parse_export_profile, parse_export_times, parse_log, parse_log_file,
                                     parse_stat_body, strip_prefix, version_from_tag)

__all__ = ["METRIC_KEYS", "DlaFallback", "ExportedTimes", "LayerProfile", "ProfileLayer", "Stat", "TrtexecLog",
           "parse_export_profile", "parse_export_times", "parse_log", "parse_log_file", "parse_stat_body",
           "strip_prefix", "version_from_tag"]
