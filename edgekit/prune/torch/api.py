"""One call from an ``nn.Module`` to a pruned ``nn.Module``: :func:`prune_module`.

Export (or take a given export), prune with the graph-level pruner, map the decision back, apply
it, and check the smaller module against the pruned ONNX model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from edgekit.errors import InputError, ParityError
from edgekit.graph.io import load_model
from edgekit.runtime.verify import run
from edgekit.prune.core import prune_with_graph
from edgekit.prune.torch.export import EXPORTERS, export
from edgekit.prune.torch.mapping import map_decision
from edgekit.prune.torch.resize import apply_mapping


@dataclass
class TorchPruneResult:
    module: object                 # the smaller nn.Module (eval mode)
    state_dict: Dict[str, object]  # pruned shapes
    report: object                 # PruneReport
    onnx_model: object             # the pruned ONNX model (reference)
    mapped: List[str]              # state_dict keys that were cut
    max_abs_diff: float            # pruned module vs pruned ONNX on the example input
    notes: List[str] = field(default_factory=list)


def prune_module(module, example_input, exporter: str = "legacy", check: bool = True, onnx_model=None,
                 **prune_kwargs) -> TorchPruneResult:
    """Prune ``module`` with the graph-level pruner and return a smaller module + state_dict.

    ``exporter``: ``legacy`` (TorchScript, BatchNorm kept: best for bn-scale / obspa criteria),
    ``torchscript`` or ``dynamo`` (exactly what ``edgekit export`` writes, BatchNorm folded).
    ``onnx_model``: an ONNX export of this module (ModelProto or path) to prune instead of exporting
    it here; its input must accept ``example_input``. Other keyword arguments go to
    :func:`edgekit.prune.prune`. ``module`` is never modified.
    """
    if onnx_model is None:
        if exporter not in EXPORTERS:
            raise InputError(f"unknown exporter {exporter!r}", hint="use " + ", ".join(EXPORTERS))
        was_training = module.training
        try:
            onnx_model = export(module, example_input, exporter)
        finally:
            module.train(was_training)
    elif isinstance(onnx_model, str) or hasattr(onnx_model, "__fspath__"):
        onnx_model = load_model(onnx_model)
    pruned_onnx, report, dg = prune_with_graph(onnx_model, **prune_kwargs)
    mapping = map_decision(module, dg, report.keeps, example_input)
    small, new_sd = apply_mapping(module, mapping, dg, getattr(report, "updates", None),
                                  getattr(report, "new_biases", None), example_input)
    diff = _parity(small, pruned_onnx, example_input) if check else 0.0
    return TorchPruneResult(small, new_sd, report, pruned_onnx, sorted(mapping.cuts), diff, mapping.notes)


def _parity(small, pruned_onnx, example_input) -> float:
    """The largest difference between the smaller module and the pruned ONNX model on the example
    input; raises :class:`~edgekit.errors.ParityError` when the module does not run or differs."""
    import torch  # lazy: torch is optional

    try:
        with torch.no_grad():
            got = small(example_input)
    except RuntimeError as exc:
        raise ParityError(f"the pruned module does not run: {str(exc).splitlines()[0][:300]}",
                          hint="its forward() probably makes a tensor with the original channel count; "
                               "protect the node that reads it (protect=[...] / --protect)") from exc
    got = (got[0] if isinstance(got, (tuple, list)) else got).detach().numpy()
    ref = run(pruned_onnx, {pruned_onnx.graph.input[0].name: example_input.detach().numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise ParityError(f"the pruned module differs from the pruned ONNX model by {diff:.3g}",
                          hint="the module's forward probably hard-codes channel counts")
    return diff
