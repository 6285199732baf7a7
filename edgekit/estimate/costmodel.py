"""The device cost model: per fused layer, a roofline on the profile's peak for the precision
(with a fitted efficiency that rises with the layer's size, per op class) and on its memory
bandwidth, plus a fixed launch cost per layer and per engine run.

    t_layer = max(MACs_padded / (peak * e_class * w / (w + w_half_class) * g / (g + g_half)),
                  bytes / (bandwidth * e_mem)) + launch

``w`` is the layer's MMACs and ``g`` its channels per group (the GEMM's narrow side; the head
size for attention): small and narrow layers do not fill the tensor cores.
    latency = device_scale * (sum t_layer + overhead)

Channel counts are padded to 8 (FP16) / 32 (INT8) on tensor-core boards, as TensorRT's kernels
do. Fitted classes (``PARAM_CLASS``): kxk conv, 1x1 conv, weight GEMM (attention's batched GEMMs
share its curve: too few figures to fit their own), depthwise. ``e_class``, ``w_half``, ``e_mem``,
launch and overhead are shared by all boards; a board
without tensor cores gets one extra factor; ``device_scale`` absorbs what a board's software
stack adds and is shrunk toward 1 when a board has few figures. The numbers come from
``params/device-v2.json`` (fitted by ``edgekit.estimate.calibrate``) and, when the user refit
a board, from a local calibration file that overrides its scale.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edgekit.devices import DeviceProfile
from edgekit.errors import InputError
from edgekit.estimate.layers import COMPUTE_CLASSES, FIT_CLASSES, PARAM_CLASS, Layer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 on older JetPacks
    import tomli as tomllib

PARAMS_FILE = Path(__file__).parent / "params" / "device-v2.json"
BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
PAD = {"fp32": (1,), "fp16": (8,), "int8": (4, 32)}
SPARSE_SPEEDUP = 1.25     # 2:4 sparse kernels on eligible layers; no figures to fit it on (uncalibrated)
MEMORY_CLASSES = ("eltwise", "pool", "reduce", "data", "unmodelled")


@dataclass(frozen=True)
class Compute:
    """A profile's ``[compute]`` table at one power mode."""

    fp32_tflops: float
    fp16_tflops: float
    int8_tops: float
    bandwidth_gbs: float
    tensor_cores: bool
    dla_int8_tops: float = 0.0
    power_mode: str = ""
    tf32: bool = False       # Ampere and newer: TensorRT runs FP32 convs / GEMMs as TF32 by default

    def peak(self, precision: str) -> float:
        """Dense ops per second (MAC = 2 ops) for ``precision``."""
        fp32 = max(self.fp32_tflops, self.fp16_tflops / 2) if self.tf32 else self.fp32_tflops
        return 1e12 * {"fp32": fp32, "fp16": self.fp16_tflops, "int8": self.int8_tops}[precision]


def load_compute(profile: DeviceProfile, power_mode: Optional[str] = None) -> Compute:
    """The ``[compute]`` table of ``profile`` (its TOML file), scaled to ``power_mode``'s GPU clock."""
    try:
        raw = tomllib.loads(Path(profile.source).read_text()).get("compute")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read device profile {profile.source}: {exc}") from exc
    if not isinstance(raw, dict) or not raw.get("fp16_tflops"):
        raise InputError(f"device '{profile.name}' has no [compute] table: it cannot be estimated",
                         hint=f"add peak TOPS and bandwidth under [compute] in {Path(profile.source).name}")
    mode = power_mode or profile.default_power_mode
    scale, bw = 1.0, float(raw.get("memory_bandwidth_gbs", profile.memory_bandwidth_gbs))
    modes = raw.get("modes", {})
    if power_mode and power_mode not in modes:
        known = ", ".join(modes) or "none"
        raise InputError(f"power mode '{power_mode}' has no clocks in the '{profile.name}' profile",
                         hint=f"modes with clocks: {known}")
    if mode in modes:
        scale = float(modes[mode].get("gpu_mhz", raw["gpu_mhz"])) / float(raw["gpu_mhz"])
        bw = float(modes[mode].get("memory_bandwidth_gbs", bw))
    return Compute(fp32_tflops=raw["fp32_tflops"] * scale, fp16_tflops=raw["fp16_tflops"] * scale,
                   int8_tops=raw["int8_tops"] * scale, bandwidth_gbs=bw, tensor_cores=bool(raw.get("tensor_cores")),
                   dla_int8_tops=float(raw.get("dla_int8_tops", 0.0)) * scale, power_mode=mode or "",
                   tf32=bool(raw.get("tensor_cores")) and _sm_major(profile.sm) >= 8)


