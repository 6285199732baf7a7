"""What an estimate returns: the model's estimated latency on one device and precision, the
per-layer breakdown behind it, and the error band measured for the cost model that produced it.
Shared by the device cost model, the CPU estimator, `edgekit estimate` and `edgekit optimize`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional


@dataclass
class LayerEstimate:
    """One fused layer as the cost model sees it (a TensorRT-style fusion of several ONNX nodes)."""

    name: str                 # the ONNX node name of the layer's main node
    op: str                   # op class: "conv", "depthwise", "gemm", "attention", "eltwise", ...
    nodes: List[str]          # every ONNX node folded into this layer (conv+bias+relu+add ...)
    out_shape: List[int]
    macs: int
    bytes_moved: int
    us: float                 # estimated time of this layer, microseconds
    bound: str                # "compute" | "memory" | "overhead" | "unmodelled"


@dataclass
class ErrorBand:
    """How far this cost model's estimates were from measurements, on held-out data."""

    median_abs_pct: float     # median |estimate - measured| / measured, in percent
    within_10_pct: float      # share of held-out figures within +-10 %, 0..1
    within_25_pct: float      # share within +-25 %, 0..1
    n: int                    # how many held-out measurements the band comes from
    method: str               # e.g. "leave-one-model-out over 180 published figures (orin-nx, fp16)"


@dataclass
class Estimate:
    """An estimated (never measured) latency. ``label`` is always "estimate"."""

    device: str
    precision: str
    batch: int
    latency_ms: float
    layers: List[LayerEstimate]
    error_band: Optional[ErrorBand]
    unmodelled: List[str] = field(default_factory=list)   # ops costed by bytes moved only
    notes: List[str] = field(default_factory=list)
    params_version: str = ""                              # which fitted-parameter file was used
    label: str = "estimate"

    @property
    def throughput(self) -> float:
        """Inferences per second at this batch (batch / latency)."""
        return self.batch * 1000.0 / self.latency_ms if self.latency_ms > 0 else 0.0

    def top_layers(self, k: int = 10) -> List[LayerEstimate]:
        return sorted(self.layers, key=lambda layer: layer.us, reverse=True)[:k]

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["throughput"] = self.throughput
        return d
