"""`edgekit prune IN.onnx -o OUT.onnx --ratio R | --flops-target F | --params-target P`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, ModelArg, Output, OutputOpt, handle_errors
from edgekit.cli._device_defaults import DeviceOpt, DeviceDefaults

# Library imports sit inside the commands: `edgekit --help` stays instant.

# Every criterion edgekit registers, for the help text (importing the registry would slow `--help`);
# tests/foundation/test_i17_small.py keeps it equal to edgekit.prune.criteria.names().
_BUILTIN_CRITERIA = ("l1", "l2", "bn-scale", "random", "obspa", "obspa-seq", "obspa-analytic", "obspa-nocomp")
_CRITERION_HELP = "Importance criterion: " + ", ".join(_BUILTIN_CRITERIA) + "."
# edgekit.prune.core.DEFAULT_ROUND_TO, for the help text (tests/foundation/test_device_defaults.py keeps them equal)
_DEFAULT_ROUND_TO = 16
_ROUND_HELP = ("Keep channel counts at multiples of N. Default: the --device profile's channel multiple at its "
               f"default precision (8 for FP16 tensor cores, 32 for INT8), else {_DEFAULT_ROUND_TO}, which measured "
               "fastest on ONNX Runtime CPU across the built-in corpus (bench/prune_rounding.py); groups under "
               "4x it round to half of it, and so on. An explicit N is exact.")


def _criterion_names() -> List[str]:
    # the registry is cheap to import (numpy only); fall back to the built-ins if anything fails
    try:
        from edgekit.prune import criteria

        return criteria.names()
    except Exception:  # noqa: BLE001
        return list(_BUILTIN_CRITERIA)


@handle_errors
def prune_cmd(
    model: ModelArg,
    output: OutputOpt,
    ratio: Annotated[Optional[float], typer.Option("--ratio", help="Fraction of channels removed per group (uniform) or overall (--global), in [0, 1).")] = None,
    flops_target: Annotated[Optional[float], typer.Option("--flops-target", help="Fraction of FLOPs to keep, e.g. 0.5.")] = None,
    params_target: Annotated[Optional[float], typer.Option("--params-target", help="Fraction of parameters to keep.")] = None,
    criterion: Annotated[str, typer.Option("--criterion", help=_CRITERION_HELP)] = "l1",
    global_scope: Annotated[bool, typer.Option("--global/--uniform", help="One threshold across groups (--global) or the same ratio in every group (--uniform, default).")] = False,
    round_to: Annotated[Optional[int], typer.Option("--round-to", help=_ROUND_HELP, metavar="N", show_default=False)] = None,
    device: DeviceOpt = None,
    precision: Annotated[Optional[str], typer.Option("--precision", metavar="PREC", help="With --device: whose channel "
                                                     "multiple --round-to takes (fp32, fp16, int8, dla-fp16, dla-int8; "
                                                     "default: the profile's default precision).")] = None,
    min_channels: Annotated[int, typer.Option("--min-channels", help="Never keep fewer channels than this in a group.")] = 1,
    protect: Annotated[Optional[List[str]], typer.Option("--protect", help="Node or tensor name whose channels must not change (repeatable).")] = None,
    calib: Annotated[Optional[Path], typer.Option("--calib", help="Calibration inputs (.npy, [N,...]) for criteria that use data.")] = None,
    attention: Annotated[str, typer.Option("--attention", help="Multi-head attention: remove whole heads (heads, default) or the same dims in every head (head-dims).")] = "heads",
    prune_layernorm: Annotated[bool, typer.Option("--prune-layernorm", help="Also prune through LayerNorm over channels (approximate: its statistics change; such groups are marked in the report).")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Print every group: its coupled operators and why a group was not pruned.")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Structurally prune whole channels of an ONNX model (SPA-style, any architecture).

    Examples:
      edgekit prune resnet50.onnx -o r50_pruned.onnx --flops-target 0.5
      edgekit prune model.onnx -o small.onnx --ratio 0.3 --round-to 8 --explain
      edgekit prune model.onnx -o nx.onnx --flops-target 0.5 --device xavier-nx   (INT8: multiples of 32)
      edgekit prune vit.onnx -o vit_small.onnx --ratio 0.5 --attention heads --prune-layernorm
      edgekit prune model.onnx -o obs.onnx --ratio 0.3 --criterion obspa-seq --calib calib.npy
    """
    from edgekit.errors import InputError

    if attention not in ("heads", "head-dims"):
        raise InputError(f"unknown --attention '{attention}'", hint="choose heads or head-dims")
    names = _criterion_names()
    if criterion not in names:
        raise InputError(f"unknown criterion '{criterion}'", hint="choose one of: " + ", ".join(names))
    from edgekit.graph.paths import PathGuard

    dev = DeviceDefaults(device)
    round_default, adaptive = _round_default(dev, round_to, precision)
    PathGuard().read_model(model).read(calib, "calibration data").write_model(output).write_json(json_path).check()
    out = Output(json_path)
    from edgekit.prune.api import prune_file

    calib_arr = None
    if calib is not None:
        import numpy as np

        if not calib.exists():
            raise InputError(f"no such calibration file: {calib}")
        try:
            calib_arr = np.load(str(calib))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read calibration data {calib}: {exc}", hint="give a .npy array [N, ...]") from exc
    with out.progress("pruning", total=None) as update:
        report, dg = prune_file(model, output, ratio=ratio, flops_target=flops_target, params_target=params_target,
                                criterion=criterion, scope="global" if global_scope else "uniform", round_to=round_to,
                                round_to_default=round_default, adaptive_round=adaptive, min_channels=min_channels, protect=tuple(protect or ()), calib=calib_arr,
                                explain=explain, progress=update, attention=attention,
                                allow_norm_approx=prune_layernorm)
    d = report.to_dict()
    out.table(f"edgekit prune {model.name} -> {output.name}", ["", "before", "after", "ratio"], [
        ["FLOPs", f"{report.flops_before / 1e9:.3f} G", f"{report.flops_after / 1e9:.3f} G", f"{report.flops_ratio:.3f}"],
        ["params", f"{report.params_before / 1e6:.3f} M", f"{report.params_after / 1e6:.3f} M", f"{report.params_ratio:.3f}"],
        ["groups", f"{len(report.groups) + len(report.skipped)}", f"{d['groups_pruned']} pruned",
         f"{len(report.skipped)} skipped"],
    ])
    out.print(f"criterion {report.criterion}, {report.scope}, ratio {report.ratio:.3f}, round-to {report.round_to}, "
              f"{report.seconds:.2f} s")
    dev.render(out, always=True)
    if explain:
        for text in dg.groups + dg.skipped:
            out.print(text, markup=False)
    elif report.skipped:
        out.print(f"[dim]{len(report.skipped)} group(s) not pruned; --explain says why[/dim]")
    for note in report.notes:
        out.print(f"[dim]note: {note}[/dim]")
    for warning in report.warnings:
        out.warn(warning)
    out.emit(dict(d, output=str(output), device=dev.to_dict()))


