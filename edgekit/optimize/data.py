"""Labelled evaluation data: the arrays fed to a model and, when there are labels, the class of each
sample. ``edgekit eval`` and ``edgekit optimize`` read it through :func:`load_data` and check it
against the model with :func:`check_data` before any long work starts, so a wrong shape, dtype or
label range is one clear error rather than a failure half-way through a search.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgekit.errors import DependencyMissingError, InputError, ShapeError
from edgekit.quantize.calibrate import IMAGE_SUFFIXES, CalibrationData, default_preprocess

# names a label array goes by in an .npz, first match wins
LABEL_NAMES = ("y", "labels", "label", "targets", "target")
# names the single input array goes by when it is not named after the model input
INPUT_NAMES = ("x", "images", "inputs", "input", "data")


@dataclass
class LabelledData:
    """Per model input an array ``[N, ...]``; ``labels`` ``[N]`` int64 or None (no labels)."""

    arrays: Dict[str, np.ndarray]
    labels: Optional[np.ndarray]
    source: str
    classes: List[str] = field(default_factory=list)  # image folders: the class folder names

    @property
    def num_samples(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0

    def take(self, start: int, stop: int) -> Dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.arrays.items()}

    def head(self, n: int) -> "LabelledData":
        """The first ``n`` samples (a view, no copy)."""
        return LabelledData({k: v[:n] for k, v in self.arrays.items()},
                            None if self.labels is None else self.labels[:n], self.source, list(self.classes))

    def calibration(self, n: int) -> CalibrationData:
        """The first ``n`` samples as calibration data for :func:`edgekit.quantize.ptq.quantize`."""
        return CalibrationData({k: v[:n] for k, v in self.arrays.items()}, self.source)


def load_data(source, input_names: Sequence[str], x_name: Optional[str] = None,
              y_name: Optional[str] = None, limit: Optional[int] = None) -> LabelledData:
    """Read ``source``: an ``.npz`` (``x``/``y``, or one array per model input plus ``y``/``labels``),
    an ``.npy`` (inputs only, no labels) or an image folder with one sub-folder per class."""
    p = Path(source)
    if not p.exists():
        raise InputError(f"no such data: {p}", hint="give an .npz with x and y, an .npy, or an image folder per class")
    if p.is_dir():
        data = _image_folder(p, input_names)
    elif p.suffix.lower() == ".npz":
        data = _npz(p, input_names, x_name, y_name)
    elif p.suffix.lower() == ".npy":
        if len(input_names) != 1:
            raise InputError(f"the model has {len(input_names)} inputs; an .npy holds one array",
                             hint="use an .npz with one array per input name")
        data = LabelledData({input_names[0]: _read_npy(p)}, None, str(p))
    else:
        raise InputError(f"unsupported data file {p.name}", hint="give an .npz, an .npy or an image folder per class")
    if limit is not None:
        if limit <= 0:
            raise InputError(f"--limit must be positive, got {limit}")
        data = data.head(limit)
    return data


def _read_npy(p: Path) -> np.ndarray:
    try:
        return np.load(str(p), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{p} is not a readable .npy array: {exc}") from exc


def _npz(p: Path, input_names: Sequence[str], x_name: Optional[str], y_name: Optional[str]) -> LabelledData:
    try:
        with np.load(str(p), allow_pickle=False) as z:
            content = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise InputError(f"{p} is not a readable .npz archive: {exc}") from exc
    arrays: Dict[str, np.ndarray] = {}
    for name in input_names:
        if x_name is not None and len(input_names) == 1:
            key = x_name
        elif name in content:
            key = name
        elif len(input_names) == 1:
            key = next((k for k in INPUT_NAMES if k in content), None)
        else:
            key = None
        if key is None or key not in content:
            raise InputError(f"{p.name} has no array for model input '{name}' (its arrays: {sorted(content)[:8]})",
                             hint="save x=... (or one array per input name) and y=labels: np.savez(path, x=x, y=y)")
        arrays[name] = content[key]
    label_key = y_name if y_name is not None else next((k for k in LABEL_NAMES if k in content), None)
    if y_name is not None and y_name not in content:
        raise InputError(f"{p.name} has no array '{y_name}' (its arrays: {sorted(content)[:8]})")
    return LabelledData(arrays, None if label_key is None else content[label_key], str(p))


def _image_folder(folder: Path, input_names: Sequence[str]) -> LabelledData:
    """One sub-folder per class (sorted names = class indices), images resized to nothing: the model's
    own H, W come in :func:`check_data`; here every image is read at the size of the first one."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise InputError(f"{folder} has no class sub-folders", hint="put the images of class k in FOLDER/<name-k>/")
    if len(input_names) != 1:
        raise InputError("an image folder can only feed a single-input model")
    if importlib.util.find_spec("PIL") is None:
        raise DependencyMissingError("images", "read image folders (Pillow)")
    files, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((folder / c).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(k)
    if not files:
        raise InputError(f"the class folders of {folder} hold no images")
    return LabelledData({input_names[0]: np.array([str(f) for f in files])}, np.array(labels, np.int64),
                        str(folder), classes)


def _decode_images(paths: np.ndarray, spec) -> np.ndarray:
    """Image files -> float32 NCHW at the model's size, normalised as the classifier export recipe says."""
    from PIL import Image  # lazy: Pillow is optional (the images extra)

    if len(spec.shape) != 4:
        raise ShapeError(f"input '{spec.name}' is not an NCHW image ({list(spec.shape)}): an image folder cannot feed it")
    pre = default_preprocess()
    c = spec.shape[1] if isinstance(spec.shape[1], int) else 3
    h, w = (d if isinstance(d, int) and d > 0 else s for d, s in zip(spec.shape[2:], pre.get("resize", [224, 224])))
    mean = np.asarray(pre.get("mean", [0.0] * 3), np.float32)
    std = np.asarray(pre.get("std", [1.0] * 3), np.float32)
    if c == 1:
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    out = []
    for f in paths:
        try:
            with Image.open(str(f)) as im:
                a = np.asarray(im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR), np.float32) / 255.0
        except OSError as exc:
            raise InputError(f"cannot read image {f}: {exc}") from exc
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        out.append((a - mean[:, None, None]) / std[:, None, None])
    return np.stack(out).astype(np.float32)


