"""`edgekit profile` (work in progress)."""

import typer


def register(app: typer.Typer) -> None:
    """Not registered yet."""
