"""The `edgekit` command. Each command lives in its own module with a ``register(app)`` function."""

from __future__ import annotations

import importlib
from typing import Optional

import typer
from typer.core import TyperOption
from typing_extensions import Annotated

from edgekit import __version__

# One module per command, in the order `edgekit --help` lists them.
COMMANDS = ["export", "prune", "quantize", "build", "profile", "estimate", "eval", "optimize", "deploy", "inspect",
            "devices", "doctor", "run", "sweep", "cluster", "worker"]

_typer_type_column = TyperOption.display_type_rich


def _type_column(self, ctx):
    """The help's type column; empty for a plain flag (typer writes ``<bool>`` there, although a
    flag takes no value)."""
    if self.is_flag and self.metavar is None:
        return None
    return _typer_type_column(self, ctx)


TyperOption.display_type_rich = _type_column

app = typer.Typer(
    name="edgekit",
    help="Take a trained PyTorch model to a fast engine on an NVIDIA Jetson board: "
    "export -> prune -> quantize -> build -> profile -> deploy. ONNX Runtime on CPU is the embedded default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """edgekit: edge-deployment toolchain for NVIDIA Jetson."""


for _name in COMMANDS:
    _mod = importlib.import_module(f"edgekit.cli.{_name}")
    _mod.register(app)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
