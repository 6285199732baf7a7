"""`edgekit build MODEL.onnx --device NAME`: a TensorRT engine for one device profile."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import DeviceOpt, JsonOpt, ModelArg, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    best = "best"


class Backend(str, Enum):
    auto = "auto"
    python = "python"
    trtexec = "trtexec"


_EPILOG = (
    "Examples:\n\n"
    "  edgekit build model.onnx --device orin --dry-run\n\n"
    "  edgekit build model.int8.onnx --device xavier-nx --dla 0 --gpu-fallback -o model.engine\n\n"
    "  edgekit build model.onnx --device tx2 --backend trtexec --shapes input:1x3x224x224"
)


@handle_errors
def build(
    model: ModelArg,
    device: DeviceOpt,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Engine file (default: MODEL.<device>.engine).",
                                                   metavar="OUT")] = None,
    precision: Annotated[Precision, typer.Option("--precision", help="auto = the device profile's default.")] = Precision.auto,
    sparse: Annotated[Optional[bool], typer.Option("--sparse/--no-sparse",
                                                   help="2:4 sparse kernels (default: on where the board has sparse tensor cores).")] = None,
    dla: Annotated[Optional[int], typer.Option("--dla", help="Run on DLA core N.", metavar="N")] = None,
    gpu_fallback: Annotated[bool, typer.Option("--gpu-fallback", help="With --dla: let unsupported layers run on the GPU.")] = False,
    workspace: Annotated[Optional[int], typer.Option("--workspace", help="Builder workspace in MiB (default: profile).",
                                                     metavar="MiB")] = None,
    shapes: Annotated[Optional[List[str]], typer.Option("--shapes", help="Optimum input shape NAME:1x3x224x224 (repeatable).",
                                                        metavar="SPEC")] = None,
    min_shapes: Annotated[Optional[List[str]], typer.Option("--min-shapes", help="Minimum shape NAME:DIMS.", metavar="SPEC")] = None,
    max_shapes: Annotated[Optional[List[str]], typer.Option("--max-shapes", help="Maximum shape NAME:DIMS.", metavar="SPEC")] = None,
    calib_cache: Annotated[Optional[Path], typer.Option("--calib-cache", help="INT8 calibration cache (TensorRT 8.x-10.x).",
                                                        metavar="PATH")] = None,
    calib: Annotated[Optional[Path], typer.Option("--calib", help="Calibration data: .npy/.npz file or folder.",
                                                  metavar="PATH")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache",
                                                         help="Timing cache (default: ~/.cache/edgekit/timing/<device>-trt<ver>.cache).",
                                                         metavar="PATH")] = None,
    backend: Annotated[Backend, typer.Option("--backend", help="auto, python (TensorRT API) or trtexec.")] = Backend.auto,
    trt_version: Annotated[Optional[str], typer.Option("--trt-version", help="Target TensorRT version (default: profile).",
                                                       metavar="X.Y")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even what the profile advises against (INT8 on TX2).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the trtexec command and builder settings; build nothing.")] = False,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="Build on a board of a Ray cluster (HEAD:PORT "
                                                   "or local); the engine comes back to -o.", metavar="ADDRESS")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Build a TensorRT engine for a device profile (precision, sparsity and DLA from the profile)."""
    from edgekit.engine import build_engine, dry_run as do_dry_run, plan_build
    from edgekit.graph.paths import PathGuard

    out = Output(json_path)
    guard = PathGuard().read_model(model).read(calib_cache, "--calib-cache").read(calib, "--calib")
    guard.write_json(json_path)
    PathGuard().read_model(model).write(None if dry_run else output).check()  # before planning: symlink loops
    guard.check()
    plan = plan_build(model, device, output=output, precision=precision.value, sparse=sparse, dla_core=dla,
                      gpu_fallback=gpu_fallback, workspace_mib=workspace, shapes=shapes, min_shapes=min_shapes,
                      max_shapes=max_shapes, calib_cache=calib_cache, calib_data=calib, timing_cache=timing_cache,
                      backend=backend.value, trt_version=trt_version, force=force)
    if not dry_run:
        _guard_writes(guard, plan)
    if cluster and not dry_run:
        return _build_on_cluster(out, cluster, model, plan, precision.value, sparse, dla, gpu_fallback, workspace,
                                 shapes, backend.value, trt_version, force, calib_cache or calib or timing_cache)
    if dry_run:
        result = do_dry_run(plan)
    else:
        with out.progress(f"building {plan.output.name} (TensorRT {plan.trt_version})") as _:
            result = build_engine(plan)
    for w in result.warnings:
        out.warn(w)
    d = result.to_dict()
    rows = [["device", f"{plan.device_display} ({plan.device}, sm_{plan.sm.replace('.', '')})"],
            ["TensorRT", f"{result.trt_version} ({plan.generation} code path)"],
            ["precision", plan.precision + (f" ({plan.int8_mode})" if plan.int8_mode else "")],
            ["sparse", "on" if plan.sparse else "off"],
            ["DLA", "off" if plan.dla_core is None else f"core {plan.dla_core}" + (" + GPU fallback" if plan.gpu_fallback else "")],
            ["workspace", f"{plan.workspace_mib} MiB"],
            ["timing cache", str(plan.timing_cache)],
            ["backend", result.backend]]
    for key, value in d["builder_settings"].items():
        if key not in ("precision", "timing_cache"):
            rows.append([f"builder.{key}", value if not isinstance(value, list) else ", ".join(map(str, value)) or "-"])
    out.table("edgekit build" + (" (dry run)" if dry_run else ""), ["setting", "value"], rows)
    out.print("[bold]trtexec equivalent:[/bold]")
    out.print(d["trtexec_command_line"], markup=False)
    if not dry_run:
        out.print(f"engine: {result.engine_path} ({result.engine_bytes} bytes), manifest: {result.manifest_path}")
        if plan.dla_core is not None:
            fb = result.dla_fallback
            out.print(f"DLA: {len(fb)} layer(s) fell back to the GPU" + (": " + ", ".join(f["name"] for f in fb[:20]) if fb else ""))
        if plan.sparse:
            out.print(f"sparsity: eligible {result.sparsity_eligible or []}, picked {result.sparsity_picked or []}")
    out.emit(d)


