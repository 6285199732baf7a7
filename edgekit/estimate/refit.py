"""``edgekit estimate --refit``: learn a board's local correction from measured per-layer times.

A measured profile (trtexec ``--exportProfile`` or ``edgekit profile --export-layers``) names
TensorRT's fused layers by the ONNX nodes they contain (``Conv_12 + Relu_13``,
``/layer1/conv/Conv + ...``). Those names are matched to the estimator's layers of the same model;
the ratio measured / estimated gives one scale for the board and one per op class, shrunk toward 1
when a class covers little of the measured time. The result is written to the local calibration
file (``~/.cache/edgekit/estimate/<device>.json``) that later estimates for the board read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

from edgekit.devices import get_profile
from edgekit.errors import InputError
from edgekit.estimate.costmodel import load_compute
from edgekit.estimate.device import apply_local, estimate_layers, local_calibration_path, shipped_params
from edgekit.estimate.layers import PARAM_CLASS, fuse_layers
from edgekit.trt.layer_profile import read_layer_times

SHRINK = 0.2        # a class whose layers hold share s of the time keeps s / (s + SHRINK) of its ratio


def _node_index(layers) -> Dict[str, int]:
    index = {}
    for i, lay in enumerate(layers):
        for n in lay.nodes:
            if n:
                index[n] = i
    return index


def _match(name: str, index: Dict[str, int]) -> List[int]:
    """Estimator layers named inside one TensorRT layer name."""
    parts = re.split(r"\s\+\s|\s*\|\|\s*|PWN\(|\)|,\s*", name)
    hits = []
    for p in parts:
        p = p.strip()
        if p in index:
            hits.append(index[p])
    return sorted(set(hits))


def refit(model, device: str, files: Sequence[Path], precision: str = "best", batch: int = 1,
          shapes=None) -> dict:
    """Fit and write the local calibration of ``device`` from ``files``; returns what was written."""
    prof = get_profile(device)
    if prof.kind == "cpu":
        raise InputError("--refit is for board profiles (TensorRT layer times), not --device cpu")
    comp = load_compute(prof)
    params = shipped_params()
    layers = fuse_layers(model, batch=batch, shapes=shapes)
    total_est, rows = estimate_layers(layers, prof, comp, precision, params)
    index = _node_index(layers)
    measured_total, matched_est, matched_meas = 0.0, {}, {}
    for f in files:
        for name, ms in read_layer_times(Path(f)):
            measured_total += ms * 1000.0 / len(files)
            hits = _match(name, index)
            for i in hits:
                cls = PARAM_CLASS.get(layers[i].op, layers[i].op)
                matched_meas[cls] = matched_meas.get(cls, 0.0) + ms * 1000.0 / len(hits) / len(files)
    for i in set(index.values()):
        cls = PARAM_CLASS.get(layers[i].op, layers[i].op)
        matched_est[cls] = matched_est.get(cls, 0.0) + rows[i][0]
    if measured_total <= 0:
        raise InputError("the layer profiles sum to 0 ms")
    r0 = measured_total / total_est
    class_scale = {}
    for cls, meas in matched_meas.items():
        est = matched_est.get(cls, 0.0)
        share = meas / measured_total
        if est > 0 and share > 0.02 and cls in params.e_class:
            class_scale[cls] = round(((meas / est) / r0) ** (share / (share + SHRINK)), 4)
    adjusted = apply_local(params, prof.name, 1.0, class_scale)
    scale = measured_total / estimate_layers(layers, prof, comp, precision, adjusted)[0]
    data = {"device": prof.name, "scale": round(scale, 4), "class_scale": class_scale,
            "files": [str(Path(f).resolve()) for f in files], "estimated_ms": round(total_est / 1000, 4),
            "measured_ms": round(measured_total / 1000, 4), "matched_layers": sum(matched_meas.values()) > 0,
            "params_version": params.version, "precision": precision, "batch": batch}
    path = local_calibration_path(prof.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".refit-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)
    data["path"] = str(path)
    return data
