"""Helpers for the optimize tests: run the CLI as a script would, and the settings of a tiny search."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[2]


def edgekit(args: List[str], env: Optional[dict] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m edgekit ARGS`` in a subprocess, output piped (as in a script or CI log)."""
    e = dict(os.environ, EDGEKIT_DEBUG="0", OMP_NUM_THREADS="1",
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=str(REPO))


# a search small enough for a test: few trials, short timings, a batch that makes pruning visible
FAST = ["--batch", "16", "--duration-s", "0.1", "--levels", "0.5,0.3"]
