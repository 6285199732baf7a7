"""Shared CLI pieces: option aliases, the output object, and error rendering."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typing_extensions import Annotated

from edgekit.errors import EdgekitError

# Library imports (and numpy, rich.progress) sit inside the functions that use them: `edgekit --help`
# stays instant.

# ---- option aliases (flag names are a contract: scripts rely on them) -------------------------

JsonOpt = Annotated[
    Optional[str],
    typer.Option("--json", help="Write the machine-readable result to PATH ('-' for stdout; progress output is then off).",
                 metavar="PATH"),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="Device profile name or alias (see `edgekit devices`).", metavar="NAME")
]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output file.", metavar="OUT")]
ModelArg = Annotated[Path, typer.Argument(help="An ONNX model file.", metavar="MODEL")]


def _debug() -> bool:
    return os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0", "false", "no")


class Output:
    """One output object per command: rich text for people, JSON for scripts.

    With ``--json -`` the JSON goes to stdout and everything human goes to stderr with progress
    bars off, so ``edgekit ... --json - | jq`` always parses.
    """

    def __init__(self, json_path: Optional[str] = None):
        self.json_path = json_path
        self.machine = json_path == "-"
        self.console = Console(stderr=self.machine, highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            self.console.width = 160  # piped into a file or CI log: don't fold tables to 80 columns
        self.warnings: List[str] = []

    # -- human output --
    def print(self, *args: Any, **kwargs: Any) -> None:
        if not self.machine:
            self.console.print(*args, **kwargs)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.err.print(f"[yellow]warning:[/yellow] {message}")

    def table(self, title: Optional[str], columns: List[str], rows: List[List[Any]]) -> None:
        if self.machine:
            return
        t = Table(title=title, show_lines=False, header_style="bold")
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        self.console.print(t)

    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[float] = None) -> Iterator[Callable[..., None]]:
        """Yield ``update(advance=1, total=None, description=None)``; a no-op in JSON-to-stdout mode."""
        if self.machine or not self.err.is_terminal and os.environ.get("EDGEKIT_PROGRESS") != "1":
            yield lambda *a, **k: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.err, transient=True) as prog:
            task = prog.add_task(description, total=total)

            def update(advance: float = 1, total: Optional[float] = None, description: Optional[str] = None,
                       completed: Optional[float] = None) -> None:
                prog.update(task, advance=None if completed is not None else advance, total=total,
                            description=description, completed=completed)

            yield update

    # -- machine output --
    def emit(self, data: dict) -> None:
        """Write the JSON result (with collected warnings) to the --json target, if any."""
        if self.warnings and "warnings" not in data:
            data = dict(data, warnings=list(self.warnings))
        if not self.json_path:
            return
        text = json.dumps(data, indent=2, default=_json_default)
        if self.machine:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        else:
            from edgekit.graph.io import atomic_output

            with atomic_output(self.json_path) as tmp:
                tmp.write_text(text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Render EdgekitError as one line (+ hint) with exit code 1; tracebacks only with EDGEKIT_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgekitError as exc:
            if _debug():
                raise
            err = Console(stderr=True, highlight=False, soft_wrap=True)
            err.print(f"[bold red]error:[/bold red] {exc.message}", markup=True)
            if exc.hint:
                err.print(f"[dim]hint:[/dim] {exc.hint}")
            json_path = kwargs.get("json_path")
            if json_path == "-":
                sys.stdout.write(json.dumps(exc.to_dict()) + "\n")
            raise typer.Exit(code=exc.exit_code)
        except KeyboardInterrupt:
            Console(stderr=True).print("interrupted")
            raise typer.Exit(code=130)

    return wrapper
