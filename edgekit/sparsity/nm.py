"""N:M structured sparsity masks in TensorRT's layout (NumPy core, no torch needed).

TensorRT's sparse tensor cores (Ampere and later, i.e. Orin sm_87 on Jetson) read a weight as runs
of ``m`` consecutive elements along the *reduction* dimension and need at most ``n`` non-zeros in
each run. For a convolution weight ``[K, C, R, S]`` the reduction that the implicit GEMM walks in
runs is the input-channel axis ``C`` at a fixed ``(k, r, s)``: so the groups are
``W[k, 4j:4j+4, r, s]``. Grouping along the flattened ``C*R*S`` axis (what a naive
``w.reshape(K, -1)`` gives) mixes spatial taps of one channel into a group; TensorRT then finds the
layer ineligible and runs it dense. For Gemm / MatMul the groups run along the input (reduction)
dimension, which is axis 1 of a torch Linear weight ``[out, in]``.

Everything here works on a "reduction axis" argument, so the ONNX and torch front ends only have
to say which axis of their weight layout is the reduction one.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from edgekit.errors import InputError


def validate_nm(n: int, m: int) -> None:
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer))) or m < 1 or n < 0 or n > m:
        raise InputError(f"invalid N:M pattern {n}:{m}", hint="use 0 <= N <= M, e.g. 2:4 (the pattern TensorRT accelerates)")


def _groups_view(a: np.ndarray, axis: int, m: int) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """Move ``axis`` last and split it into ``[..., C/m, m]``; return the view and the moved shape."""
    moved = np.moveaxis(a, axis, -1)
    shape = moved.shape
    return moved.reshape(shape[:-1] + (shape[-1] // m, m)), shape


def nm_mask(weight: np.ndarray, n: int = 2, m: int = 4, axis: int = 1) -> np.ndarray:
    """Keep-mask (bool, same shape) keeping the ``n`` largest-magnitude entries of every run of ``m``
    consecutive elements along ``axis``. Raises InputError when that axis is not a multiple of ``m``.

    Ties are broken towards the lower index so the result is deterministic.
    """
    validate_nm(n, m)
    w = np.asarray(weight)
    axis = axis % w.ndim
    c = w.shape[axis]
    if c % m != 0:
        raise InputError(f"axis {axis} has {c} elements, not a multiple of {m}",
                         hint="N:M sparsity needs the reduction dimension divisible by M")
    groups, moved_shape = _groups_view(np.abs(w.astype(np.float64, copy=False)), axis, m)
    # stable sort of -|w| ranks the largest first; ties keep the lower index first
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return np.moveaxis(keep.reshape(moved_shape), -1, axis)


def nm_violations(nonzero: np.ndarray, n: int = 2, m: int = 4, axis: int = 1) -> Tuple[int, int]:
    """Count (groups, groups with more than ``n`` non-zeros) along ``axis`` of a non-zero mask.

    ``nonzero`` is a bool array (``w != 0``, or ``q != zero_point`` for quantized weights).
    Raises InputError when the axis is not a multiple of ``m`` (the pattern is undefined there).
    """
    validate_nm(n, m)
    nz = np.asarray(nonzero, dtype=bool)
    axis = axis % nz.ndim
    if nz.shape[axis] % m != 0:
        raise InputError(f"axis {axis} has {nz.shape[axis]} elements, not a multiple of {m}")
    groups, _ = _groups_view(nz, axis, m)
    counts = groups.sum(axis=-1)
    return int(counts.size), int((counts > n).sum())
