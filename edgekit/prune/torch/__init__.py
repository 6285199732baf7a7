"""Mapping a graph-level pruning decision back to a PyTorch ``nn.Module`` ("before fine-tuning").

The pruner works on ONNX; a user who wants to fine-tune needs the same cut in the ``nn.Module``.
:func:`prune_module` exports (or takes a given export), prunes, maps and checks in one call; in
steps, :func:`map_decision` turns the decision into per-axis keep masks of state_dict entries
(``relate`` finds the module tensor behind every pruned ONNX tensor) and :func:`apply_mapping`
returns the smaller module and its state_dict (``resize``). Weight updates made by the criterion
(OBSPA compensation) are carried back too. A pruned tensor that matches nothing raises
:class:`~edgekit.errors.TorchMappingError` naming it. Module code that hard-codes channel counts
(e.g. ``reshape(b, 64, -1)``) cannot follow: the result is checked against the pruned ONNX model
(``check=True``) and a mismatch raises :class:`~edgekit.errors.ParityError`.

Importing this package does not import torch (``import torch`` inside it is PyTorch, not this
package: every import here is absolute).
"""

from edgekit.prune.torch.api import TorchPruneResult, prune_module
from edgekit.prune.torch.export import EXPORTERS
from edgekit.prune.torch.mapping import TorchMapping, map_decision
from edgekit.prune.torch.resize import apply_mapping

__all__ = ["prune_module", "TorchPruneResult", "map_decision", "TorchMapping", "apply_mapping", "EXPORTERS"]
