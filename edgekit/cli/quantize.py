"""`edgekit quantize IN.onnx -o OUT.onnx --calib PATH`: INT8 post-training quantization."""

from __future__ import annotations

from enum import Enum
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, ModelArg, Output, OutputOpt, handle_errors
from edgekit.cli._device_defaults import DeviceOpt, DeviceDefaults

# Library imports sit inside the commands: `edgekit --help` stays instant.


_DEFAULT_TRT = "10.3.0"  # the calibration cache header without --device or --trt-version (JetPack 6.1+)


class Method(str, Enum):
    entropy = "entropy"
    minmax = "minmax"
    percentile = "percentile"


class Sensitivity(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class Target(str, Enum):
    tensorrt = "tensorrt"
    cpu = "cpu"


@handle_errors
def quantize(
    model: ModelArg,
    output: OutputOpt,
    calib: Annotated[str, typer.Option("--calib", help="Calibration data: a .npy/.npz file (preprocessed float32, "
                                       "first axis = samples), a folder of images, or 'synthetic' (NOT accuracy preserving).",
                                       metavar="PATH")],
    method: Annotated[Method, typer.Option("--method", help="How ranges are chosen: entropy (KL, like TensorRT), "
                                           "minmax (max |x|), percentile (--percentile of |x|).")] = Method.entropy,
    target: Annotated[Optional[Target], typer.Option("--target", help="tensorrt: QDQ placed by TensorRT's rules (+ a "
                                                     "calibration cache); cpu: the fastest INT8 model for ONNX Runtime "
                                                     "CPU. Default: cpu for --device cpu, else tensorrt.",
                                                     show_default=False)] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Use at most N samples (20% are held out "
                                                   "for the fidelity report).", metavar="N")] = None,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", help="Node name to keep in float (repeatable).",
                                                         metavar="NODE")] = None,
    percentile: Annotated[float, typer.Option("--percentile", help="Percentile for --method percentile.")] = 99.99,
    trt_version: Annotated[Optional[str], typer.Option("--trt-version", help="TensorRT version named in the calibration "
                                                       "cache header (the board's: 8.2.1 JetPack 4.6, 8.5.2 JP5, 8.6.2 "
                                                       "JP6.0, 10.3.0 JP6.1+). Default: the --device profile's TensorRT, "
                                                       f"else {_DEFAULT_TRT}.", metavar="X.Y[.Z]",
                                                       show_default=False)] = None,
    cache: Annotated[Optional[bool], typer.Option("--cache/--no-cache", help="Write OUT's stem + .calib (TensorRT "
                                                  "implicit-INT8 calibration cache, TensorRT 8.x-10.x) next to the "
                                                  "output (tensorrt target). Default: on, off for a --device whose "
                                                  "TensorRT (11+) reads only the Q/DQ scales.",
                                                  show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Calibration batch size (dynamic-batch models).")] = 8,
    sensitivity: Annotated[Sensitivity, typer.Option("--sensitivity", help="cpu target: mixed precision. Leave the "
                                                     "layers whose INT8 error hurts the outputs most in float (auto: only "
                                                     "when the all-INT8 model is not faithful on probe samples).")] = Sensitivity.auto,
    float_budget: Annotated[float, typer.Option("--float-budget", help="cpu target: at most this fraction of the "
                                                "model's multiply-accumulates may be kept float by --sensitivity.",
                                                metavar="FRACTION")] = 0.10,
    device: DeviceOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Quantize an ONNX model to INT8 and report its fidelity against the float model.

    Examples:
      edgekit quantize resnet50.onnx -o resnet50.int8.onnx --calib calib.npy
      edgekit quantize resnet50.onnx -o r50.cpu.onnx --calib images/ --target cpu --method minmax
      edgekit quantize resnet50.onnx -o r50.nx.onnx --calib calib.npy --device xavier-nx   (cache for TensorRT 8.5.2)
    """
    from edgekit.errors import InputError
    from edgekit.graph.io import load_model
    from edgekit.graph.paths import PathGuard
    from edgekit.quantize.ptq import quantize as run_quantize

    out = Output(json_path)
    dev = DeviceDefaults(device)
    target, trt_version, cache = _device_settings(dev, target, trt_version, cache)
    guard = PathGuard().read_model(model).read(None if calib == "synthetic" else calib, "calibration data")
    guard.write_model(output)
    if target == Target.tensorrt and cache:
        guard.write(_cache_path(output), "the calibration cache")
    guard.write_json(json_path).check()
    if batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    if target == Target.tensorrt and cache:
        from edgekit.trt.calibration_cache import check_trt_version

        trt_version = check_trt_version(trt_version)
    m = load_model(model)
    _check_opset_cap(dev, m, trt_version if target == Target.tensorrt else None)
    if calib == "synthetic":
        out.warn("[bold]--calib synthetic[/bold]: calibrating on RANDOM data. The INT8 ranges do not reflect real "
                 "inputs and accuracy is NOT preserved; use it only to test the pipeline.")
    with out.progress("calibrating") as update:
        qm, rep = run_quantize(m, calib, method=method.value, target=target.value, samples=samples,
                               exclude=exclude or [], percentile=percentile, batch_size=batch_size, progress=update,
                               sensitivity=sensitivity.value, float_budget=float_budget)
    cache_obj, cache_path = _save(qm, output, rep, target == Target.tensorrt and cache, trt_version, method.value)
    _print_summary(out, model, output, calib, rep, cache_obj, cache_path)
    dev.render(out)
    data = {"input": str(model), "output": str(output), **rep.to_dict(), "device": dev.to_dict()}
    data["calibration_cache"] = None if cache_obj is None else {"path": str(cache_path), **cache_obj.to_dict()}
    out.emit(data)


def _device_settings(dev: DeviceDefaults, target, trt_version, cache):
    """--target, --trt-version and --cache as given, else from the --device profile (else edgekit's
    defaults); each choice is noted in ``dev`` for the report."""
    from edgekit.devices import parse_version

    prof = dev.profile
    if prof is None:
        target = dev.take("--target", target, Target.tensorrt, "edgekit default")
    else:
        target = dev.take("--target", target, Target.cpu if prof.kind == "cpu" else Target.tensorrt,
                          f"{prof.name} runs {'ONNX Runtime' if prof.kind == 'cpu' else 'TensorRT'}")
    if target != Target.tensorrt:
        return target, trt_version or _DEFAULT_TRT, False if cache is None else cache
    if prof is not None and not prof.fast_int8:
        from edgekit.errors import UnsupportedError

        raise UnsupportedError(f"{prof.display_name} has no fast INT8 path (fast_int8 = false in its profile): "
                               f"`deploy/build --device {prof.name}` refuse an INT8 model",
                               hint=f"build the float model for FP16 (`edgekit build MODEL --device {prof.name} "
                                    "--precision fp16`), or quantize without --device")
    board_trt = prof.software.tensorrt if prof is not None else ""
    if board_trt:
        trt_version = dev.take("--trt-version", trt_version, board_trt, f"{prof.name}'s TensorRT "
                               f"(JetPack {prof.software.jetpack or '-'}): `deploy/build --device {prof.name}` "
                               "checks the cache header against it")
    else:
        trt_version = dev.take("--trt-version", trt_version, _DEFAULT_TRT, "edgekit default", source="edgekit default")
    implicit = (parse_version(trt_version) or (0,))[0] <= 10
    cache = dev.take("--cache", cache, implicit, "TensorRT 8-10 read a calibration cache" if implicit else
                     f"TensorRT {trt_version} has no implicit INT8 calibration: it reads the Q/DQ scales in the model",
                     source=None if board_trt else "edgekit default")
    return target, trt_version, cache


def _check_opset_cap(dev: DeviceDefaults, model, trt_version) -> None:
    """With --device, refuse a model newer than the board's ONNX parser takes, before calibrating
    (the quantized model keeps the input's opset, at least 13); noted in the report."""
    from edgekit.devices import max_opset_for_tensorrt, parse_version
    from edgekit.errors import UnsupportedError
    from edgekit.graph.io import default_opset

    prof = dev.profile
    if prof is None:
        return
    same = not trt_version or parse_version(trt_version)[:2] == parse_version(prof.software.tensorrt)[:2]
    cap = prof.max_onnx_opset if (same and prof.max_onnx_opset) else max_opset_for_tensorrt(trt_version)
    if not cap:
        return
    opset = max(13, default_opset(model))
    if opset > cap:
        raise UnsupportedError(f"the quantized model would be ONNX opset {opset}; {prof.name} parses opset {cap} at most",
                               hint=f"re-export it for the board (`edgekit export ... --device {prof.name}` writes "
                                    f"opset {cap})")
    dev.note("opset", opset, f"within {prof.name}'s cap of {cap}")


def _save(qm, output, rep, with_cache: bool, trt_version: str, method: str):
    """Write the INT8 model and, when asked, its TensorRT calibration cache (both or neither);
    returns ``(cache, cache path)``, Nones without a cache."""
    from edgekit.graph.io import save_model
    from edgekit.quantize import trtcache

    cache_obj = None
    cache_path = None
    if with_cache:
        cache_obj = trtcache.make_cache(rep.calibration_scales, trt_version, method=method)
        cache_path = _cache_path(output)
    save_model(qm, output)
    if cache_obj is not None:
        try:
            trtcache.write_cache(cache_path, cache_obj)
        except BaseException:
            output.unlink()  # no partial output: model and cache go together
            raise
    return cache_obj, cache_path


def _cache_path(output):
    """Where the TensorRT calibration cache goes: OUT with the suffix .calib."""
    return output.with_suffix(".calib")


def _print_summary(out: Output, model, output, calib: str, rep, cache_obj, cache_path) -> None:
    """Warnings, the fidelity table, and what the sensitivity pass kept float."""
    for w in rep.warnings:
        if not (calib == "synthetic" and "SYNTHETIC" in w):
            out.warn(w)
    fid = rep.fidelity
    rows = [["target", rep.target], ["method", rep.method],
            ["calibration samples", rep.samples], ["held-out samples", fid.get("samples")],
            ["quantized ops", len(rep.quantized_nodes)], ["float ops", len(rep.float_nodes)],
            ["skipped (not covered)", len(rep.skipped)],
            ["top-1 agreement", "-" if fid.get("top1_agreement") is None else f"{100 * fid['top1_agreement']:.2f}%"]]
    for name, db in fid.get("sqnr_db", {}).items():
        rows.append([f"SQNR {name}", f"{db:.2f} dB"])
    rows.append(["output", str(output)])
    if cache_path is not None:
        rows.append(["calibration cache", f"{cache_path} ({cache_obj.header}, {len(cache_obj.scales)} tensors)"])
    out.table(f"INT8 {model.name}", ["", ""], rows)
    kept = rep.sensitivity.get("kept_float") or []
    if kept:
        out.print(f"sensitivity pass kept {len(kept)} layer(s) float "
                 f"({100 * rep.sensitivity.get('float_mac_share', 0):.1f}% of MACs): " + ", ".join(kept))
    for s in rep.skipped:
        out.warn(f"skipped {s['node']} ({s['op_type']}): {s['reason']}")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)