def _round_default(dev: DeviceDefaults, given: Optional[int], precision: Optional[str] = None) -> Tuple[int, bool]:
    """The rounding used when --round-to is left out, and whether it adapts to small groups: the
    profile's channel multiple at its default precision (exact: TensorRT pads to it anyway), else
    edgekit's measured default, halved for groups under 4x it. What was used, and why, goes into ``dev``."""
    from edgekit.errors import InputError
    from edgekit.prune.core import DEFAULT_ROUND_TO

    prof = dev.profile
    if precision is not None and prof is None:
        raise InputError("--precision picks a device profile's channel multiple: give --device too",
                         hint="e.g. --device xavier-nx --precision fp16, or --round-to N")
    multiple = prof.channel_multiple(precision) if prof else None
    if precision is not None and multiple is None:
        known = ", ".join(p for p, _ in prof.defaults.channel_multiple) or "none"
        raise InputError(f"{prof.name} names no channel multiple for --precision {precision}",
                         hint=f"its profile has: {known}")
    if multiple is not None:
        prec = precision or prof.default_precision
        dev.take("--round-to", given, multiple, f"channel multiple at {prec}: {prof.defaults.channel_multiple_reason}")
        return multiple, False
    why = ("fastest on ONNX Runtime CPU across the built-in corpus (bench/prune_rounding.py); groups under 4x "
           "it round to half of it, and so on")
    if prof:
        why = f"{prof.name} names no channel multiple for {prof.default_precision}; " + why
    dev.take("--round-to", given, DEFAULT_ROUND_TO, why, source="edgekit default")
    return DEFAULT_ROUND_TO, True


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)
