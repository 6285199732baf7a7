"""`edgekit profile MODEL [MODEL2 ...] --device NAME`: the latency harness."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


class Backend(str, Enum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    trtexec = "trtexec"


def _fmt(x: Optional[float], nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


@handle_errors
def profile(
    models: Annotated[List[Path], typer.Argument(help="One or more ONNX models (or TensorRT engines on a board).",
                                                 metavar="MODEL [MODEL2 ...]")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile (cpu, orin, xavier-nx, tx2, ...).")]
    = "cpu",
    backend: Annotated[Backend, typer.Option("--backend", help="auto: ONNX Runtime for .onnx, TensorRT/trtexec "
                                                             "for engines.")] = Backend.auto,
    warmup_ms: Annotated[float, typer.Option("--warmup-ms", help="Warm-up time before timing (ms).")] = 200.0,
    duration_s: Annotated[float, typer.Option("--duration-s", help="Minimum timed duration (s).")] = 3.0,
    iterations: Annotated[int, typer.Option("--iterations", help="Minimum timed queries.")] = 10,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch size for a dynamic batch axis.")] = None,
    input_path: Annotated[Optional[str], typer.Option("--input", help="Input data: .npy (one input) or .npz "
                                                                      "(arrays named after inputs).",
                                                      metavar="PATH")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="ONNX Runtime intra-op threads.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Draw the latency distribution to PATH.png.",
                                                 metavar="PATH.png")] = None,
    export_layers: Annotated[Optional[Path], typer.Option("--export-layers", help="Write per-layer times "
                                                          "(TensorRT / trtexec backends) to PATH.json for "
                                                          "`edgekit estimate --refit`.", metavar="PATH")] = None,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="Profile on a board of a Ray cluster "
                                                   "(HEAD:PORT or local); see `edgekit cluster`.",
                                                   metavar="ADDRESS")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Measure latency with trtexec-grade statistics (min/max/mean/median/p90/p95/p99, throughput, CV).

    Several models are timed one after the other with the same settings and shown side by side
    with ratios to the first.

    Examples:
      edgekit profile resnet18.onnx --device cpu
      edgekit profile base.onnx pruned.onnx int8.onnx --threads 2 --plot latency.png --json out.json
      edgekit profile model.engine --device orin --backend tensorrt     # on the board
    """
    from edgekit.bench.harness import HarnessSettings, compare, profile_model
    from edgekit.devices import get_profile
    from edgekit.graph.paths import PathGuard

    out = Output(json_path)
    get_profile(device)  # fail fast on an unknown device
    settings = HarnessSettings(warmup_ms=warmup_ms, duration_s=duration_s, iterations=iterations, batch=batch,
                               threads=threads, input_path=input_path, profile_layers=export_layers is not None)
    settings.validate()
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        from edgekit.errors import InputError

        raise InputError(f"--plot wants a .png, .svg or .pdf path, got {plot.name}")
    guard = PathGuard()
    for m in models:
        guard.read_model(m, "model")
    guard.read(input_path, "--input").write(plot, "--plot").write(export_layers, "--export-layers")
    guard.write_json(json_path).check()
    reports = []
    for i, m in enumerate(models):
        label = f"[{i + 1}/{len(models)}] {m.name}"
        with out.progress(label, total=100) as update:
            if cluster:  # on a board of the farm: the report comes back here
                from edgekit.cluster import connect, profile_on_board

                connect(cluster, devices=[device])
                reports.append(profile_on_board(m, device, settings=settings.to_dict(), backend=backend.value).report)
                continue
            reports.append(profile_model(m, device=device, backend=backend.value,
                                         settings=HarnessSettings(**settings.to_dict()),
                                         progress=lambda **kw: update(**kw)))
    for r in reports:
        for w in r.warnings:
            out.warn(f"{Path(r.model).name}: {w}")
    if export_layers is not None:
        _export_layers(out, reports, export_layers)
    cmp = compare(reports)
    _print_latency(out, reports, cmp)
    if plot is not None:
        from edgekit.bench.plot import plot_latency

        plot_latency(reports, plot)
        out.print(f"plot written to {plot}")
    if len(reports) == 1:
        payload = reports[0].to_dict()
    else:
        payload = {"model": reports[0].model, "device": reports[0].device, "backend": reports[0].backend,
                   "latency_ms": reports[0].latency.to_dict(), "throughput_qps": reports[0].throughput_qps,
                   "models": [r.to_dict() for r in reports], "comparison": cmp}
    out.emit(payload)


def _print_latency(out: Output, reports, cmp) -> None:
    """The latency table (with ratios to the first model), then per-model phases and board power."""
    rows = []
    for r, c in zip(reports, cmp):
        lat = r.latency
        row = [Path(r.model).name, r.backend, _fmt(lat.min), _fmt(lat.median), _fmt(lat.mean), _fmt(lat.p90),
               _fmt(lat.p95), _fmt(lat.p99), _fmt(lat.max), f"{r.throughput_qps:.1f}", f"{lat.cv_percent:.2f}%",
               r.iterations]
        if len(reports) > 1:
            row.append(f"{c['speedup_vs_first']:.2f}x")
        rows.append(row)
    cols = ["model", "backend", "min", "median", "mean", "p90", "p95", "p99", "max", "qps", "CV", "queries"]
    if len(reports) > 1:
        cols.append("speedup vs first")
    out.table(f"Latency (ms) on {reports[0].device}", cols, rows)
    for r in reports:
        phases = [(k, r.phases[k]) for k in ("h2d_ms", "gpu_compute_ms", "d2h_ms", "enqueue_ms") if k in r.phases]
        if phases:
            out.print(f"{Path(r.model).name}: " + ", ".join(f"{k} median {s.median:.3f}" for k, s in phases))
        if "power_mw" in r.extra and r.extra["power_mw"]:
            out.print(f"{Path(r.model).name}: board power {r.extra['power_mw'].get('mean', 0):.0f} mW, "
                      f"{r.extra.get('energy_mj_per_inference') or 0:.2f} mJ per inference")


def _export_layers(out: Output, reports, path: Path) -> None:
    """The first model's per-layer times, in the format `edgekit estimate --refit` reads."""
    import json

    from edgekit.errors import InputError
    from edgekit.graph.io import atomic_output
    from edgekit.trt.layer_profile import FORMAT

    r = reports[0]
    layers = (r.extra.get("layers") or {}).get("layers") or []
    if not layers:
        raise InputError(f"no per-layer times from the {r.backend} backend",
                         hint="--export-layers needs --backend tensorrt or trtexec (on the board)")
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps({"format": FORMAT, "model": r.model, "device": r.device,
                                         "backend": r.backend, "batch": r.batch, "layers": layers}, indent=1))
    out.print(f"per-layer times written to {path}")


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
