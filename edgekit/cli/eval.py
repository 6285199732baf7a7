"""`edgekit eval MODEL.onnx --data DATA [--reference ORIG.onnx]`: accuracy on labelled data, and
agreement / SQNR against a reference model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, ModelArg, Output, handle_errors

# Library imports sit inside the command: `edgekit --help` stays instant.

DataOpt = Annotated[Path, typer.Option("--data", help="Labelled data: an .npz with x and y (or one array per input "
                                       "name plus y/labels), an .npy (no labels), or an image folder with one "
                                       "sub-folder per class.", metavar="DATA")]


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


@handle_errors
def eval_cmd(
    model: ModelArg,
    data: DataOpt,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Compare with this model: top-1 agreement "
                                                      "and SQNR of every output (what works without labels).",
                                                      metavar="ORIG")] = None,
    x_name: Annotated[Optional[str], typer.Option("--x", help="Name of the input array in the .npz (default: the "
                                                  "input's name, else x).", metavar="NAME")] = None,
    y_name: Annotated[Optional[str], typer.Option("--y", help="Name of the label array in the .npz (default: y or "
                                                  "labels).", metavar="NAME")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use the first N samples.", metavar="N")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per inference (dynamic-batch models).")] = 64,
    threads: Annotated[Optional[int], typer.Option("--threads", help="ONNX Runtime intra-op threads (default: "
                                                   "ONNX Runtime's).")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Measure a model's accuracy (top-1 / top-5) on labelled data with ONNX Runtime CPU.

    Examples:
      edgekit eval model.onnx --data test.npz
      edgekit eval small.int8.onnx --data test.npz --reference model.onnx --json -
      edgekit eval model.onnx --data images/ --limit 500
    """
    from edgekit.errors import InputError
    from edgekit.graph.io import load_model
    from edgekit.graph.paths import PathGuard
    from edgekit.optimize.evaluate import evaluate, prepare

    PathGuard().read_model(model).read(data, "data").read_model(reference, "reference model").write_json(json_path).check()
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    out = Output(json_path)
    m = load_model(model)
    ref = load_model(reference) if reference is not None else None
    ds = prepare(m, data, x_name=x_name, y_name=y_name, limit=limit)
    if ds.labels is None and ref is None:
        out.warn(f"{data} has no labels: only the outputs are checked; give labels (y) or --reference for a score")
    total = ds.num_samples * (2 if ref is not None else 1)
    with out.progress("evaluating", total=total) as update:
        rep = evaluate(m, ds, reference=ref, batch_size=batch_size, threads=threads, progress=update)
    rows = [["samples", rep.samples], ["data", rep.source]]
    if ds.labels is not None:
        rows += [["top-1", _pct(rep.top1)], ["top-5", _pct(rep.top5)]]
        if ref is not None:
            rows.append(["reference top-1", _pct(rep.reference_top1)])
    if ref is not None:
        rows.append(["top-1 agreement", _pct(rep.agreement)])
        rows += [[f"SQNR {k}", f"{v:.2f} dB"] for k, v in rep.sqnr_db.items()]
    rows.append(["time", f"{rep.seconds:.2f} s"])
    out.table(f"edgekit eval {model.name}", ["", ""], rows)
    for note in rep.notes:
        out.print(f"[dim]note: {note}[/dim]")
    out.emit({"model": str(model), "reference": None if reference is None else str(reference), **rep.to_dict()})


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
