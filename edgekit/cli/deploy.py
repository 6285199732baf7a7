"""`edgekit deploy MODEL --device NAME -o BUNDLE`: a folder to copy to the board and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors
from edgekit.cli.build import Precision  # one precision vocabulary for build and deploy

# Library imports sit inside the commands: `edgekit --help` stays instant.


_EPILOG = (
    "Examples:\n\n"
    "  edgekit deploy model.onnx --device orin -o bundle/\n\n"
    "  edgekit deploy model.onnx --device xavier-nx --precision int8 --calib-cache calib.cache -o bundle/\n\n"
    "  edgekit deploy bundle/ --verify\n\n"
    "On the board: copy the folder, then `./run.sh` (build once, then profile) or `./run.sh trtexec`."
)


@handle_errors
def deploy(
    model: Annotated[Path, typer.Argument(help="An ONNX model (or, with --verify, a bundle folder).", metavar="MODEL")],
    device: Annotated[Optional[str], typer.Option("--device", "-d", help="Device profile name or alias (see `edgekit devices`).",
                                                  metavar="NAME")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Bundle folder to create.", metavar="BUNDLE")] = None,
    calib_cache: Annotated[Optional[Path], typer.Option("--calib-cache", help="INT8 calibration cache to ship.",
                                                        metavar="PATH")] = None,
    precision: Annotated[Precision, typer.Option("--precision", help="auto = the device profile's default.")] = Precision.auto,
    recipe: Annotated[Optional[str], typer.Option("--recipe", help="Exporter recipe (classifier, detector, vit, a .toml "
                                                  "path, or none); default: from the model's outputs.",
                                                  metavar="NAME")] = None,
    trt_version: Annotated[Optional[str], typer.Option("--trt-version", help="TensorRT on the board, for the trtexec "
                                                       "fallback flags (default: the profile's).", metavar="X.Y")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing non-empty BUNDLE.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check the hashes of the bundle folder MODEL instead.")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Write a self-contained deployment bundle: ONNX, calibration cache, device profile, recipe,
    manifest with sha256 hashes, and run.sh, which builds the engine on the board on first start."""
    from edgekit.graph.paths import PathGuard

    out = Output(json_path)
    if verify:
        from edgekit.deploy import verify_bundle

        PathGuard().read(model, "bundle").write_json(json_path).check()
        rep = verify_bundle(model)
        rows = [[f, "changed"] for f in rep.mismatched] + [[f, "missing"] for f in rep.missing] + \
               [[f, "unexpected"] for f in rep.unexpected]
        if rows:
            out.table(f"bundle {model}: problems", ["file", "problem"], rows)
        out.print(f"bundle {model}: {rep.checked} files checked, " + ("[green]OK[/green]" if rep.ok else "[red]FAILED[/red]"))
        out.emit({"verify": rep.to_dict()})
        if not rep.ok:
            raise typer.Exit(code=2)
        return
    from edgekit.errors import InputError

    if not device:
        raise InputError("--device is required", hint="e.g. --device orin (see `edgekit devices`)")
    if output is None:
        raise InputError("-o BUNDLE is required", hint="name a new folder, e.g. -o bundle/")
    PathGuard().read_model(model).read(calib_cache, "calibration cache").write(output, "bundle", folder=True) \
        .write_json(json_path).check()
    from edgekit.deploy import create_bundle
    from edgekit.graph.io import sweep_stale_temps

    sweep_stale_temps(output.parent if str(output.parent) else ".")  # folders a killed deploy left
    with out.progress("writing bundle", total=None):
        rep = create_bundle(model, device, output, calib_cache=calib_cache, precision=precision.value, recipe=recipe,
                            trt_version=trt_version, force=force)
    for w in rep.warnings:
        out.warn(w)
    out.table(f"{rep.path}/ for {rep.device}", ["file", "bytes", "sha256"],
              [[name, meta["bytes"], meta["sha256"][:16]] for name, meta in rep.files.items()])
    out.print(f"copy {rep.path} to the board and run [bold]./run.sh[/bold] (or ./run.sh trtexec)")
    out.emit({"bundle": rep.to_dict()})


def register(app: typer.Typer) -> None:
    app.command("deploy", epilog=_EPILOG)(deploy)
