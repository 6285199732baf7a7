"""Find the data folders (``profiles/``, ``kernels/``, ``exporters/``) and the cache folder.

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


def cache_root() -> Path:
    """Where edgekit keeps what it can rebuild (timing caches, estimate calibrations, the cluster's
    engine cache): ``$EDGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``."""
    env = os.environ.get("EDGEKIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgekit"
