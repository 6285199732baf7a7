"""`edgekit optimize MODEL.onnx --device NAME (--latency-ms X | --speedup S) --data DATA -o OUT/`:
the most accurate compressed model that meets a latency budget; `--recipe recipe.json` replays one."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import DeviceOpt, JsonOpt, ModelArg, Output, handle_errors

# Library imports sit inside the command: `edgekit --help` stays instant.

EXIT_OVER_BUDGET = 3
TABLE_ROWS = 12


def _floats(text: Optional[str], what: str) -> Optional[List[float]]:
    from edgekit.errors import InputError

    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} takes comma-separated numbers, got {text!r}") from None


@handle_errors
def optimize_cmd(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder: model.onnx, recipe.json, "
                                         "report.json, pareto.png and the search journal.", metavar="OUT")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Labelled evaluation data (as for `edgekit eval`); "
                                                 "without labels the score is top-1 agreement with MODEL.",
                                                 metavar="DATA")] = None,
    device: DeviceOpt = "cpu",
    latency_ms: Annotated[Optional[float], typer.Option("--latency-ms", help="Latency budget per query, ms.")] = None,
    speedup: Annotated[Optional[float], typer.Option("--speedup", help="Budget as a speed-up over MODEL (2: half its "
                                                     "latency).")] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Accepted accuracy loss, points.")] = 1.0,
    calib: Annotated[Optional[Path], typer.Option("--calib", help="Calibration samples (.npz/.npy/image folder) for "
                                                  "INT8 and data-aware pruning; default: the first samples of --data.",
                                                  metavar="CALIB")] = None,
    budget_minutes: Annotated[Optional[float], typer.Option("--budget-minutes", help="Stop the search after M minutes.",
                                                            metavar="M")] = None,
    trials: Annotated[int, typer.Option("--trials", help="Pruning choices to try (each gives an FP32 and an INT8 "
                                        "candidate).")] = 24,
    batch: Annotated[int, typer.Option("--batch", help="Batch size the latency is measured at.")] = 1,
    threads: Annotated[int, typer.Option("--threads", help="ONNX Runtime intra-op threads for timing.")] = 1,
    duration_s: Annotated[float, typer.Option("--duration-s", help="Timing per candidate, seconds.")] = 0.5,
    levels: Annotated[Optional[str], typer.Option("--levels", help="Pruning levels (fractions of FLOPs kept), e.g. "
                                                  "0.7,0.5,0.3.", metavar="LIST")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Replay this recipe.json instead of searching.",
                                                   metavar="RECIPE")] = None,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw OUT/pareto.png.")] = True,
    latency_aware: Annotated[bool, typer.Option("--latency-aware/--no-latency-aware", help="Also prune by a per-layer "
                                                "latency table of MODEL on the device (built once, cached in OUT/) "
                                                "instead of by FLOPs.")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Find the most accurate pruned / INT8 variant of MODEL that meets a latency budget.

    On --device cpu every latency is measured with ONNX Runtime; on a Jetson profile it is ESTIMATED
    by edgekit's cost model (labelled so). INT8 is kept only where it is faster than FP32 (the gate).
    The search journal in OUT/ makes a rerun of the same command resume. Exit code 3: no candidate
    met the budget (or --max-drop); the best one is still written, labelled as such.

    Examples:
      edgekit optimize model.onnx --device cpu --speedup 2 --data test.npz --calib train.npz -o opt/
      edgekit optimize model.onnx --latency-ms 1.5 --data test.npz --batch 32 --trials 12 -o opt/
      edgekit optimize model.onnx --recipe opt/recipe.json --data test.npz -o replay/
    """
    from edgekit.graph.paths import PathGuard

    guard = PathGuard().read_model(model).read(data, "data").read(calib, "calibration data").read(recipe, "recipe")
    guard.write(output, "output folder", folder=True).write_json(json_path).check()
    out = Output(json_path)
    if recipe is not None:
        return _replay(out, model, recipe, data, calib, output, batch, threads, duration_s, json_path)
    _search(out, model, data, device, latency_ms, speedup, max_drop, calib, budget_minutes, trials, batch, threads,
            duration_s, _floats(levels, "--levels"), output, plot, latency_aware)


