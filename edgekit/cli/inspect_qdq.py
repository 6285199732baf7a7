"""`edgekit inspect ...` sub-check (work in progress: filled in by its issue)."""

import typer


def register(inspect_app: typer.Typer) -> None:
    """Not registered yet."""