def _guard_writes(guard, plan) -> None:
    """Add what a real build writes to ``guard`` and check: the engine, its manifest, the timing
    cache, and the calibration cache made from --calib data."""
    from edgekit.trt.manifest import manifest_path

    guard.write(plan.output).write(manifest_path(plan.output), "the engine manifest")
    guard.write(plan.timing_cache, "the timing cache", make_parents=True)
    if plan.calib_data is not None and plan.calib_cache is None:
        guard.write(Path(plan.output).with_suffix(".calib"), "the calibration cache")
    guard.check()


def _build_on_cluster(out, cluster, model, plan, precision, sparse, dla, gpu_fallback, workspace, shapes, backend,
                      trt_version, force, desk_file) -> None:
    """``--cluster``: build on a board of ``plan.device``; write the engine and its manifest to -o here."""
    from edgekit.cluster import build_on_board, connect
    from edgekit.errors import InputError
    from edgekit.graph.io import atomic_output
    from edgekit.trt.manifest import manifest_path

    if desk_file is not None:
        raise InputError("--cluster builds on the board: --calib, --calib-cache and --timing-cache name files on "
                         "this machine", hint="use a QDQ model (edgekit quantize), or build on the board itself")
    connect(cluster, devices=[plan.device])
    built = build_on_board(model, plan.device, dict(precision=precision, sparse=sparse, dla_core=dla,
                                                    gpu_fallback=gpu_fallback, workspace_mib=workspace, shapes=shapes,
                                                    backend=backend, trt_version=trt_version, force=force),
                           trt_version=trt_version)
    with atomic_output(plan.output) as tmp:
        tmp.write_bytes(built.engine)
    with atomic_output(manifest_path(plan.output)) as tmp:
        tmp.write_bytes(built.manifest)
    out.print(f"built on {built.node.get('host')} (node {built.node.get('node_id', '')[:8]}): {plan.output} "
              f"({len(built.engine)} bytes)")
    out.emit(dict(built.result, engine=str(plan.output), manifest=str(manifest_path(plan.output)), node=built.node))


def register(app: typer.Typer) -> None:
    app.command("build", epilog=_EPILOG)(build)
