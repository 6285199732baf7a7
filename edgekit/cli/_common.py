"""Shared CLI pieces: option aliases, the output object, and error rendering."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.errors import MarkupError, StyleSyntaxError
from rich.style import Style
from rich.table import Table
from rich.text import Text
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
        self._seen: set = set()
        if _ROUTES:  # the command runs under handle_errors: Python warnings come here from now on
            _ROUTES[-1].attach(self)

    # -- human output --
    def print(self, *args: Any, **kwargs: Any) -> None:
        if not self.machine:
            self.console.print(*args, **kwargs)

    def warn(self, message: str, markup: bool = True) -> None:
        """Print ``warning: MESSAGE`` to stderr and keep it for the JSON result; a message already
        given (say as a Python warning and again in the library's report) is shown once."""
        if message in self._seen:
            return
        self._seen.add(message)
        text = _warning_text(message, markup)
        self.warnings.append(text.plain)
        self.err.print(Text.assemble(("warning:", "yellow"), " ", text))

    def table(self, title: Optional[str], columns: List[str], rows: List[List[Any]]) -> None:
        if self.machine:
            return
        t = Table(title=title, show_lines=False, header_style="bold")
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        if len(columns) > 2 and _min_width([columns] + [[str(x) for x in r] for r in rows]) > self.console.width:
            self._stacked(title, columns, rows)  # a narrow terminal: a grid would break every word
            return
        self.console.print(t)

    def _stacked(self, title: Optional[str], columns: List[str], rows: List[List[Any]]) -> None:
        """A table as one block per row: the first cell, then ``column: value`` lines."""
        if title:
            self.console.print(title, style="italic")
        for r in rows:
            cells = [str(x) for x in r]
            self.console.print(f"[bold]{cells[0]}[/bold]" if cells[0] else "-")
            for name, value in zip(columns[1:], cells[1:]):
                if value:
                    self.console.print(f"  {name}: {value}" if name else f"  {value}")

    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[float] = None) -> Iterator[Callable[..., None]]:
        """Yield ``update(advance=1, total=None, description=None)``; a no-op in JSON-to-stdout mode
        and where a bar cannot be redrawn (a pipe, TERM=dumb) unless EDGEKIT_PROGRESS=1."""
        interactive = self.err.is_terminal and not self.err.is_dumb_terminal
        if self.machine or not interactive and os.environ.get("EDGEKIT_PROGRESS") != "1":
            yield lambda *a, **k: None
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _count_column(),
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
        if self.warnings:
            have = data.get("warnings")
            if have is None:
                data = dict(data, warnings=list(self.warnings))
            elif isinstance(have, list):  # the library's own list, plus what only the CLI saw
                data = dict(data, warnings=have + [w for w in self.warnings if w not in have])
        if not self.json_path:
            return
        # JSON has no Infinity / NaN (jq and strict parsers reject them): a value that is not finite is null
        text = json.dumps(_finite(json.loads(json.dumps(data, default=_json_default))), indent=2, allow_nan=False)
        if self.machine:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        else:
            from edgekit.graph.io import atomic_output

            with atomic_output(self.json_path) as tmp:
                tmp.write_text(text + "\n")


def _min_width(cells: List[List[str]]) -> int:
    """The narrowest a grid of ``cells`` (header row included) can be drawn without breaking a word:
    per column its longest word plus padding, plus the borders."""
    from rich.cells import cell_len

    widths = [0] * len(cells[0])
    for row in cells:
        for i, cell in enumerate(row):
            words = _plain(cell).split()
            widths[i] = max([widths[i]] + [cell_len(w) for w in words])
    return sum(w + 3 for w in widths) + 1


def _plain(text: str) -> str:
    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def _warning_text(message: str, markup: bool) -> Text:
    """The CLI's own warnings may carry rich markup ("[bold]...[/bold]"); a library's text that only
    looks like markup ("input [x]", "[/x]") prints as it is instead of losing words or raising."""
    if markup:
        try:
            text = Text.from_markup(message)
            for span in text.spans:
                Style.parse(str(span.style))
            return text
        except (MarkupError, StyleSyntaxError):
            pass
    return Text(message)


class _WarningRoute:
    """Python warnings raised while one command runs, rendered as ``warning:`` lines (once each)
    through the command's Output, so they also reach its JSON ``warnings`` list. Before the command
    has made its Output they print directly and are handed to it when it appears."""

    def __init__(self) -> None:
        self.output: Optional[Output] = None
        self.early: List[str] = []

    def attach(self, out: Output) -> None:
        self.output = out
        for message in self.early:
            out._seen.add(message)
            out.warnings.append(message)

    def show(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Optional[str] = None) -> None:
        text = str(message)
        if self.output is not None:
            self.output.warn(text, markup=False)
        elif text not in self.early:
            self.early.append(text)
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                Text.assemble(("warning:", "yellow"), " ", text))


_ROUTES: List[_WarningRoute] = []


@contextlib.contextmanager
def _route_warnings() -> Iterator[_WarningRoute]:
    """Send Python warnings to the CLI renderer; the filters (-W, PYTHONWARNINGS) still decide which."""
    route = _WarningRoute()
    with warnings.catch_warnings():
        warnings.showwarning = route.show
        _ROUTES.append(route)
        try:
            yield route
        finally:
            _ROUTES.remove(route)


def _count_column() -> Any:
    """A progress column: 'done/total' for a known total; for an unknown one (None) the count alone,
    blank before the first step. Formatting None with ':.0f' raises, so no format string can do this."""
    from rich.progress import ProgressColumn

    class CountColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            if task.total is None:
                return Text(f"{task.completed:.0f}" if task.completed else "")
            return Text(f"{task.completed:.0f}/{task.total:.0f}")

    return CountColumn()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


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
            with _route_warnings():
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
