"""Moved to :mod:`edgekit.prune.torch`; this module re-exports its public names for old imports."""

from edgekit.prune.torch import EXPORTERS, TorchMapping, TorchPruneResult, apply_mapping, map_decision, prune_module

__all__ = ["prune_module", "TorchPruneResult", "map_decision", "TorchMapping", "apply_mapping", "EXPORTERS"]
