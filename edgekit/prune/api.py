"""File-level entry point used by the CLI: load, prune, save atomically."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Tuple

import onnx

from edgekit.errors import InputError, ModelLoadError
from edgekit.graph.io import load_model, load_model_lean, save_lean, save_model, weight_store
from edgekit.prune import criteria as crit
from edgekit.prune.core import prune_with_graph


def prune_file(src, dest, **kwargs) -> Tuple[object, object]:
    """Prune the model at ``src`` into ``dest`` (written atomically; ``src`` is only read).

    Returns ``(PruneReport, DependencyGraph-like object with .groups/.skipped)``.
    """
    src, dest = Path(src), Path(dest)
    if src.resolve() == dest.resolve():
        raise InputError("the output must not overwrite the input model", hint="give another -o path")
    lean = not _needs_full_weights(kwargs.get("criterion", "l1"), kwargs.get("criterion_options"))
    try:
        model, store = load_model_lean(src) if lean else (load_model(src), None)
    except InputError:
        raise
    except Exception:
        _check_external_files(src)  # the usual cause: a missing external data file
        raise
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.enter_context(weight_store(store))
        pruned, report, dg = prune_with_graph(model, **kwargs)
        explained = _Explained([g.details() for g in dg.groups], [g.details() for g in dg.skipped])
        # drop the input model and the analysis before serialising: what stays is the weights
        # (read once) and the pruned graph
        del model, dg
        if store is not None:
            save_lean(pruned, dest, store)
        else:
            save_model(pruned, dest)
    return report, explained


def _needs_full_weights(criterion, options) -> bool:
    """Criteria that run the model (ONNX Runtime) or update weights need every tensor inline;
    magnitude criteria work on the lean-loaded model."""
    if not isinstance(criterion, str):
        return True
    try:
        scorer = crit.get(criterion, **(options or {}))
    except Exception:  # noqa: BLE001 - an unknown criterion is reported by prune itself
        return True
    return scorer.updates_weights or scorer.needs_model


class _Explained:
    """The group printouts of a finished prune (what ``--explain`` shows)."""

    def __init__(self, groups, skipped):
        self.groups = groups
        self.skipped = skipped


def _check_external_files(src: Path) -> None:
    """A model whose external weight file is missing: a clear ModelLoadError before loading."""
    try:
        header = onnx.load(str(src), load_external_data=False)
    except Exception:  # noqa: BLE001 - load_model reports unreadable files with a proper message
        return
    for t in header.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            if not (src.parent / loc).is_file():
                raise ModelLoadError(f"{src} keeps its weights in external data file '{loc}', which is missing",
                                     hint="keep the .data file next to the .onnx file it belongs to")
