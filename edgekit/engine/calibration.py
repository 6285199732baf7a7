"""Implicit INT8 calibration for TensorRT 8.x-10.x: calibration batches and the calibrator.

The cache file format and its header check belong to :mod:`edgekit.trt.calibration_cache`; this
module only feeds TensorRT. TensorRT reads a cache whose header names another version *silently
wrong* (it skips it and recalibrates, or worse, on some releases accepts stale scales), so the
calibrator checks the header before TensorRT sees the file.

The calibrator class must subclass ``tensorrt.IInt8EntropyCalibrator2``, which only exists once
TensorRT is imported, so it is created by a factory. It was exercised against a test double of the
8.2 / 8.6 / 10.x Python API, never on a board (see docs/tensorrt.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgekit.errors import CalibrationError, InputError, require
from edgekit.graph.io import atomic_output
from edgekit.trt.calibration_cache import check_cache_version


def load_calibration_batches(path: Path, inputs: Sequence[dict], batch_size: int = 1) -> List[Dict[str, np.ndarray]]:
    """Read calibration samples into batches of ``{input name: array}``.

    Accepted: one ``.npy`` (single-input model; first axis = samples), one ``.npz`` (one array per
    input name), or a folder of such files (sorted by name, concatenated along the first axis).
    """
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files:
        raise CalibrationError(f"{path} holds no .npy/.npz calibration files")
    names = [i["name"] for i in inputs]
    columns: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for f in files:
        try:
            data = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read calibration file {f}: {exc}") from exc
        if isinstance(data, np.ndarray):
            if len(names) != 1:
                raise CalibrationError(f"{f} is a single array but the model has {len(names)} inputs",
                                       hint="use .npz files with one array per input name")
            columns[names[0]].append(data)
        else:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise CalibrationError(f"{f} lacks arrays for input(s) {missing}", hint=f"it holds {data.files}")
            for n in names:
                columns[n].append(data[n])
    merged = {}
    for spec in inputs:
        n = spec["name"]
        arr = np.concatenate(columns[n], axis=0)
        rank = len(spec["shape"])
        if arr.ndim != rank:
            raise CalibrationError(f"calibration data for '{n}' has rank {arr.ndim}, the model input has rank {rank}",
                                   hint="store samples stacked along the first (batch) axis")
        for i, d in enumerate(spec["shape"][1:], start=1):
            if isinstance(d, int) and d > 0 and arr.shape[i] != d:
                raise CalibrationError(f"calibration data for '{n}' has shape {list(arr.shape)}, "
                                       f"the model expects {list(spec['shape'])}")
        merged[n] = np.ascontiguousarray(arr.astype(np.dtype(spec["dtype"]), copy=False))
    counts = {len(a) for a in merged.values()}
    if len(counts) != 1:
        raise CalibrationError(f"calibration inputs hold different sample counts: {sorted(counts)}")
    total = counts.pop()
    if total < batch_size:
        raise CalibrationError(f"{total} calibration sample(s) is fewer than one batch of {batch_size}")
    return [{n: a[i:i + batch_size] for n, a in merged.items()} for i in range(0, total - batch_size + 1, batch_size)]


def make_entropy_calibrator(trt, batches: List[Dict[str, np.ndarray]], cache_path: Optional[Path],
                            trt_version: str, cuda=None):
    """Build an ``IInt8EntropyCalibrator2`` that feeds ``batches`` through pycuda device buffers.

    ``cuda`` is ``pycuda.driver`` (injected for tests); one device buffer per input is allocated
    for the largest batch and reused for every batch.
    """
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise InputError(f"TensorRT {trt_version} has no IInt8EntropyCalibrator2 (implicit INT8 was removed in 11)",
                         hint="build a QDQ model instead")
    if cuda is None and batches:
        cuda = require("pycuda.driver", "tensorrt", "feed calibration batches to the GPU")
        require("pycuda.autoinit", "tensorrt", "create a CUDA context")
    if not batches and cache_path is None:
        raise CalibrationError("no calibration batches and no calibration cache")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.index = 0
            self.cache_path = Path(cache_path) if cache_path else None
            # An empty batch list means "cache only": TensorRT reads the scales from the cache.
            first = batches[0] if batches else {}
            self.device_buffers = {n: cuda.mem_alloc(max(b[n].nbytes for b in batches)) for n in first}
            self.cache_written = False

        def get_batch_size(self) -> int:
            if not self.batches:
                return 1
            return int(next(iter(self.batches[0].values())).shape[0])

        def get_batch(self, names, *args):  # 8.x passes (names,), some bindings pass (names, p_str)
            if self.index >= len(self.batches):
                return None
            batch = self.batches[self.index]
            self.index += 1
            ptrs = []
            for n in names:
                if n not in batch:
                    raise CalibrationError(f"TensorRT asked for input '{n}', which the calibration data lacks")
                cuda.memcpy_htod(self.device_buffers[n], np.ascontiguousarray(batch[n]))
                ptrs.append(int(self.device_buffers[n]))
            return ptrs

        def read_calibration_cache(self):
            if self.cache_path is not None and self.cache_path.exists():
                check_cache_version(self.cache_path, trt_version, exact=True)
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if self.cache_path is None:
                return
            with atomic_output(self.cache_path) as tmp:
                tmp.write_bytes(bytes(cache))
            self.cache_written = True

    return EntropyCalibrator()


__all__ = ["check_cache_version", "load_calibration_batches", "make_entropy_calibrator"]
