"""`edgekit devices` and `edgekit devices show NAME`."""

from __future__ import annotations

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.

devices_app = typer.Typer(help="List device profiles, or show one: `edgekit devices show orin`.")


@devices_app.callback(invoke_without_command=True)
@handle_errors
def devices(ctx: typer.Context, json_path: JsonOpt = None) -> None:
    """List the device profiles (TX2, Xavier, Orin family, x86 GPU, cpu)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.devices import list_profiles
    from edgekit.graph.paths import PathGuard

    PathGuard().write_json(json_path).check()
    out = Output(json_path)
    profs = list_profiles()
    rows = []
    for p in profs:
        rows.append([p.name, ", ".join(p.aliases[:3]), p.display_name, p.sm_tag or "-", p.dla_cores,
                     "yes" if p.fast_int8 else "no", "yes" if p.sparse_tensor_cores else "no",
                     p.software.tensorrt or "-", p.software.jetpack or "-", p.default_precision])
    out.table("Device profiles", ["name", "aliases", "board", "SM", "DLA", "fast INT8", "2:4 sparse",
                                  "TensorRT", "JetPack", "default precision"], rows)
    out.print("[dim]`edgekit devices show NAME` for one profile; `--device orin` means agx-orin.[/dim]")
    out.emit({"devices": [p.to_dict() for p in profs]})


@devices_app.command("show")
@handle_errors
def show(name: Annotated[str, typer.Argument(help="Profile name or alias, e.g. orin, tx2, xavier-nx.")],
         json_path: JsonOpt = None) -> None:
    """Print one device profile with every field a build or benchmark uses."""
    from edgekit.devices import get_profile
    from edgekit.graph.paths import PathGuard

    PathGuard().write_json(json_path).check()
    out = Output(json_path)
    p = get_profile(name)
    d = p.to_dict()
    rows = []
    for key, value in d.items():
        if key in ("software", "supported_stacks"):
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "-"
        rows.append([key, value])
    for key, value in d["software"].items():
        rows.append([f"software.{key}", value or "-"])
    if "max_onnx_opset" not in d:
        rows.append(["max_onnx_opset", p.max_onnx_opset])
    for s in p.supported_stacks:
        rows.append(["also runs", f"JetPack {s.jetpack or '-'} / TensorRT {s.tensorrt} / CUDA {s.cuda} / Python {s.python}"])
    out.table(f"{p.display_name} ({p.name})", ["field", "value"], rows)
    out.emit({"device": d})


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")
