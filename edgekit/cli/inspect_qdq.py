"""`edgekit inspect qdq MODEL`: does a QDQ model follow TensorRT's placement rules?"""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, ModelArg, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


@handle_errors
def qdq(
    model: ModelArg,
    min_channels: Annotated[int, typer.Option("--min-channels", help="Convs with fewer channels may stay float.")] = 16,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", help="Node meant to stay float (repeatable).",
                                                         metavar="NODE")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Check QuantizeLinear/DequantizeLinear placement against TensorRT's rules; exit 1 on any violation.

    Rules: compute-inputs, activation-symmetric, weight-per-channel, bias-float, qdq-placement,
    residual-add, concat-scales, opset, thin-conv (warning), no-qdq.

    Example: edgekit inspect qdq model.int8.onnx --json -
    """
    from edgekit.graph.io import load_model
    from edgekit.graph.paths import PathGuard
    from edgekit.quantize.rules import RULES, inspect_qdq

    PathGuard().read_model(model).write_json(json_path).check()
    out = Output(json_path)
    rep = inspect_qdq(load_model(model), min_channels=min_channels, exclude=exclude or [])
    by_rule = rep.by_rule()
    rows = []
    for rule, text in RULES.items():
        vs = by_rule.get(rule, [])
        sev = vs[0].severity if vs else ""
        status = "[green]ok[/green]" if not vs else ("[yellow]warn[/yellow]" if sev == "warning" else "[red]violated[/red]")
        rows.append([rule, status, len(vs), text])
    out.table(f"QDQ rules ({model.name})", ["rule", "status", "count", "what"], rows)
    for v in rep.violations[:200]:
        out.print(f"[{'yellow' if v.severity == 'warning' else 'red'}]{v.rule}[/] {v.node}: {v.message}")
    for s in rep.skipped:
        out.print(f"[dim]skipped {s['node']} ({s['op_type']}): {s['reason']}[/dim]")
    out.print(f"{len(rep.quantized_nodes)} quantized ops, {len(rep.float_nodes)} float, {len(rep.errors)} errors, "
              f"{len(rep.violations) - len(rep.errors)} warnings")
    out.emit({"model": str(model), **rep.to_dict()})
    if rep.errors:
        raise typer.Exit(code=1)


def register(inspect_app: typer.Typer) -> None:
    inspect_app.command("qdq")(qdq)
