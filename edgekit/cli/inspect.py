"""`edgekit inspect ...`: read-only checks on a model (QDQ placement rules, 2:4 sparsity pattern)."""

import importlib

import typer

inspect_app = typer.Typer(help="Read-only checks on a model: QDQ placement for TensorRT, 2:4 sparsity pattern.",
                          no_args_is_help=True)

# Each sub-check lives in its own module with `register(inspect_app)`.
SUBCOMMANDS = ["inspect_qdq", "inspect_sparsity"]


def register(app: typer.Typer) -> None:
    for name in SUBCOMMANDS:
        importlib.import_module(f"edgekit.cli.{name}").register(inspect_app)
    app.add_typer(inspect_app, name="inspect")
