"""`edgekit export SPEC -o OUT.onnx`: PyTorch -> ONNX, checked against PyTorch."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


class Exporter(str, Enum):
    auto = "auto"
    dynamo = "dynamo"
    torchscript = "torchscript"


@handle_errors
def export(
    spec: Annotated[str, typer.Argument(help="Built-in model name (resnet50, mobilenetv2, vit-tiny, yolo-tiny, ...), "
                                             "a TorchScript file, or package.module:factory.", metavar="SPEC")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the ONNX model.", metavar="OUT.onnx")],
    input_shape: Annotated[Optional[List[str]], typer.Option(
        "--input-shape", help="Input shape, e.g. 1x3x224x224; repeat for several inputs. "
                              "Default: the model family's recipe (exporters/).")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Make the batch axis dynamic.")] = False,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default 18, capped by --device).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", "-d", help="Target device: picks an opset its TensorRT "
                                                                       "parser accepts (TX2: 13).")] = None,
    exporter: Annotated[Exporter, typer.Option("--exporter", help="auto tries the dynamo exporter, then TorchScript.")]
    = Exporter.auto,
    keep_bn: Annotated[bool, typer.Option("--keep-bn", help="Keep BatchNormalization nodes (not folded into convs): "
                                                         "what data-free pruning (--criterion obspa) reads.")] = False,
    atol: Annotated[float, typer.Option("--atol", help="Parity tolerance (absolute).")] = 1e-4,
    rtol: Annotated[float, typer.Option("--rtol", help="Parity tolerance (relative to the largest output).")] = 1e-3,
    json_path: JsonOpt = None,
) -> None:
    """Export a PyTorch model to ONNX, then run onnx.checker, shape inference and a parity check against PyTorch.

    Examples:
      edgekit export resnet50 -o resnet50.onnx
      edgekit export mymodels:build_net -o net.onnx --input-shape 1x3x256x256 --dynamic-batch
      edgekit export yolo-tiny -o yolo.onnx --device tx2      # opset 13 for TensorRT 8.2
    """
    from edgekit.exporting import export as run_export
    from edgekit.graph.shapes import parse_shape

    from edgekit.graph.paths import PathGuard

    spec_file = Path(spec) if ":" not in spec and Path(spec).exists() else None
    PathGuard().read(spec_file, "the model file").write_model(output).write_json(json_path).check()
    out = Output(json_path)
    shapes = [parse_shape(s) for s in input_shape] if input_shape else None
    with out.progress("export", total=5) as update:
        report = run_export(spec, output, input_shapes=shapes, dynamic_batch=dynamic_batch, opset=opset,
                            device=device, exporter=exporter.value, atol=atol, rtol=rtol, keep_bn=keep_bn,
                            progress=lambda msg: update(description=msg))
    for w in report.warnings:
        out.warn(w)
    out.table(f"Exported {spec} -> {report.output}", ["field", "value"], [
        ["exporter", report.exporter + (" (fallback)" if report.fallback_reason else "")],
        ["opset", report.opset],
        ["inputs", ", ".join(f"{k}: {'x'.join(map(str, v))}" for k, v in report.input_shapes.items())
         + (" (dynamic batch)" if report.dynamic_batch else "")],
        ["nodes / params", f"{report.nodes} / {report.params / 1e6:.2f} M"],
        ["parity vs PyTorch", f"max abs {report.max_abs_error:.2e}, max rel {report.max_rel_error:.2e} (ok)"],
        ["size", f"{report.size_bytes / 1e6:.1f} MB"],
        ["time", f"{report.seconds:.1f} s"],
    ])
    out.emit(report.to_dict())


def register(app: typer.Typer) -> None:
    app.command("export")(export)
