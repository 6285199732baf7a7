"""`edgekit estimate MODEL --device NAME|all`: estimated engine latency without the board."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    best = "best"


def _band_text(band) -> str:
    return f"estimate ±{band.median_abs_pct:.0f} %" if band is not None else "estimate (no validation band)"


def _parse_shapes(specs: Optional[List[str]]) -> dict:
    from edgekit.errors import ShapeError
    from edgekit.graph.shapes import parse_shape

    out = {}
    for spec in specs or []:
        for part in spec.split(","):
            name, sep, dims = part.strip().rpartition(":")
            if not sep or not name:
                raise ShapeError(f"--shapes {part!r}: write NAME:1x3x224x224")
            out[name] = parse_shape(dims)
    return out


def _fmt_macs(n: int) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e8 else f"{n / 1e6:.1f} M" if n else "-"


def _fmt_bytes(n: int) -> str:
    return f"{n / 2 ** 20:.2f} MiB" if n >= 2 ** 20 else f"{n / 1024:.0f} KiB"


def _print_one(out: Output, est, top: int) -> None:
    band = est.error_band
    out.table(f"Estimated latency on {est.device} ({_band_text(band)})",
              ["device", "precision", "batch", "latency ms (estimate)", "throughput /s", "error band"],
              [[est.device, est.precision, est.batch, f"{est.latency_ms:.3f}", f"{est.throughput:.1f}",
                f"±{band.median_abs_pct:.0f} % median, {band.within_25_pct * 100:.0f} % within ±25 % "
                f"(n={band.n})" if band else "-"]])
    rows = [[lay.name[:48], lay.op, "x".join(map(str, lay.out_shape)), _fmt_macs(lay.macs),
             _fmt_bytes(lay.bytes_moved), f"{lay.us:.1f}", lay.bound] for lay in est.top_layers(top)]
    out.table(f"{min(top, len(est.layers))} most expensive of {len(est.layers)} fused layers (estimated µs)",
              ["layer", "op", "shape", "MACs", "bytes", "µs (estimate)", "bound"], rows)
    if est.unmodelled:
        out.warn("unmodelled ops, costed by bytes moved only: " + ", ".join(est.unmodelled))
    for note in est.notes:
        out.print(f"[dim]{note}[/dim]")
    if band is not None:
        out.print(f"[dim]error band: {band.method}. Never measured on a board: an estimate.[/dim]")


@handle_errors
def estimate(
    model: Annotated[Path, typer.Argument(help="ONNX model.", metavar="MODEL.onnx")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile, or 'all' for every board.")]
    = "orin-nx",
    precision: Annotated[Precision, typer.Option("--precision", "-p", help="Engine precision; best = each layer "
                                                                          "in the fastest the board runs.")]
    = Precision.best,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Batch size (sets a symbolic batch axis).")] = 1,
    power_mode: Annotated[Optional[str], typer.Option("--power-mode", help="nvpmodel mode (clocks from the "
                                                                           "profile's [compute.modes]).")] = None,
    sparse: Annotated[bool, typer.Option("--sparse", help="2:4 sparse tensor-core kernels where eligible.")]
    = False,
    dla: Annotated[Optional[int], typer.Option("--dla", help="Run on DLA core N (uncalibrated).")] = None,
    shapes: Annotated[Optional[List[str]], typer.Option("--shapes", help="NAME:1x3x224x224 for inputs with "
                                                                        "symbolic dims.", metavar="NAME:DIMS")]
    = None,
    refit: Annotated[Optional[List[Path]], typer.Option("--refit", help="Measured layer profiles of MODEL on "
                                                                       "--device (trtexec --exportProfile or "
                                                                       "`profile --export-layers`): update this "
                                                                       "board's local calibration first.",
                                                        metavar="FILE")] = None,
    top: Annotated[int, typer.Option("--top", help="Layers to list.")] = 10,
    json_path: JsonOpt = None,
) -> None:
    """Estimate the TensorRT engine latency of MODEL on a board you may not have (a cost model
    fitted on published Jetson figures; every number is an estimate with its error band).

    Examples:
      edgekit estimate resnet50.onnx --device orin-nx --precision int8
      edgekit estimate model.onnx --device all --json -
      edgekit estimate model.onnx --device agx-orin --refit layers.json    # after a board run
    """
    from edgekit.devices import get_profile, list_profiles
    from edgekit.errors import InputError
    from edgekit.estimate import estimate_fused, estimate_latency
    from edgekit.estimate.layers import fuse_layers
    from edgekit.graph.io import load_model
    from edgekit.graph.paths import PathGuard

    out = Output(json_path)
    guard = PathGuard().read_model(model, "model")
    for f in refit or []:
        guard.read(str(f), "--refit")
    guard.write_json(json_path).check()
    if batch < 1:
        raise InputError(f"--batch {batch}: the batch must be >= 1")
    if device != "all":
        get_profile(device)  # fail fast on an unknown device
    dims = _parse_shapes(shapes)
    m = load_model(model, load_external_data=False)
    payload: dict = {}
    if refit:
        if device == "all":
            raise InputError("--refit needs one --device (the board the profiles were measured on)")
        from edgekit.estimate.refit import refit as do_refit

        info = do_refit(m, device, refit, precision=precision.value, batch=batch, shapes=dims or None)
        out.print(f"local calibration for {info['device']} written to {info['path']}: measured "
                  f"{info['measured_ms']:.3f} ms vs estimated {info['estimated_ms']:.3f} ms, scale {info['scale']}"
                  + (f", per class {info['class_scale']}" if info["class_scale"] else ""))
        payload["refit"] = info
    if device != "all":
        est = estimate_latency(m, device, precision.value, batch, dims or None, sparse, dla, power_mode)
        _print_one(out, est, top)
        payload.update(est.to_dict())
        out.emit(payload)
        return
    layers = fuse_layers(m, batch=batch, shapes=dims or None)
    rows, ests, skipped = [], [], []
    for prof in list_profiles():
        if prof.kind == "cpu":
            skipped.append({"device": prof.name, "reason": "use --device cpu (ONNX Runtime on this host)"})
            continue
        e = estimate_fused(layers, prof, precision.value, batch, sparse and prof.sparse_tensor_cores, None, None)
        ests.append(e)
        rows.append([prof.name, prof.display_name, e.precision, f"{e.latency_ms:.3f}", f"{e.throughput:.1f}",
                     _band_text(e.error_band)])
    rows.sort(key=lambda r: float(r[3]))
    out.table(f"Estimated latency of {model.name} on every board (batch {batch}; estimates, not measurements)",
              ["device", "board", "precision", "latency ms (estimate)", "throughput /s", "error band"], rows)
    payload.update({"label": "estimate", "model": str(model), "estimates": [e.to_dict() for e in ests],
                    "skipped": skipped})
    out.emit(payload)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
