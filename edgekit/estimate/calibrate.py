"""Calibration of the device cost model on published figures, and its leave-one-model-out check.

Which figures are used, and why the others are not (one rule per class of row, never per figure):

* NetsPresso TensorRT FP16 latency (batch 1, model computation only): used as stated.
* jetson-inference segNet FPS (FCN-ResNet18, FP16, one frame at a time): used as 1000 / FPS ms;
  FPS includes the network only as segNet times it, so it carries some pre/post-processing.
* MLPerf SingleStream ``latency_mean`` (batch 1): used; ``latency_p90`` of the same run is left
  out (one run counted once). MultiStream ``latency_mean_per_query``: used as the latency of one
  batch of 8. The precision MLPerf's result files do not state is taken as INT8, which NVIDIA's
  harness configures for every vision and BERT benchmark on Jetson.
* MLPerf Offline throughput: excluded, GPU and both DLAs run together (an aggregate, not one engine).
* MLPerf 3D-UNet, RNN-T, GPT-J, Stable Diffusion XL: excluded, variable-length inputs or
  multi-network pipelines a single-engine model cannot represent.
* L4 (a PCIe GPU): excluded, no edgekit profile.
* jetson_benchmarks (Xavier NX INT8 FPS): excluded, Caffe / UFF model files whose exact
  definitions are not public, batch-2 throughput and GPU+DLA aggregates; they also disagree with
  MLPerf on the same board by 1.5-2x (SOURCES.md).
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgekit.devices import get_profile
from edgekit.estimate.costmodel import (FIT_CLASSES, LayerArrays, Params, concat_arrays, layer_arrays,
                                        load_compute, vector_times)
from edgekit._resources import cache_root
from edgekit.estimate.layers import Layer, fuse_layers
from edgekit.models.figures import FIGURE_MODELS

FIGURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "latency" / "figures.jsonl"
BOARDS = {"Jetson AGX Orin": "agx-orin", "Jetson AGX Xavier": "agx-xavier", "Jetson Xavier NX": "xavier-nx",
          "Jetson Orin NX 16GB": "orin-nx", "Jetson Nano (Maxwell)": "nano", "Jetson Orin Nano": "orin-nano",
          "Jetson TX2": "tx2"}
EXCLUDED_MODELS = ("3D-UNet", "RNN-T", "GPT-J", "Stable Diffusion")
VERSION = "device-v2"


@dataclass
class Figure:
    """One usable published figure, normalised to the latency of one engine run."""

    id: str
    model: str            # the figure's model name (a FIGURE_MODELS key)
    group: str            # the architecture (factory): what leave-one-model-out holds out
    device: str
    precision: str
    batch: int
    latency_ms: float
    input_shape: Tuple[int, ...]
    source: str


def _input_shape(row: dict) -> Tuple[int, ...]:
    shape = FIGURE_MODELS[row["model"]][1]
    m = re.match(r"(\d+)x(\d+)", row.get("input_size") or "")
    if row["source_id"] == "jetson_inference_segnet" and m:   # W x H as segNet states it
        return (1, 3, int(m.group(2)), int(m.group(1)))
    return tuple(shape)


def _classify(row: dict) -> Tuple[Optional[str], str]:
    """``(None, reason)`` for an excluded row, else ``(kind, "")`` (see the module docstring)."""
    src, metric, model = row["source_id"], row["metric"], row["model"]
    if src == "nvidia_jetson_benchmarks":
        return None, "jetson_benchmarks: Caffe/UFF models, batch-2 throughput, GPU+DLA aggregates"
    if row["board_family"] not in BOARDS:
        return None, f"no edgekit profile for {row['board_family']}"
    if any(model.startswith(x) for x in EXCLUDED_MODELS):
        return None, "variable-length inputs / multi-network pipeline"
    if model not in FIGURE_MODELS:
        return None, "no model definition"
    if src == "mlperf_inference":
        if metric == "latency_mean":
            return "single", ""
        if metric == "latency_mean_per_query":
            return "multi", ""
        if metric == "throughput":
            return None, "MLPerf Offline: GPU + DLAs together, an aggregate"
        return None, "same run as its latency_mean (counted once)"
    if src == "jetson_inference_segnet":
        return "fps", ""
    return "latency", ""


def load_figures(path: Path = FIGURES) -> Tuple[List[Figure], Dict[str, int]]:
    """``(usable figures, {exclusion reason: count})``."""
    figs, excluded = [], {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        kind, reason = _classify(row)
        if kind is None:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        value = float(row["value"])
        ms = 1000.0 / value if kind == "fps" else value
        prec = row["precision_norm"].lower() if row["precision_norm"] in ("FP16", "INT8", "FP32") else "int8"
        figs.append(Figure(row["id"], row["model"], FIGURE_MODELS[row["model"]][0], BOARDS[row["board_family"]],
                           prec, 8 if kind == "multi" else 1, ms, _input_shape(row), row["source_id"]))
    return figs, excluded


def model_path(model: str, shape: Sequence[int], cache: Optional[Path] = None) -> Path:
    """The figure model exported to ONNX (random weights, dynamic batch), weights stripped: the
    initializers keep their shapes and point at an external file that is deleted (a latency
    model needs no values). Cached under ``<cache>/estimate/models``."""
    spec = FIGURE_MODELS[model][0]
    slug = re.sub(r"[^a-z0-9]+", "-", spec.split(":")[1].lower()) + "-" + "x".join(map(str, shape[1:]))
    folder = (cache or cache_root()) / "estimate" / "models"
    out = folder / f"{slug}.onnx"
    if out.is_file():
        return out
    import torch  # lazy: only calibration exports models

    folder.mkdir(parents=True, exist_ok=True)
    mod, fn = spec.split(":")
    net = getattr(importlib.import_module(mod), fn)().eval()
    x = torch.randint(0, 1000, tuple(shape)) if len(shape) == 2 else torch.randn(*shape)
    tmp = folder / f".{slug}.tmp.onnx"
    torch.onnx.export(net, (x,), str(tmp), dynamo=False, opset_version=17, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, do_constant_folding=True)
    m = onnx.load(str(tmp))
    onnx.save_model(m, str(tmp), save_as_external_data=True, location=f"{slug}.weights", size_threshold=1024)
    (folder / f"{slug}.weights").unlink()
    tmp.replace(out)
    return out


def _load_layers(fig: Figure, cache: Optional[Path], memo: Dict) -> List[Layer]:
    key = (fig.model, fig.input_shape, fig.batch)
    if key not in memo:
        m = onnx.load(str(model_path(fig.model, fig.input_shape, cache)), load_external_data=False)
        memo[key] = fuse_layers(m, batch=fig.batch)
    return memo[key]


@dataclass
class Dataset:
    figs: List[Figure]
    arrays: LayerArrays
    row_fig: np.ndarray           # figure index of every layer row
    devices: List[str]
    fig_dev: np.ndarray           # device index of every figure
    gmacs: np.ndarray             # per figure, for the anchor model
    peak: np.ndarray              # per figure, ops/s at its precision


def build_dataset(figs: Sequence[Figure], cache: Optional[Path] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> Dataset:
    memo: Dict = {}
    parts, row_fig, gmacs, peaks = [], [], [], []
    devices = sorted({f.device for f in figs})
    for i, f in enumerate(figs):
        layers = _load_layers(f, cache, memo)
        comp = load_compute(get_profile(f.device))
        a = layer_arrays(layers, comp, f.precision, graphs=f.source == "mlperf_inference")
        parts.append(a)
        row_fig.append(np.full(len(layers), i))
        gmacs.append(sum(lay.macs for lay in layers) / 1e9)
        peaks.append(comp.peak(f.precision))
        if progress:
            progress(i + 1, len(figs))
    return Dataset(list(figs), concat_arrays(parts), np.concatenate(row_fig), devices,
                   np.array([devices.index(f.device) for f in figs]), np.array(gmacs), np.array(peaks))


def predict(ds: Dataset, params: Params) -> np.ndarray:
    """Predicted ms of every figure of ``ds``."""
    _, _, us = vector_times(ds.arrays, params)
    total = np.bincount(ds.row_fig, weights=us, minlength=len(ds.figs)) + params.overhead_us
    scale = np.array([params.device_scale.get(d, 1.0) for d in ds.devices])[ds.fig_dev]
    return scale * total / 1000.0


INITIAL = Params(VERSION, e_class={c: 0.5 for c in FIT_CLASSES}, w_half={c: 20.0 for c in FIT_CLASSES},
                 e_mem=0.6, launch_us=8.0, overhead_us=50.0, no_tc_factor=0.7, int8_factor=0.7,
                 graph_launch_factor=0.5, g_half=16.0)
SCALE_PRIOR = 3.0     # weight of log(device_scale) = 0 against the figures (shrinks scarce boards)


def _weights(ds: Dataset, idx: np.ndarray) -> np.ndarray:
    """1/sqrt(n) per (architecture, board, source) group: 11 segNet resolutions are not 11 models."""
    keys = [(ds.figs[i].group, ds.figs[i].device, ds.figs[i].source) for i in idx]
    counts = {k: keys.count(k) for k in set(keys)}
    return np.array([1.0 / np.sqrt(counts[k]) for k in keys])


def fit(ds: Dataset, idx: Optional[np.ndarray] = None) -> Params:
    """Fit the shared parameters and per-board scales on figures ``idx`` (robust, in log space)."""
    from scipy.optimize import least_squares  # lazy: scipy is only needed to fit

    idx = np.arange(len(ds.figs)) if idx is None else idx
    meas = np.array([f.latency_ms for f in ds.figs])
    w = _weights(ds, idx)
    n_dev = len(ds.devices)
    x0 = np.concatenate([INITIAL.to_vector(), np.zeros(n_dev)])
    base = len(x0) - n_dev

    def unpack(x: np.ndarray) -> Params:
        return Params.from_vector(x[:base], VERSION, {d: float(np.exp(s)) for d, s in zip(ds.devices, x[base:])})

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = predict(ds, unpack(x))[idx]
        return np.concatenate([w * np.log(pred / meas[idx]), SCALE_PRIOR * 0.1 * x[base:]])

    k = len(FIT_CLASSES)
    lo = np.concatenate([np.log([1e-3] * k + [1e-2] * k + [1e-2, 0.5, 1.0, 0.05, 0.05, 0.02, 0.5]), -np.full(n_dev, 2.0)])
    hi = np.concatenate([np.log([1.0] * k + [1e4] * k + [1.0, 200.0, 5000.0, 1.0, 2.0, 1.0, 512.0]), np.full(n_dev, 2.0)])
    res = least_squares(residuals, np.clip(x0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), loss="soft_l1",
                        f_scale=0.2, max_nfev=400)
    return unpack(res.x)


def fit_anchor(ds: Dataset, idx: np.ndarray) -> Tuple[float, float]:
    """The issue's anchor: ms = GMACs / (peak x c) + o, one ``c`` and ``o`` for everything."""
    from scipy.optimize import least_squares  # lazy: scipy is only needed to fit

    meas = np.array([f.latency_ms for f in ds.figs])

    def pred(x: np.ndarray, i: np.ndarray) -> np.ndarray:
        return 2e9 * ds.gmacs[i] / (ds.peak[i] * np.exp(x[0])) * 1000.0 + np.exp(x[1])

    res = least_squares(lambda x: np.log(pred(x, idx) / meas[idx]), np.array([np.log(0.3), np.log(0.2)]),
                        loss="soft_l1", f_scale=0.2)
    return float(np.exp(res.x[0])), float(np.exp(res.x[1]))


