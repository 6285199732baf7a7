"""`edgekit run pipeline.toml`: the chain export -> prune -> quantize -> build -> profile, one device.

A thin layer over the commands: each ``[[step]]`` is one edgekit command line, run as its own
process in the pipeline file's folder, in order, stopping at the first that fails. The top-level
``device`` is added as ``--device`` to every step whose command takes it and that names none, so
one board drives every stage's defaults. Each step's ``--json`` report is collected into one.

    device = "xavier-nx"
    [[step]]
    command = "prune"
    args = ["r50.onnx", "-o", "r50.pruned.onnx", "--flops-target", "0.5"]
    [[step]]
    command = "quantize"
    args = ["r50.pruned.onnx", "-o", "r50.int8.onnx", "--calib", "calib.npy"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Commands a step may run, and those that take --device ("inspect sparsity" too).
STEP_COMMANDS = ("export", "prune", "quantize", "build", "profile", "deploy", "inspect", "estimate", "optimize")
DEVICE_COMMANDS = ("export", "prune", "quantize", "build", "profile", "deploy", "estimate", "optimize")


def _load(path: Path) -> tuple:
    """``(device, steps)`` from the pipeline file, or a one-line InputError naming what is wrong."""
    from edgekit.devices import get_profile, tomllib
    from edgekit.errors import InputError

    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read pipeline {path}: {exc.strerror or exc}", hint="check the path") from exc
    try:
        raw = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"pipeline {path} is not valid TOML: {exc}") from exc
    device = raw.get("device")
    if device is not None:
        if not isinstance(device, str):
            raise InputError(f"pipeline {path}: device = {device!r} is not a name")
        device = get_profile(device).name  # an unknown board fails before any step runs
    steps = raw.get("step", [])
    if not isinstance(steps, list) or not steps:
        raise InputError(f"pipeline {path} has no [[step]] tables", hint="see `edgekit run --help` for the format")
    out = []
    for i, step in enumerate(steps, 1):
        cmd = step.get("command") if isinstance(step, dict) else None
        args = step.get("args", []) if isinstance(step, dict) else None
        if cmd not in STEP_COMMANDS:
            raise InputError(f"pipeline {path}: step {i} command = {cmd!r} is not an edgekit command",
                             hint="one of: " + ", ".join(STEP_COMMANDS))
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise InputError(f"pipeline {path}: step {i} args is not a list of strings")
        if "--json" in args:
            raise InputError(f"pipeline {path}: step {i} sets --json; `edgekit run` collects each step's report")
        out.append((cmd, list(args)))
    return device, out


def _argv(cmd: str, args: List[str], device: Optional[str]) -> List[str]:
    takes_device = cmd in DEVICE_COMMANDS or (cmd == "inspect" and args[:1] == ["sparsity"])
    if device and takes_device and not ({"--device", "-d"} & set(args)):
        args = args + ["--device", device]
    return [cmd] + args


@handle_errors
def run_cmd(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline TOML file (top-level device, [[step]] tables).",
                                             metavar="PIPELINE")],
    json_path: JsonOpt = None,
) -> None:
    """Run a pipeline of edgekit commands with one --device (a thin layer: each step is one command).

    Example: edgekit run pipeline.toml --json report.json
    """
    from edgekit.graph.paths import PathGuard

    PathGuard().read(pipeline, "pipeline").write_json(json_path).check()
    out = Output(json_path)
    device, steps = _load(pipeline)
    cwd = pipeline.resolve().parent
    # the steps run this same edgekit, wherever the pipeline's folder is
    import edgekit

    here = str(Path(edgekit.__file__).resolve().parents[1])
    env = dict(os.environ, EDGEKIT_PROGRESS="0",
               PYTHONPATH=os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    results: List[dict] = []
    failed = None
    with tempfile.TemporaryDirectory() as td, out.progress("pipeline", total=len(steps)) as update:
        for i, (cmd, args) in enumerate(steps, 1):
            argv = _argv(cmd, args, device)
            report = Path(td) / f"{i}.json"
            update(advance=0, description=f"step {i}: edgekit {cmd}")
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "edgekit", *argv, "--json", str(report)], cwd=str(cwd),
                                  env=env, capture_output=True, text=True)
            row = {"step": i, "argv": ["edgekit"] + argv, "returncode": proc.returncode,
                   "seconds": round(time.perf_counter() - t, 2),
                   "report": json.loads(report.read_text()) if report.is_file() else None}
            results.append(row)
            update()
            if proc.returncode != 0:
                row["stderr"] = proc.stderr.strip().splitlines()[-3:]
                failed = row
                break
    out.table(f"edgekit run {pipeline.name}" + (f" (device {device})" if device else ""),
              ["step", "command", "status", "seconds"],
              [[r["step"], " ".join(r["argv"]), "ok" if r["returncode"] == 0 else f"exit {r['returncode']}",
                f"{r['seconds']:.1f}"] for r in results])
    if failed is not None:
        for line in failed["stderr"]:
            out.print(f"  {line}", markup=False)
    out.emit({"pipeline": str(pipeline), "device": device, "steps": results, "ok": failed is None})
    if failed is not None:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