def _sm_major(sm: str) -> int:
    try:
        return int(str(sm).split(".")[0])
    except ValueError:
        return 0


@dataclass
class Params:
    """The fitted numbers (see the module docstring). ``log_*`` are natural logs."""

    version: str
    e_class: Dict[str, float]          # peak efficiency per fitted class (FIT_CLASSES), 0..1
    w_half: Dict[str, float]           # MMACs at which a layer reaches half of e_class
    e_mem: float                       # share of the bandwidth memory-bound kernels reach
    launch_us: float
    overhead_us: float
    no_tc_factor: float                # efficiency multiplier on boards without tensor cores
    int8_factor: float                 # INT8 kernels' efficiency relative to FP16's
    graph_launch_factor: float = 1.0   # launch cost under CUDA graphs relative to plain enqueue
    g_half: float = 16.0               # channels per group at which a layer reaches half efficiency
    device_scale: Dict[str, float] = field(default_factory=dict)
    bands: Dict[str, dict] = field(default_factory=dict)   # "device/precision" -> ErrorBand fields

    @classmethod
    def load(cls, path: Path = PARAMS_FILE) -> "Params":
        data = json.loads(Path(path).read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    VECTOR_KEYS = ("e_mem", "launch_us", "overhead_us", "no_tc_factor", "int8_factor", "graph_launch_factor",
                   "g_half")

    def to_vector(self) -> np.ndarray:
        v = [math.log(self.e_class[c]) for c in FIT_CLASSES] + [math.log(self.w_half[c]) for c in FIT_CLASSES]
        return np.array(v + [math.log(getattr(self, k)) for k in self.VECTOR_KEYS])

    @classmethod
    def from_vector(cls, v: np.ndarray, version: str, device_scale: Optional[Dict[str, float]] = None) -> "Params":
        n = len(FIT_CLASSES)
        e = {c: float(min(1.0, math.exp(v[i]))) for i, c in enumerate(FIT_CLASSES)}
        w = {c: float(math.exp(v[n + i])) for i, c in enumerate(FIT_CLASSES)}
        rest = {k: float(math.exp(x)) for k, x in zip(cls.VECTOR_KEYS, v[2 * n:])}
        rest["e_mem"] = min(1.0, rest["e_mem"])
        return cls(version=version, e_class=e, w_half=w, device_scale=dict(device_scale or {}), **rest)


def _pad(c: int, m: int) -> int:
    return -(-c // m) * m if c else c


@dataclass
class LayerArrays:
    """Layers as columns (one row per layer, possibly of many models / boards / precisions): what
    the vectorised cost formula reads, so fitting over hundreds of figures stays fast."""

    cls: np.ndarray        # index into FIT_CLASSES, -1 for memory-bound classes
    chans: np.ndarray      # channels per group (g of the module docstring)
    macs: np.ndarray       # MACs after channel padding
    raw_macs: np.ndarray
    nbytes: np.ndarray     # bytes moved at the row's precision
    peak: np.ndarray       # ops/s at the row's precision
    bw: np.ndarray         # bytes/s
    int8: np.ndarray       # 1.0 where the row runs INT8
    no_tc: np.ndarray      # 1.0 on boards without tensor cores
    sparse: np.ndarray     # 1.0 where 2:4 sparse kernels apply
    graphs: np.ndarray     # 1.0 where the harness launches through CUDA graphs (MLPerf's NVIDIA harness)


def layer_arrays(layers: List[Layer], comp: Compute, precision: str, sparse: bool = False,
                 graphs: bool = False) -> LayerArrays:
    n = len(layers)
    cls, macs, raw, nb, sp = np.full(n, -1), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    ch = np.ones(n)
    b, m = BYTES[precision], PAD[precision]
    for i, lay in enumerate(layers):
        nb[i] = (lay.act_elems + lay.weight_elems) * b
        if lay.op in COMPUTE_CLASSES and lay.macs:
            cls[i] = FIT_CLASSES.index(PARAM_CLASS[lay.op])
            g = max(1, lay.groups)
            ch[i] = float(max(1, min(lay.cin // g, lay.cout // g))) if lay.op != "depthwise" else 1.0
            raw[i] = macs[i] = float(lay.macs)
            if comp.tensor_cores and lay.op != "depthwise" and lay.cin and lay.cout:
                macs[i] *= min((_pad(lay.cin, k) / lay.cin) * (_pad(lay.cout, k) / lay.cout) for k in m)
            sp[i] = float(sparse and lay.op in ("conv", "conv1x1", "gemm") and lay.cin % 32 == 0
                          and lay.cout % 32 == 0)
    one = np.ones(n)
    return LayerArrays(cls, ch, macs, raw, nb, one * comp.peak(precision), one * comp.bandwidth_gbs * 1e9,
                       one * float(precision == "int8"), one * float(not comp.tensor_cores), sp, one * float(graphs))


def concat_arrays(parts: List[LayerArrays]) -> LayerArrays:
    return LayerArrays(*[np.concatenate([getattr(p, f) for p in parts]) for f in LayerArrays.__dataclass_fields__])


def vector_times(a: LayerArrays, params: Params) -> tuple:
    """``(compute_s, memory_s, us)`` per row: the formula of the module docstring."""
    e = np.array([params.e_class[c] for c in FIT_CLASSES])
    wh = np.array([params.w_half[c] for c in FIT_CLASSES])
    is_c = a.cls >= 0
    ci = np.where(is_c, a.cls, 0)
    w = a.macs / 1e6  # padded: the padding fills the tiles too, so it does not multiply the small-layer floor
    eff = e[ci] * np.where(a.int8 > 0, params.int8_factor, 1.0) * np.where(a.no_tc > 0, params.no_tc_factor, 1.0)
    eff = eff * w / (w + wh[ci]) * np.where(a.chans > 1, a.chans / (a.chans + params.g_half), 1.0)
    comp_s = np.where(is_c, 2.0 * a.macs / (a.peak * np.maximum(eff, 1e-9)), 0.0)
    comp_s = comp_s / np.where(a.sparse > 0, SPARSE_SPEEDUP, 1.0)
    mem_s = a.nbytes / (a.bw * params.e_mem)
    launch = params.launch_us * np.where(a.graphs > 0, params.graph_launch_factor, 1.0)
    return comp_s, mem_s, np.maximum(comp_s, mem_s) * 1e6 + launch


def layer_times(layers: List[Layer], comp: Compute, precision: str, params: Params,
                sparse: bool = False) -> List[tuple]:
    """``(us, bound)`` per layer at one precision."""
    comp_s, mem_s, us = vector_times(layer_arrays(layers, comp, precision, sparse), params)
    return [(float(t), "unmodelled" if lay.unmodelled else ("compute" if c >= m else "memory"))
            for t, c, m, lay in zip(us, comp_s, mem_s, layers)]


def precisions_for(profile: DeviceProfile, precision: str) -> List[str]:
    """The precisions TensorRT may pick a kernel from: ``best`` means every fast one the board has."""
    if precision == "best":
        allowed = ["fp32"]
        if profile.fast_fp16:
            allowed.append("fp16")
        if profile.fast_int8:
            allowed.append("int8")
        return allowed
    if precision not in BYTES:
        raise InputError(f"unknown precision '{precision}'", hint="use fp32, fp16, int8 or best")
    return [precision]
