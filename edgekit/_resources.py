"""Find the data folders (``profiles/``, ``kernels/``, ``exporters/``).

In a wheel they are installed as ``edgekit/_data/<name>`` (see ``pyproject.toml``); in a source tree
or an editable install they sit at the repository top level, next to the package.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory holding the data folder ``name`` (``profiles``, ``kernels``, ...)."""
    override = os.environ.get(f"EDGEKIT_{name.upper()}_DIR")
    if override:
        return Path(override)
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgekit data folder '{name}' not found (looked in {_PKG / '_data'} and {_PKG.parent})")
