"""Latency estimates for a model on a device profile, without the device: a per-layer cost model
(roofline on the profile's peaks and bandwidth, fitted efficiencies) for Jetson / GPU profiles and
a micro-benchmark-calibrated model for ONNX Runtime on this CPU. Every number it returns is an
estimate and carries its measured error band (:class:`edgekit.estimate.result.Estimate`)."""

from edgekit.estimate.device import estimate_fused, estimate_latency
from edgekit.estimate.result import ErrorBand, Estimate, LayerEstimate

__all__ = ["ErrorBand", "Estimate", "LayerEstimate", "estimate_fused", "estimate_latency"]
