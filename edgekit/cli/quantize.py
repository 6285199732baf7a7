"""`edgekit quantize IN.onnx -o OUT.onnx --calib PATH`: INT8 post-training quantization."""

from __future__ import annotations

from enum import Enum
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, ModelArg, Output, OutputOpt, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


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
    target: Annotated[Target, typer.Option("--target", help="tensorrt: QDQ placed by TensorRT's rules (+ a calibration "
                                           "cache); cpu: the fastest INT8 model for ONNX Runtime CPU.")] = Target.tensorrt,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Use at most N samples (20% are held out "
                                                   "for the fidelity report).", metavar="N")] = None,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", help="Node name to keep in float (repeatable).",
                                                         metavar="NODE")] = None,
    percentile: Annotated[float, typer.Option("--percentile", help="Percentile for --method percentile.")] = 99.99,
    trt_version: Annotated[str, typer.Option("--trt-version", help="TensorRT version named in the calibration cache "
                                             "header (the board's: 8.2.1 JetPack 4.6, 8.5.2 JP5, 8.6.2 JP6.0, 10.3.0 JP6.1+).",
                                             metavar="X.Y[.Z]")] = "10.3.0",
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Write OUT's stem + .calib (TensorRT implicit-INT8 "
                                        "calibration cache, TensorRT 8.x-10.x) next to the output (tensorrt target).")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Calibration batch size (dynamic-batch models).")] = 8,
    sensitivity: Annotated[Sensitivity, typer.Option("--sensitivity", help="cpu target: mixed precision. Leave the "
                                                     "layers whose INT8 error hurts the outputs most in float (auto: only "
                                                     "when the all-INT8 model is not faithful on probe samples).")] = Sensitivity.auto,
    float_budget: Annotated[float, typer.Option("--float-budget", help="cpu target: at most this fraction of the "
                                                "model's multiply-accumulates may be kept float by --sensitivity.",
                                                metavar="FRACTION")] = 0.10,
    json_path: JsonOpt = None,
) -> None:
    """Quantize an ONNX model to INT8 and report its fidelity against the float model.

    Examples:
      edgekit quantize resnet50.onnx -o resnet50.int8.onnx --calib calib.npy
      edgekit quantize resnet50.onnx -o r50.cpu.onnx --calib images/ --target cpu --method minmax
    """
    from edgekit.errors import InputError
    from edgekit.graph.io import load_model
    from edgekit.graph.paths import PathGuard
    from edgekit.quantize.ptq import quantize as run_quantize

    out = Output(json_path)
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
    if calib == "synthetic":
        out.warn("[bold]--calib synthetic[/bold]: calibrating on RANDOM data. The INT8 ranges do not reflect real "
                 "inputs and accuracy is NOT preserved; use it only to test the pipeline.")
    with out.progress("calibrating") as update:
        qm, rep = run_quantize(m, calib, method=method.value, target=target.value, samples=samples,
                               exclude=exclude or [], percentile=percentile, batch_size=batch_size, progress=update,
                               sensitivity=sensitivity.value, float_budget=float_budget)
    cache_obj, cache_path = _save(qm, output, rep, target == Target.tensorrt and cache, trt_version, method.value)
    _print_summary(out, model, output, calib, rep, cache_obj, cache_path)
    data = {"input": str(model), "output": str(output), **rep.to_dict()}
    data["calibration_cache"] = None if cache_obj is None else {"path": str(cache_path), **cache_obj.to_dict()}
    out.emit(data)


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
