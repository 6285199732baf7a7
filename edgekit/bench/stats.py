"""Moved to :mod:`edgekit.stats` (the bottom layer, so runtime and trt can use it); re-exported here."""

from edgekit.stats import CV_WARN_PERCENT, PERCENTILES, LatencyReport, Summary, median, percentile

__all__ = ["CV_WARN_PERCENT", "PERCENTILES", "LatencyReport", "Summary", "median", "percentile"]
