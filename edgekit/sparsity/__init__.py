"""Sparsity for TensorRT: N:M (2:4) masks in TensorRT's layout and global magnitude pruning, at the
PyTorch level (masks, schedules, mask-preserving fine-tuning) and on ONNX initializers (no torch).

Importing this package does not import torch; the torch helpers import it when called.
"""

from __future__ import annotations

from edgekit.sparsity.check import check_nm, check_nm_file
from edgekit.sparsity.nm import nm_mask, nm_violations
from edgekit.sparsity.onnx_sparsity import apply_nm_onnx, check_nm_onnx
from edgekit.sparsity.report import LayerSparsity, SparsityReport
from edgekit.sparsity.torch_sparsity import (GradualMagnitudePruner, MaskSet, ProgressiveNMTrainer, apply_nm,
                                             check_nm_state_dict, check_nm_torch, cubic_sparsity,
                                             global_magnitude_masks, global_magnitude_prune, nm_masks,
                                             prunable_layers, recalibrate_bn)

__all__ = [
    "GradualMagnitudePruner", "LayerSparsity", "MaskSet", "ProgressiveNMTrainer", "SparsityReport",
    "apply_nm", "apply_nm_onnx", "check_nm", "check_nm_file", "check_nm_onnx", "check_nm_state_dict",
    "check_nm_torch", "cubic_sparsity", "global_magnitude_masks", "global_magnitude_prune", "nm_mask",
    "nm_masks", "nm_violations", "prunable_layers", "recalibrate_bn"
]