def anchor_predict(ds: Dataset, c: float, o: float) -> np.ndarray:
    return 2e9 * ds.gmacs / (ds.peak * c) * 1000.0 + o


def band(errors: Sequence[float], method: str) -> dict:
    """ErrorBand fields from relative errors (pred / measured - 1)."""
    e = np.abs(np.asarray(errors, dtype=float))
    return {"median_abs_pct": round(float(np.median(e)) * 100, 1), "within_10_pct": round(float(np.mean(e <= .10)), 3),
            "within_25_pct": round(float(np.mean(e <= .25)), 3), "n": int(len(e)), "method": method}


def lomo(ds: Dataset, progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, np.ndarray]:
    """Leave-one-model-out: for each architecture, fit on the others, predict it. Returns the
    relative errors of the cost model and of the anchor, per figure."""
    groups = sorted({f.group for f in ds.figs})
    meas = np.array([f.latency_ms for f in ds.figs])
    err, anc = np.zeros(len(ds.figs)), np.zeros(len(ds.figs))
    for k, g in enumerate(groups):
        test = np.array([i for i, f in enumerate(ds.figs) if f.group == g])
        train = np.array([i for i, f in enumerate(ds.figs) if f.group != g])
        p = fit(ds, train)
        err[test] = predict(ds, p)[test] / meas[test] - 1
        c, o = fit_anchor(ds, train)
        anc[test] = anchor_predict(ds, c, o)[test] / meas[test] - 1
        if progress:
            progress(k + 1, len(groups))
    return {"model": err, "anchor": anc}


def bands_from(ds: Dataset, errors: np.ndarray) -> Dict[str, dict]:
    """ErrorBand fields per "device/precision", per "all/precision" and "all/all"."""
    out: Dict[str, dict] = {}
    keys = [(f.device, f.precision) for f in ds.figs]
    for key in sorted(set(keys)):
        sel = [i for i, k in enumerate(keys) if k == key]
        out[f"{key[0]}/{key[1]}"] = band(errors[sel], f"leave-one-model-out over {len(sel)} published figures "
                                                      f"({key[0]}, {key[1]})")
    for prec in sorted({k[1] for k in keys}):
        sel = [i for i, k in enumerate(keys) if k[1] == prec]
        out[f"all/{prec}"] = band(errors[sel], f"leave-one-model-out over {len(sel)} published {prec} figures")
    out["all/all"] = band(errors, f"leave-one-model-out over {len(errors)} published figures")
    return out


def write_params(params: Params, bands: Dict[str, dict], path: Path) -> None:
    data = params.to_dict()
    data["bands"] = bands
    data["note"] = ("fitted by bench/estimate_cv.py --write-params on tests/fixtures/latency/figures.jsonl; bands are "
                    "leave-one-model-out errors (edgekit.estimate.calibrate)")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