def _load(out: Output, model: Path, data: Optional[Path], calib: Optional[Path], samples: int):
    """The model, its checked evaluation data and the calibration samples (all checked before any search)."""
    from edgekit.errors import InputError
    from edgekit.graph.io import load_model
    from edgekit.optimize.evaluate import prepare

    m = load_model(model)
    ds = prepare(m, data) if data is not None else None
    if calib is not None:
        cal = prepare(m, calib).calibration(samples)
        source = str(calib)
    elif ds is not None:
        cal, source = ds.calibration(samples), str(data)
        out.warn("calibrating on the first samples of --data (the evaluation data); give --calib with a separate "
                 "split for an unbiased score")
    else:
        raise InputError("optimize needs --data (labelled data, or inputs to compare against MODEL)")
    return m, ds, cal, source


def _search(out: Output, model: Path, data, device, latency_ms, speedup, max_drop, calib, budget_minutes, trials,
            batch, threads, duration_s, levels, output: Path, plot: bool, latency_aware: bool = False) -> None:
    from edgekit.errors import InputError
    from edgekit.optimize import output as files
    from edgekit.optimize.search import LEVELS, JOURNAL, OptimizeSettings, optimize

    settings = OptimizeSettings(device=device, latency_ms=latency_ms, speedup=speedup, max_drop=max_drop,
                                trials=trials, budget_minutes=budget_minutes, batch=batch, threads=threads,
                                duration_s=duration_s, levels=tuple(levels or LEVELS), latency_aware=latency_aware)
    settings.validate()
    if data is None:
        raise InputError("optimize needs --data (labelled data, or inputs to compare against MODEL)")
    m, ds, cal, source = _load(out, model, data, calib, settings.calib_samples)
    try:
        with out.progress("searching", total=trials) as update:
            res = optimize(m, settings, ds, cal, output, progress=update)
    except KeyboardInterrupt:
        out.err.print(f"interrupted: the finished trials are kept in {output / JOURNAL}; rerun the same command to "
                      "resume")
        raise
    written = files.write(res, output, str(model), source, plot=plot)
    _render(out, model, res, written)
    out.emit({"input": str(model), **res.to_dict(), "files": written})
    if res.status != "met":
        raise typer.Exit(code=EXIT_OVER_BUDGET)


def res_dir(written: dict) -> str:
    return str(Path(next(iter(written.values()))).parent) if written else "-"


def _ms(c) -> str:
    return "-" if c.latency is None else f"{c.latency.median_ms:.3f}"


