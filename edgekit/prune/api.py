"""File-level entry point used by the CLI: load, prune, save atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from edgekit.errors import InputError


def prune_file(src, dest, **kwargs) -> Tuple[object, object]:
    """Prune the model at ``src`` into ``dest`` (written atomically; ``src`` is only read).

    Returns ``(PruneReport, DependencyGraph-like object with .groups/.skipped)``.
    """
    from edgekit.graph.io import load_model, save_model
    from edgekit.prune.core import prune_with_graph

    src, dest = Path(src), Path(dest)
    if src.resolve() == dest.resolve():
        raise InputError("the output must not overwrite the input model", hint="give another -o path")
    model = load_model(src)
    pruned, report, dg = prune_with_graph(model, **kwargs)
    explained = _Explained([g.details() for g in dg.groups], [g.details() for g in dg.skipped])
    # drop the input model and the analysis before serialising: keeps peak memory near
    # input + output instead of input + weights copy + output + serialised bytes
    del model, dg
    save_model(pruned, dest)
    return report, explained


class _Explained:
    """The group printouts of a finished prune (what ``--explain`` shows)."""

    def __init__(self, groups, skipped):
        self.groups = groups
        self.skipped = skipped
