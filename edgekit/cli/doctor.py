"""`edgekit doctor`: what is available here and how to install what is missing."""

from __future__ import annotations

import typer
from rich.markup import escape

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


@handle_errors
def doctor(json_path: JsonOpt = None) -> None:
    """Check onnxruntime providers, torch, TensorRT, trtexec, pycuda, a CUDA device, and the Jetson board
    (model, L4T/JetPack, power mode, clock lock). Exit code 1 only if a required package is missing."""
    from edgekit.doctor import run_doctor
    from edgekit.graph.paths import PathGuard

    PathGuard().write_json(json_path).check()
    out = Output(json_path)
    rep = run_doctor()
    rows = [["[green]ok[/green]" if c.ok else ("[red]missing[/red]" if c.required else "[yellow]no[/yellow]"),
             escape(c.name), escape(c.detail), escape(c.fix)] for c in rep.checks]
    out.table(f"edgekit doctor (Python {rep.python}, {rep.machine})", ["", "component", "found", "how to get it"], rows)
    if rep.board_state:
        for w in rep.board_state.get("warnings", []) or []:
            out.warn(w)
    out.emit(rep.to_dict())
    if not rep.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
