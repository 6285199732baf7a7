"""Sparsity for TensorRT: N:M (2:4) masks in TensorRT's layout and global magnitude pruning, at the
PyTorch level (masks, schedules, mask-preserving fine-tuning) and on ONNX initializers (no torch).

Importing this package does not import torch; the torch helpers import it when called.
"""

from __future__ import annotations

from edgekit.sparsity.check import check_nm, check_nm_file  # noqa: F401 - public API (__all__)
from edgekit.sparsity.nm import nm_mask, nm_violations  # noqa: F401 - public API (__all__)
from edgekit.sparsity.onnx_sparsity import apply_nm_onnx, check_nm_onnx  # noqa: F401 - public API (__all__)
from edgekit.sparsity.report import LayerSparsity, SparsityReport  # noqa: F401 - public API (__all__)

_TORCH_NAMES = {
    "apply_nm", "nm_masks", "check_nm_torch", "check_nm_state_dict", "global_magnitude_masks",
    "global_magnitude_prune", "cubic_sparsity", "MaskSet", "GradualMagnitudePruner", "ProgressiveNMTrainer",
    "prunable_layers", "recalibrate_bn",
}


def __getattr__(name):  # lazy: the torch half loads only when used
    if name in _TORCH_NAMES:
        from edgekit.sparsity import torch_sparsity

        return getattr(torch_sparsity, name)
    raise AttributeError(name)


__all__ = sorted({"check_nm", "check_nm_file", "nm_mask", "nm_violations", "apply_nm_onnx", "check_nm_onnx",
                  "LayerSparsity", "SparsityReport"} | _TORCH_NAMES)
