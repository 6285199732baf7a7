"""`edgekit inspect sparsity MODEL`: does each layer hold the N:M (2:4) pattern as TensorRT reads it?"""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors
from edgekit.cli._device_defaults import DeviceOpt, DeviceDefaults

# Library imports sit inside the commands: `edgekit --help` stays instant.


@handle_errors
def sparsity(
    model: Annotated[Path, typer.Argument(help="An .onnx file, a TorchScript file, or a .pt state_dict.",
                                          metavar="MODEL")],
    n: Annotated[int, typer.Option("--n", help="At most N non-zeros ...")] = 2,
    m: Annotated[int, typer.Option("--m", help="... in every run of M consecutive input channels.")] = 4,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any layer violates the pattern.")] = False,
    device: DeviceOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Report per layer whether the N:M pattern (default 2:4) holds in TensorRT's layout.

    Conv weights [K, C, R, S]: every run of M consecutive input channels at each (k, r, s).
    Gemm/MatMul: along the reduction dimension (Gemm transB and MatMul [in, out] are handled).
    Weights behind DequantizeLinear are checked on their stored int8 values.

    With --device: whether 2:4 pays off on that board (TensorRT's sparse tensor cores, Ampere and newer).

    Example: edgekit inspect sparsity model.int8.onnx --device orin-nano --json -
    """
    from edgekit.graph.paths import PathGuard
    from edgekit.sparsity import check_nm

    PathGuard().read_model(model).write_json(json_path).check()
    out = Output(json_path)
    dev = DeviceDefaults(device)
    _note_board(dev, n, m)
    report = check_nm(str(model), n=n, m=m)
    rows = []
    for layer in report.layers:
        status = {"ok": "[green]ok[/green]", "violates": "[red]violates[/red]",
                  "skipped": "[dim]skipped[/dim]"}[layer.status]
        detail = layer.reason or (f"{layer.bad_groups}/{layer.groups} groups over {n}" if layer.groups else "")
        rows.append([layer.name, layer.op, "x".join(str(d) for d in layer.shape),
                     "-" if layer.axis is None else layer.axis, status, f"{100 * layer.zero_fraction:.1f}%", detail])
    out.table(f"{n}:{m} sparsity ({model.name})", ["layer", "op", "weight", "axis", "status", "zeros", "detail"], rows)
    if not report.layers:
        out.warn("no Conv/Gemm/MatMul/Linear weights found")
    out.print(f"{len(report.ok)} ok, {len(report.violating)} violating, {len(report.skipped)} skipped")
    dev.render(out)
    if dev.profile is not None and not dev.profile.sparsity_24 and report.ok:
        out.warn(f"{dev.profile.name} has no sparse tensor cores: TensorRT runs these 2:4 layers dense there")
    out.emit({"model": str(model), **report.to_dict(), "device": dev.to_dict()})
    if strict and report.violating:
        raise typer.Exit(code=1)


def _note_board(dev: DeviceDefaults, n: int, m: int) -> None:
    """With --device, whether TensorRT can use the pattern on that board (noted for the report)."""
    prof = dev.profile
    if prof is None:
        return
    if (n, m) != (2, 4):
        dev.note(f"{n}:{m}", False, "TensorRT's sparse tensor cores take 2:4 only")
    elif prof.sparsity_24:
        dev.note("2:4", True, f"{prof.arch} ({prof.sm_tag}) has sparse tensor cores: `build --sparse` can "
                 "pick sparse kernels for layers that hold the pattern (never measured on the board here)")
    else:
        dev.note("2:4", False, f"{prof.arch or prof.kind} has no sparse tensor cores: "
                 "TensorRT runs 2:4 weights as dense ones")


def register(inspect_app: typer.Typer) -> None:
    inspect_app.command("sparsity")(sparsity)
