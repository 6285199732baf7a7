"""`edgekit build` (work in progress: filled in by its issue)."""

import typer


def register(app: typer.Typer) -> None:
    """Not registered yet."""
