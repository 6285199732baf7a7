"""`edgekit sweep MODEL... --devices a,b --precision fp16,int8 --cluster ADDR -o OUT/`: one table for all boards."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


def _split(text: str) -> List[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _num(x: Optional[float], nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


@handle_errors
def sweep(
    models: Annotated[List[Path], typer.Argument(help="ONNX models.", metavar="MODEL...")],
    devices: Annotated[str, typer.Option("--devices", help="Comma-separated device profiles.")],
    cluster: Annotated[str, typer.Option("--cluster", help="HEAD:PORT, or `local` (this machine stands in "
                                                           "for every device).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the journal, sweep.json and the plot.",
                                         metavar="OUT/")],
    precision: Annotated[str, typer.Option("--precision", help="Comma-separated precisions.")] = "fp16",
    resume: Annotated[bool, typer.Option("--resume", help="Skip what OUT/journal.jsonl already has.")] = False,
    trt_version: Annotated[Optional[str], typer.Option("--trt-version", help="Use only boards with this TensorRT.",
                                                       metavar="X.Y")] = None,
    duration_s: Annotated[float, typer.Option("--duration-s", help="Timed duration per profile (s).")] = 3.0,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Per-task limit, then it is cancelled.")] = 900.0,
    retries: Annotated[int, typer.Option("--retries", help="Retries when a board dies mid-task (max 10).")] = 2,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw OUT/sweep.png.")] = True,
    json_path: JsonOpt = None,
) -> None:
    """Profile every (model, device, precision) in parallel across the boards of a cluster.

    Results are journaled to OUT/journal.jsonl as they arrive; --resume finishes an interrupted sweep.

    Examples:
      edgekit sweep a.onnx b.onnx --devices orin-nx,agx-orin --precision fp16,int8 --cluster 10.0.0.1:6379 -o sw/
      edgekit sweep a.onnx --devices cpu --cluster local -o sw/ --duration-s 1
    """
    from edgekit.cluster import connect, plot_sweep, run_sweep
    from edgekit.devices import get_profile
    from edgekit.errors import InputError
    from edgekit.graph.paths import PathGuard

    out = Output(json_path)
    devs = [get_profile(d).name for d in _split(devices)]
    precs = _split(precision)
    bad = [p for p in precs if p not in ("auto", "fp32", "fp16", "int8", "best")]
    if not devs or not precs or bad:
        raise InputError(f"unknown precision {bad[0]}" if bad else "--devices and --precision need at least one value",
                         hint="precisions: auto, fp32, fp16, int8, best")
    guard = PathGuard()
    for m in models:
        guard.read_model(m, "model")
    if output.exists() and not output.is_dir():
        raise InputError(f"-o {output} is a file, not a folder")
    # everything lands in OUT/ (made with its parents): check the place before Ray starts
    guard.write(output / "sweep.json", "-o", make_parents=True).write_json(json_path).check()
    connect(cluster, devices=devs, trt_version=trt_version)
    settings = {"duration_s": duration_s, "warmup_ms": min(200.0, duration_s * 100)}
    with out.progress("sweep", total=len(models) * len(devs) * len(precs)) as update:
        res = run_sweep(models, devs, precs, output, resume=resume, settings=settings, trt_version=trt_version or "",
                        timeout_s=timeout_s, max_retries=retries,
                        on_result=lambda entry, done, total: update(completed=done, total=total))
    rows = [[r["model"], r["device"], r["precision"], r["board"], r["backend"] + (" (stand-in)" if r["stand_in"] else ""),
             _num(r["latency_ms"]["median"], 3), _num(r["latency_ms"]["p99"], 3), _num(r["throughput_qps"], 1),
             _num(r["power_mw"], 0), _num(r["energy_mj_per_inference"])] for r in res.rows]
    out.table(f"sweep on {cluster} ({len(res.rows)} done, {len(res.failed)} failed, {res.resumed} from the journal)",
              ["model", "device", "precision", "board", "backend", "median ms", "p99 ms", "qps", "power mW",
               "mJ/inference"], rows)
    for f in res.failed:
        out.warn(f"{f['model']} on {f['device']} ({f['precision']}) failed: {f['error']}", markup=False)
    for b in res.lost_boards:
        out.warn(f"board lost during the sweep: {b['name']}", markup=False)
    if any(r["stand_in"] for r in res.rows):
        out.warn("rows marked stand-in ran the ONNX on ONNX Runtime on a CPU, not on the board's TensorRT")
    payload = res.to_dict()
    if plot and res.rows:
        payload["plot"] = str(plot_sweep(res.rows, output / "sweep.png"))
        out.print(f"plot written to {payload['plot']}")
    from edgekit.graph.io import atomic_output

    with atomic_output(output / "sweep.json") as tmp:
        import json

        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    out.print(f"journal: {res.journal}; results: {output / 'sweep.json'}")
    out.emit(payload)
    if res.failed:
        raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
