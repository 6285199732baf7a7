"""``estimate_latency``: an ONNX model's estimated TensorRT latency on a device profile, from the
fitted cost model (:mod:`edgekit.estimate.costmodel`), with the error band its leave-one-model-out
validation measured. ``--device cpu`` goes to the ONNX Runtime CPU estimator instead."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from edgekit._resources import cache_root
from edgekit.devices import DeviceProfile, get_profile
from edgekit.errors import InputError
from edgekit.estimate.costmodel import BYTES, PARAMS_FILE, Compute, Params, layer_times, load_compute, precisions_for
from edgekit.estimate.layers import Layer, fuse_layers
from edgekit.estimate.result import ErrorBand, Estimate, LayerEstimate


def local_calibration_path(device: str) -> Path:
    """Where ``edgekit estimate --refit`` keeps a board's local calibration."""
    return cache_root() / "estimate" / f"{device}.json"


@lru_cache(maxsize=4)
def shipped_params(path: str = str(PARAMS_FILE)) -> Params:
    if not Path(path).is_file():
        raise InputError(f"the estimator's parameter file {path} is missing",
                         hint="reinstall edgekit or run bench/estimate_cv.py --write-params to refit it")
    return Params.load(Path(path))


def params_for(device: str) -> tuple:
    """``(params, local calibration or None)``: the shipped fit, with a board's refit scales applied."""
    params = shipped_params()
    path = local_calibration_path(device)
    if not path.is_file():
        return params, None
    try:
        local = json.loads(path.read_text())
        scale = float(local["scale"])
        class_scale = {k: float(v) for k, v in local.get("class_scale", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"local calibration {path} is unreadable: {exc}",
                         hint=f"delete it or rerun `edgekit estimate --refit ... --device {device}`") from exc
    return apply_local(params, device, scale, class_scale), local


def apply_local(params: Params, device: str, scale: float, class_scale: Dict[str, float]) -> Params:
    """``params`` with a board's refit applied: op-class efficiencies divided by ``class_scale``,
    the board's scale multiplied by ``scale``."""
    e = dict(params.e_class)
    for k, v in class_scale.items():
        if k in e and v > 0:
            e[k] = min(1.0, e[k] / v)
    scales = dict(params.device_scale)
    scales[device] = scales.get(device, 1.0) * scale
    return replace(params, e_class=e, device_scale=scales)


def _dla_compute(prof: DeviceProfile, comp: Compute, dla: int) -> Compute:
    if prof.dla_cores == 0:
        raise InputError(f"{prof.name} has no DLA cores", hint="drop --dla")
    if not 0 <= dla < prof.dla_cores:
        raise InputError(f"--dla {dla}: {prof.name} has DLA cores 0..{prof.dla_cores - 1}")
    if not comp.dla_int8_tops:
        raise InputError(f"the {prof.name} profile has no DLA peak (dla_int8_tops) under [compute]")
    return replace(comp, int8_tops=comp.dla_int8_tops, fp16_tflops=comp.dla_int8_tops / 2,
                   fp32_tflops=comp.dla_int8_tops / 2, tensor_cores=True)


def _band_precision(precision: str, rows) -> str:
    """``best`` is validated as the precision that carries most of its estimated time."""
    if precision != "best":
        return precision
    share: Dict[str, float] = {}
    for us, _b, p in rows:
        share[p] = share.get(p, 0.0) + us
    return max(share, key=share.get) if share else "fp16"


def _band(params: Params, device: str, precision: str) -> Optional[ErrorBand]:
    for key in (f"{device}/{precision}", f"all/{precision}", "all/all"):
        if key in params.bands:
            b = dict(params.bands[key])
            if key == "all/all":
                b["method"] += f"; NOT validated for {precision}: no {precision} figures, band pooled over others"
            elif not key.startswith(device + "/"):
                b["method"] += f"; no held-out {precision} figures for {device}: band pooled over boards"
            return ErrorBand(**b)
    return None


def estimate_layers(layers: Sequence[Layer], prof: DeviceProfile, comp: Compute, precision: str, params: Params,
                    sparse: bool = False) -> tuple:
    """``(total_us, [(us, bound, precision)] per layer)``; ``best`` takes each layer's fastest precision."""
    per_prec = {p: layer_times(list(layers), comp, p, params, sparse) for p in precisions_for(prof, precision)}
    rows = []
    for i in range(len(layers)):
        p = min(per_prec, key=lambda k: per_prec[k][i][0])
        rows.append((per_prec[p][i][0], per_prec[p][i][1], p))
    scale = params.device_scale.get(prof.name, 1.0)
    total = scale * (sum(r[0] for r in rows) + params.overhead_us)
    return total, [(us * scale, b, p) for us, b, p in rows]


def estimate_latency(model, device: str, precision: str = "best", batch: int = 1,
                     shapes: Optional[Dict[str, Sequence[int]]] = None, sparse: bool = False,
                     dla: Optional[int] = None, power_mode: Optional[str] = None) -> Estimate:
    """The estimated latency of ``model`` (``onnx.ModelProto``) as one TensorRT engine on ``device``.

    ``precision``: fp32 | fp16 | int8 | best (each layer in the fastest precision the board runs
    fast). ``shapes``: ``{input: dims}`` for inputs with symbolic dims besides the batch axis."""
    prof = get_profile(device)
    if prof.kind == "cpu":
        from edgekit.estimate.cpu import estimate_cpu  # lazy: loads onnxruntime, needed only for the CPU

        return estimate_cpu(model, batch=batch, shapes=shapes)
    if batch < 1:
        raise InputError(f"--batch {batch}: the batch must be >= 1")
    precisions_for(prof, precision)   # a bad precision fails before the model is read
    return estimate_fused(fuse_layers(model, batch=batch, shapes=shapes), prof, precision, batch, sparse, dla,
                          power_mode)


def estimate_fused(layers: List[Layer], prof: DeviceProfile, precision: str = "best", batch: int = 1,
                   sparse: bool = False, dla: Optional[int] = None, power_mode: Optional[str] = None) -> Estimate:
    """:func:`estimate_latency` on layers already fused at ``batch`` (one fusion, many boards)."""
    comp = load_compute(prof, power_mode)
    notes = []
    if dla is not None:
        comp = _dla_compute(prof, comp, dla)
        notes.append(f"DLA core {dla}: no DLA figures were fitted; layers DLA cannot run would fall back "
                     "to the GPU, which this estimate does not model")
    if precision == "int8" and not prof.fast_int8:
        notes.append(f"{prof.display_name} has no fast INT8 kernels: TensorRT would run most layers slower")
    if sparse and not prof.sparse_tensor_cores:
        notes.append(f"{prof.display_name} has no sparse tensor cores: --sparse changes nothing")
        sparse = False
    elif sparse:
        notes.append("2:4 sparse speedup is a fixed factor on eligible layers (no sparse figures to fit it on)")
    if precision == "fp32":
        notes.append("no FP32 figures in the calibration set: FP32 estimates are not validated")
    params, local = params_for(prof.name)
    if local is not None:
        notes.append(f"local calibration from {len(local.get('files', []))} measurement file(s) applied")
    if not layers:
        raise InputError("the model has no layers to estimate")
    total, rows = estimate_layers(layers, prof, comp, precision, params, sparse)
    out = []
    for lay, (us, bound, p) in zip(layers, rows):
        out.append(LayerEstimate(name=lay.name, op=lay.op, nodes=lay.nodes, out_shape=lay.out_shape, macs=lay.macs,
                                 bytes_moved=int((lay.act_elems + lay.weight_elems) * BYTES[p]), us=us, bound=bound))
    unmodelled = sorted({t for lay in layers if lay.unmodelled for t in lay.op_types})
    if comp.power_mode:
        notes.append(f"power mode {comp.power_mode}")
    return Estimate(device=prof.name, precision=precision, batch=batch, latency_ms=total / 1000.0, layers=out,
                    error_band=_band(params, prof.name, _band_precision(precision, rows)), unmodelled=unmodelled,
                    notes=notes,
                    params_version=params.version + ("+local" if local is not None else ""))