def check_data(data: LabelledData, specs: Sequence, num_outputs: Optional[int]) -> LabelledData:
    """Fit ``data`` to the model inputs ``specs`` (TensorSpec list) or raise a ShapeError naming what
    differs; labels must be integers in ``[0, num_outputs)`` and as many as the samples. Returns the
    data with decoded images and float arrays as the model's dtype."""
    arrays: Dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in data.arrays:
            raise ShapeError(f"{data.source} has no data for model input '{spec.name}'")
        arr = data.arrays[spec.name]
        if arr.dtype.kind == "U":
            arr = _decode_images(arr, spec)
        want = np.dtype(spec.dtype)
        if arr.dtype != want:
            if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating):
                arr = arr.astype(want)
            else:
                raise ShapeError(f"data for input '{spec.name}' in {data.source} is {arr.dtype}; the model wants {want}",
                                 hint="save the preprocessed arrays in the model's input dtype")
        shape = list(spec.shape)
        bad = arr.ndim != len(shape) or any(isinstance(d, int) and d > 0 and d != a
                                            for d, a in zip(shape[1:], arr.shape[1:]))
        if bad:
            raise ShapeError(f"data for input '{spec.name}' has shape {list(arr.shape)}; the model wants {shape} "
                             "(first axis = samples)", hint="give an array [N, ...] whose trailing dims match the input")
        if arr.shape[0] == 0:
            raise ShapeError(f"{data.source} holds no samples")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ShapeError(f"data for input '{spec.name}' contains NaN or Inf")
        arrays[spec.name] = np.ascontiguousarray(arr)
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1:
        raise ShapeError(f"the input arrays disagree on the number of samples: {sorted(counts)}")
    labels = None if data.labels is None else _check_labels(data.labels, counts.pop(), num_outputs, data.source)
    return LabelledData(arrays, labels, data.source, list(data.classes))


def _check_labels(labels: np.ndarray, n: int, num_outputs: Optional[int], source: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
        labels = labels.argmax(1)
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1:
        raise ShapeError(f"labels in {source} have shape {list(labels.shape)}; give one class index per sample")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise ShapeError(f"labels in {source} are {labels.dtype}, not class indices",
                             hint="save integer class indices (0 .. classes-1)")
    if len(labels) != n:
        raise ShapeError(f"{source} has {n} samples but {len(labels)} labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (num_outputs is not None and hi >= num_outputs):
        raise ShapeError(f"labels in {source} span {lo}..{hi}, outside the model's {num_outputs} outputs "
                         f"(0..{(num_outputs or 1) - 1})", hint="labels are class indices of the model's output")
    return labels.astype(np.int64)