def _render(out: Output, model: Path, res, written: dict) -> None:
    from edgekit.optimize.search import MEASURED

    metric = "top-1" if res.metric == "top1" else "agreement"
    base = res.baseline
    ok = sorted((c for c in res.candidates if c.latency is not None), key=lambda c: c.latency.median_ms)
    rows = [["input model", base.recipe.precision, _ms(base), f"{100 * base.accuracy:.2f}", "1.00", "baseline"]]
    shown = [c for c in ok if c.status == "ok"][:TABLE_ROWS] + [c for c in ok if c.status != "ok"][:4]
    for c in shown:
        mark = "PICK" if res.pick is c else c.status
        rows.append([c.recipe.label().rsplit(" + ", 1)[0], c.recipe.precision, _ms(c),
                     "-" if c.accuracy is None else f"{100 * c.accuracy:.2f}", f"{c.flops_ratio:.2f}", mark])
    kind = "measured, ONNX Runtime CPU" if res.latency_kind == MEASURED else f"ESTIMATED for {res.device}"
    out.table(f"edgekit optimize {model.name}: {len(res.candidates)} candidates ({kind}), budget {res.budget_ms:.3f} ms",
              ["pruning", "precision", "ms", metric + " %", "FLOPs", ""], rows)
    if res.resumed_trials:
        out.print(f"resumed: {res.resumed_trials} trial(s) loaded from the journal")
    if res.pick is not None:
        p = res.pick
        drop = 100 * ((base.accuracy or 0) - (p.accuracy or 0))
        out.print(f"pick: [bold]{p.recipe.label()}[/bold]  {_ms(p)} ms, {metric} {100 * p.accuracy:.2f}% "
                  + (f"({drop:.2f} points lost)" if drop >= 0.005 else
                     f"({-drop:.2f} points gained)" if drop <= -0.005 else "(no accuracy lost)"))
    if res.final:
        f = res.final
        out.print(f"re-measured side by side: input {f['original_ms']:.3f} ms, pick {f['pick_ms']:.3f} ms "
                  f"({f['speedup']:.2f}x), {metric} {100 * f['accuracy']:.2f}%")
    for w in res.warnings:
        out.warn(w)
    if res.status != "met":
        out.warn(f"[bold]{res.status.upper()}[/bold]: {res.advice}; the output is that best candidate, labelled "
                 f"'{res.status}' in report.json")
    out.print("wrote " + ", ".join(sorted(Path(v).name for v in written.values())) + f" to {res_dir(written)}")


def _replay(out: Output, model: Path, recipe_path: Path, data, calib, output: Path, batch: int, threads: int,
            duration_s: float, json_path) -> None:
    """Rebuild the recipe's model, time it beside MODEL (CPU) and score it when --data is given."""
    import json

    from edgekit.errors import InputError
    from edgekit.graph.io import load_model, save_model
    from edgekit.optimize import output as files
    from edgekit.optimize import recipe as rcp
    from edgekit.optimize.evaluate import evaluate, prepare
    from edgekit.optimize.latency import measure_cpu

    r = rcp.load(recipe_path)
    recorded = json.loads(recipe_path.read_text()).get("calibration")
    m = load_model(model)
    ds = prepare(m, data) if data is not None else None
    source = calib or (Path(recorded) if recorded and Path(recorded).exists() else None) or data
    cal = prepare(m, source).calibration(r.calib_samples) if source is not None else None
    if cal is None and (r.precision == "int8" or (r.prunes and r.criterion != "l1")):
        raise InputError(f"the recipe ({r.label()}) needs calibration data and its file {recorded} is not there",
                         hint="give --calib (the samples the search calibrated on)")
    with out.progress("building", total=None):
        built = rcp.build(m, r, cal)
    output.mkdir(parents=True, exist_ok=True)
    save_model(built, output / files.MODEL)
    result = {"input": str(model), "recipe": r.to_dict(), "label": r.label(), "output": str(output / files.MODEL),
              "calibration": None if source is None else str(source)}
    rows = [["recipe", r.label()], ["output", str(output / files.MODEL)]]
    if ds is not None:
        feeds = rcp.feeds_for(ds.arrays, batch)
        o = measure_cpu(m, feeds, duration_s, threads).median_ms
        p = measure_cpu(built, feeds, duration_s, threads).median_ms
        acc = evaluate(built, ds, reference=m, threads=threads)
        result.update(original_ms=o, latency_ms=p, top1=acc.top1, agreement=acc.agreement)
        rows += [["latency (ORT CPU, measured)", f"input {o:.3f} ms, replayed {p:.3f} ms ({o / p:.2f}x)"],
                 ["top-1", "-" if acc.top1 is None else f"{100 * acc.top1:.2f}%"],
                 ["agreement with input", f"{100 * (acc.agreement or 0):.2f}%"]]
    out.table(f"edgekit optimize --recipe {recipe_path.name}", ["", ""], rows)
    out.emit(result)


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize_cmd)
