"""Calibration: load data, collect activation statistics with ONNX Runtime, turn them into ranges.

Three ways to turn what a tensor took during calibration into its INT8 range ``amax`` (the scale is
``amax / 127``, symmetric because TensorRT has no zero point for INT8 activations):

* ``minmax``: ``max |x|`` over all batches. Exact, but one outlier stretches the range.
* ``percentile``: the ``percentile``-th percentile (default 99.99) of ``|x|``, from a histogram.
* ``entropy``: TensorRT's entropy calibrator idea: pick the clipping threshold whose 128-level
  quantized histogram is closest (KL divergence) to the original 2048-bin histogram of ``|x|``.

Statistics are streamed: a running ``max |x|`` and a 2048-bin histogram of ``|x|`` over a power-of-two
range that doubles (merging bin pairs, which is exact) when a batch exceeds it, so the streamed
histogram is exactly the one of all samples at once, and memory does not grow with the sample count. Very large tensors are
histogrammed on a strided subsample (the max is always exact) so ResNet-50 calibrates in seconds
per hundred samples, not minutes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from edgekit._resources import data_dir
from edgekit.devices import tomllib
from edgekit.errors import CalibrationError, DependencyMissingError, InputError
from edgekit.runtime.onnxruntime import ort_session

METHODS = ("entropy", "minmax", "percentile")
NUM_BINS = 2048
NUM_LEVELS = 128  # positive INT8 levels (0..127) used by the KL search
HIST_SAMPLE_CAP = 1 << 18  # values per tensor per batch of 8 that the histogram sees (strided)
STATS_BATCH = 2  # samples per ORT run when collecting statistics of a dynamic-batch model
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass
class TensorStats:
    """Running ``max |x|``, ``min x``, ``max x`` and a histogram of ``|x|`` over ``[0, hist_range]``.

    ``lo``/``hi`` start at 0: an INT8 range always holds 0 (ReLU outputs give ``lo == 0``).
    """

    amax: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    hist: Optional[np.ndarray] = None
    hist_range: float = 0.0
    count: int = 0

    def update(self, x: np.ndarray, histogram: bool = True, cap: int = HIST_SAMPLE_CAP) -> None:
        """Fold one batch in; the histogram sees at most ``cap`` values of it (an even stride)."""
        x = np.asarray(x)
        if x.size == 0 or not np.issubdtype(x.dtype, np.floating):
            return
        flat = x.reshape(-1)
        if histogram and flat.size > cap:
            flat = flat[:: int(np.ceil(flat.size / cap))]
        self.fold(float(np.min(x)), float(np.max(x)), x.size, flat if histogram else None)

    def fold(self, xmin: float, xmax: float, size: int, sample: Optional[np.ndarray] = None) -> None:
        """Fold in one batch given as its min, max, element count and (histograms) a subsample of it."""
        m = max(xmax, -xmin)
        if not np.isfinite(m):
            raise CalibrationError("calibration produced NaN/Inf activations",
                                   hint="check the calibration data preprocessing (normalisation, dtype)")
        self.amax = max(self.amax, m)
        self.lo, self.hi = min(self.lo, xmin), max(self.hi, xmax)
        self.count += int(size)
        if sample is None:
            return
        a = np.abs(sample.reshape(-1), dtype=np.float32)
        # Exact zeros (half of every ReLU output) are exact in INT8 whatever the range: leave them out
        # of the histogram, else their spike in bin 0 drags the entropy/percentile threshold down.
        a = a[a > 0]
        if self.hist is None:
            self.hist = np.zeros(NUM_BINS, np.int64)
            self.hist_range = _pow2_at_least(m if m > 0 else 1e-8)
        while m > self.hist_range:  # double the range: merge bin pairs into the lower half
            h = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([h, np.zeros(NUM_BINS - h.size, np.int64)])
            self.hist_range *= 2.0
        idx = (a * (NUM_BINS / self.hist_range)).astype(np.int32)
        np.minimum(idx, NUM_BINS - 1, out=idx)
        self.hist += np.bincount(idx, minlength=NUM_BINS)


def _pow2_at_least(m: float) -> float:
    """The smallest power of two >= ``m``: histogram ranges are powers of two and only ever double, so
    the histogram streamed batch by batch is the one of the whole set at once, whatever the batch order."""
    f, e = math.frexp(m)
    return math.ldexp(1.0, e - 1 if f == 0.5 else e)


def amax_minmax(st: TensorStats) -> float:
    return st.amax


def amax_percentile(st: TensorStats, percentile: float = 99.99) -> float:
    if st.hist is None or st.hist.sum() == 0:
        return st.amax
    c = np.cumsum(st.hist)
    k = int(np.searchsorted(c, c[-1] * percentile / 100.0))
    width = st.hist_range / NUM_BINS
    return float(min(st.amax, (k + 1) * width))


def _kl(hist: np.ndarray, i: int) -> float:
    """KL(P || Q) for threshold at bin ``i`` (P: clipped histogram, Q: its 128-level version)."""
    p = hist[:i].astype(np.float64)
    p[i - 1] += hist[i:].sum()  # outliers clip into the last kept bin
    ref = hist[:i].astype(np.float64)
    # quantize ref into NUM_LEVELS groups, then spread each group's mass over its non-empty bins
    edges = (np.arange(NUM_LEVELS + 1) * i) // NUM_LEVELS
    group = np.repeat(np.arange(NUM_LEVELS), np.diff(edges))
    nonzero = ref > 0
    mass = np.bincount(group, weights=ref, minlength=NUM_LEVELS)
    cnt = np.bincount(group, weights=nonzero, minlength=NUM_LEVELS)
    q = np.where(nonzero, (mass / np.maximum(cnt, 1))[group], 0.0)
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return np.inf
    p /= ps
    q /= qs
    m = p > 0
    qm = np.maximum(q[m], 1e-12)
    return float(np.sum(p[m] * np.log(p[m] / qm)))


def amax_entropy(st: TensorStats) -> float:
    """Threshold minimising KL divergence, searched coarse (every 16 bins) then fine (every bin)."""
    if st.hist is None or st.hist.sum() == 0 or st.amax == 0:
        return st.amax
    h = st.hist
    last = int(np.nonzero(h)[0].max()) + 1  # bins above the data carry nothing: stop there
    hi = max(NUM_LEVELS, last)
    if hi <= NUM_LEVELS:
        best = hi
    else:
        coarse = list(range(NUM_LEVELS, hi + 1, 16)) + [hi]
        kl = [_kl(h, i) for i in coarse]
        c = coarse[int(np.argmin(kl))]
        fine = range(max(NUM_LEVELS, c - 16), min(hi, c + 16) + 1)
        klf = [_kl(h, i) for i in fine]
        best = list(fine)[int(np.argmin(klf))]
    width = st.hist_range / NUM_BINS
    return float(min(st.amax, best * width))


def compute_amax(st: TensorStats, method: str, percentile: float = 99.99) -> float:
    if method == "minmax":
        return amax_minmax(st)
    if method == "percentile":
        return amax_percentile(st, percentile)
    if method == "entropy":
        return amax_entropy(st)
    raise InputError(f"unknown calibration method {method!r}", hint="one of " + ", ".join(METHODS))


def scale_from_amax(amax: float) -> float:
    """Symmetric INT8 scale; a tensor that was always 0 gets a tiny positive scale (TensorRT refuses 0)."""
    return float(amax) / 127.0 if amax > 0 else 1.0 / 127.0


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class CalibrationData:
    """Per model input: an array ``[N, ...]`` of samples (float32)."""

    arrays: Dict[str, np.ndarray]
    source: str
    synthetic: bool = False
    warnings: List[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0

    def take(self, start: int, stop: int) -> Dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.arrays.items()}


def _spec_ok(shape: Tuple[int, ...], spec_shape: Sequence) -> bool:
    """Does a sample batch shape fit the model input (symbolic dims match anything)?"""
    if len(shape) != len(spec_shape):
        return False
    for got, want in zip(shape[1:], list(spec_shape)[1:]):
        if isinstance(want, int) and want > 0 and got != want:
            return False
    return True


def check_array(name: str, arr: np.ndarray, spec, source: str) -> np.ndarray:
    """Validate one input's samples against its model spec; returns them as contiguous float32."""
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)):
        raise CalibrationError(
            f"calibration data for input '{name}' in {source} has dtype {arr.dtype}; the model wants {spec.dtype}",
            hint="save preprocessed float32 arrays (the same normalisation as at inference)")
    if np.issubdtype(np.dtype(spec.dtype), np.floating) is False:
        raise CalibrationError(f"model input '{name}' is {spec.dtype}: only float inputs can be calibrated")
    want = tuple(spec.shape)
    if arr.ndim == len(want) - 1:
        arr = arr[None]  # a single sample without a batch axis
    if not _spec_ok(arr.shape, want):
        raise CalibrationError(
            f"calibration data for input '{name}' has shape {list(arr.shape)}, the model wants {list(want)} "
            "(first axis = samples)", hint="give an array [N, ...] whose trailing dims match the model input")
    if arr.shape[0] == 0:
        raise CalibrationError(f"calibration data for input '{name}' in {source} holds no samples")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"calibration data for input '{name}' contains NaN or Inf")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_calibration(source: str, input_specs: Sequence, samples: Optional[int] = None, seed: int = 0,
                     preprocess: Optional[dict] = None) -> CalibrationData:
    """Read calibration samples for a model: ``.npy``, ``.npz``, an image folder, or ``synthetic``.

    ``input_specs``: the model's :class:`~edgekit.graph.io.TensorSpec` inputs. ``preprocess`` (image
    folders): ``{"resize": [H, W], "mean": [...], "std": [...], "color": "RGB"|"L"}``; by default the
    classifier recipe in ``exporters/classifier.toml`` with the model's own H, W.
    """
    if not input_specs:
        raise InputError("the model has no inputs to calibrate")
    if samples is not None and samples <= 0:
        raise InputError(f"--samples must be positive, got {samples}")
    if str(source) == "synthetic":
        return _synthetic(input_specs, samples or 32, seed)
    p = Path(source)
    if not p.exists():
        raise CalibrationError(f"calibration data not found: {p}",
                               hint="give a .npy/.npz file, a folder of images, or 'synthetic'")
    if p.is_dir():
        data = _images(p, input_specs, samples, preprocess)
    elif p.suffix.lower() == ".npy":
        try:
            arr = np.load(str(p), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CalibrationError(f"{p} is not a readable .npy array: {exc}") from exc
        if len(input_specs) != 1:
            raise CalibrationError(f"the model has {len(input_specs)} inputs; a .npy holds one array",
                                   hint="use a .npz with one array per input name")
        spec = input_specs[0]
        data = CalibrationData({spec.name: check_array(spec.name, arr, spec, str(p))}, str(p))
    elif p.suffix.lower() == ".npz":
        try:
            z = np.load(str(p), allow_pickle=False)
            content = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise CalibrationError(f"{p} is not a readable .npz archive: {exc}") from exc
        arrays = {}
        names = [spec.name for spec in input_specs]
        kw = f"{names[0]}=samples" if names[0].isidentifier() else f"**{{{names[0]!r}: samples}}"
        for spec in input_specs:
            if spec.name not in content:  # a guess (the only array, whatever its name) could be wrong data
                raise CalibrationError(
                    f"{p.name} has no array named after model input '{spec.name}' (its arrays: "
                    f"{sorted(content)[:6]}; the model's inputs: {names})",
                    hint=f"save one array per input name: np.savez(path, {kw})")
            arrays[spec.name] = check_array(spec.name, content[spec.name], spec, str(p))
        data = CalibrationData(arrays, str(p))
    else:
        raise CalibrationError(f"unsupported calibration source {p.name}",
                               hint="give a .npy/.npz file, a folder of images, or 'synthetic'")
    ns = {v.shape[0] for v in data.arrays.values()}
    if len(ns) != 1:
        raise CalibrationError(f"calibration arrays disagree on the number of samples: {sorted(ns)}")
    if samples is not None and samples < data.num_samples:
        data.arrays = {k: v[:samples] for k, v in data.arrays.items()}
    return data


def _static_shape(spec, batch: int) -> List[int]:
    dims = []
    for i, d in enumerate(spec.shape):
        if i == 0:
            dims.append(batch)
        elif isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            raise CalibrationError(f"input '{spec.name}' has a dynamic dimension {d!r}: synthetic data needs a fixed shape",
                                   hint="calibrate with real data (.npy/.npz)")
    return dims


def memory_bytes() -> int:
    """Physical memory of this machine (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _synthetic(input_specs: Sequence, n: int, seed: int) -> CalibrationData:
    shapes = {}
    for spec in input_specs:
        if not np.issubdtype(np.dtype(spec.dtype), np.floating):
            raise CalibrationError(f"input '{spec.name}' is {spec.dtype}: synthetic data covers float inputs only")
        shapes[spec.name] = _static_shape(spec, n)
    # Check the size before allocating: a typo'd --samples must be a one-line error, not a MemoryError.
    # The generator needs float64 then float32, i.e. 12 bytes per value; allow a quarter of the memory.
    per_sample = sum(4 * int(np.prod(s[1:], dtype=np.int64)) for s in shapes.values())
    budget = (memory_bytes() or 8 << 30) // 4
    if n * per_sample * 3 > budget:
        most = max(1, budget // (3 * max(per_sample, 1)))
        raise InputError(f"--samples {n}: synthetic calibration data would need {n * per_sample / 2**30:.1f} GiB "
                         f"({per_sample} bytes per sample), more than this machine can hold",
                         hint=f"use at most {most} samples here (100-500 are plenty for calibration)")
    rng = np.random.default_rng(seed)
    arrays = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    return CalibrationData(arrays, "synthetic", synthetic=True, warnings=[
        "calibrating on SYNTHETIC random data: the INT8 ranges do not reflect real inputs and accuracy "
        "is NOT preserved; use real samples (--calib data.npy or an image folder) for a deployable model"])


def default_preprocess() -> dict:
    with open(data_dir("exporters") / "classifier.toml", "rb") as fh:
        return dict(tomllib.load(fh).get("preprocess", {}))


def _images(folder: Path, input_specs: Sequence, samples: Optional[int], preprocess: Optional[dict]) -> CalibrationData:
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)",
                               hint="put calibration images in it, or give a .npy/.npz file")
    if len(input_specs) != 1:
        raise CalibrationError("an image folder can only calibrate a single-input model")
    spec = input_specs[0]
    if len(spec.shape) != 4:
        raise CalibrationError(f"input '{spec.name}' is not an NCHW image ({list(spec.shape)})")
    try:
        from PIL import Image  # lazy: Pillow is optional (image folders only)
    except ImportError:
        raise DependencyMissingError("images", "read calibration images (Pillow)") from None
    pre = dict(default_preprocess())
    pre.update(preprocess or {})
    c = spec.shape[1] if isinstance(spec.shape[1], int) else 3
    hw = [d if isinstance(d, int) and d > 0 else None for d in spec.shape[2:]]
    size = [hw[0] or pre.get("resize", [224, 224])[0], hw[1] or pre.get("resize", [224, 224])[1]]
    mean = np.asarray(pre.get("mean", [0.0] * c), np.float32)
    std = np.asarray(pre.get("std", [1.0] * c), np.float32)
    if c == 1:
        mean, std = mean[:1].mean(keepdims=True), std[:1].mean(keepdims=True)
    if mean.size != c or std.size != c:
        raise CalibrationError(f"preprocess mean/std have {mean.size} values, the model has {c} channels")
    out = []
    for f in files[: samples or len(files)]:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                a = np.asarray(im, np.float32) / 255.0
        except OSError as exc:
            raise CalibrationError(f"cannot read image {f.name}: {exc}") from exc
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        out.append((a - mean[:, None, None]) / std[:, None, None])
    return CalibrationData({spec.name: np.stack(out).astype(np.float32)}, str(folder))


# ---------------------------------------------------------------------------------------------
# collection


def batches(n: int, batch: int) -> Iterable[Tuple[int, int]]:
    for s in range(0, n, batch):
        yield s, min(n, s + batch)


def collect_stats(model, data: CalibrationData, tensors: Sequence[str], histogram: bool = True,
                  batch_size: int = 8, indices: Optional[Tuple[int, int]] = None,
                  progress: Optional[Callable[..., None]] = None, threads: Optional[int] = None) -> Dict[str, TensorStats]:
    """Run the float model over the calibration data and stream statistics of ``tensors``.

    The reductions run inside ONNX Runtime: each float tensor of known per-sample size gets
    ReduceMin/ReduceMax outputs and (histograms) a strided subsample, so no activation is copied out
    whole and ORT frees every intermediate as usual. Other tensors come out whole.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inputs = {i.name for i in m.graph.input}
    # A dynamic-batch model runs in sub-batches of at most STATS_BATCH samples (less memory); ticks stay
    # per batch and the histogram budget too.
    sub = min(batch_size, STATS_BATCH) if _dynamic_batch(m) else batch_size
    cap = max(1, HIST_SAMPLE_CAP * sub // max(batch_size, 1))
    plan = _augment(m, [t for t in tensors if t not in inputs], histogram, sub, cap)
    try:
        # ORT never fuses away a node whose output is a graph output, so full optimisation is safe here
        # and twice as fast as none on x86 (NCHWc layouts).
        sess = ort_session(m, intra_threads=threads, log_level=3, optimization="all")
    except Exception as exc:
        raise CalibrationError(f"ONNX Runtime cannot run the float model for calibration: {str(exc).splitlines()[0][:200]}") from exc
    names = [o.name for o in sess.get_outputs()]
    stats = {t: TensorStats() for t in tensors}
    lo, hi = indices or (0, data.num_samples)
    for s, e in batches(hi - lo, batch_size):
        for ss, se in batches(e - s, sub):
            feed = data.take(lo + s + ss, lo + s + se)
            try:
                outs = dict(zip(names, sess.run(names, feed)))
            except Exception as exc:
                raise CalibrationError(f"the model rejected the calibration batch: {str(exc).splitlines()[0][:200]}",
                                       hint="check the calibration data shape and dtype against the model input") from exc
            n = se - ss
            for t in tensors:
                if t in plan:
                    mn, mx, sample, per = plan[t]
                    stats[t].fold(float(outs[mn]), float(outs[mx]), per * n, outs[sample] if sample else None)
                else:
                    v = feed[t] if t in inputs else outs.get(t)
                    if v is not None:
                        stats[t].update(v, histogram, cap)
            del outs
        if progress:
            progress(advance=1)
    return stats


def _augment(m, tensors: Sequence[str], histogram: bool, sub: int, cap: int) -> Dict[str, Tuple[str, str, str, int]]:
    """Add in-graph statistics outputs to ``m`` (in place); ``{tensor: (min, max, sample or '', per-sample size)}``.

    Tensors without a float type and a static per-sample shape (from shape inference) are made
    plain outputs instead and reduced on the host.
    """
    try:
        inferred = shape_inference.infer_shapes(m)
    except Exception:
        inferred = m
    g = inferred.graph
    info = {vi.name: vi.type.tensor_type for vi in list(g.value_info) + list(g.output)
            if vi.type.HasField("tensor_type")}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    existing = {o.name for o in m.graph.output}
    plan: Dict[str, Tuple[str, str, str, int]] = {}
    shape_flat = numpy_helper.from_array(np.array([-1], np.int64), "edgekit_calib_flat")
    added_flat = False
    for i, t in enumerate(tensors):
        tt = info.get(t)
        dims = list(tt.shape.dim) if tt is not None and tt.HasField("shape") else []
        per = 1
        for d in dims[1:]:
            per = per * d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 0
        if tt is None or tt.elem_type not in floats or not dims or per <= 0:
            if t not in existing:
                m.graph.output.append(onnx.ValueInfoProto(name=t))
            continue
        mn, mx, smp = f"edgekit_calib_{i}_min", f"edgekit_calib_{i}_max", ""
        m.graph.node.extend([helper.make_node("ReduceMin", [t], [mn], keepdims=0),
                             helper.make_node("ReduceMax", [t], [mx], keepdims=0)])
        m.graph.output.extend([onnx.ValueInfoProto(name=mn), onnx.ValueInfoProto(name=mx)])
        if histogram:
            step = int(np.ceil(per * sub / cap)) if per * sub > cap else 1
            smp, flat = f"edgekit_calib_{i}_sample", f"edgekit_calib_{i}_flat"
            consts = [numpy_helper.from_array(np.array([v], np.int64), f"edgekit_calib_{i}_{k}")
                      for k, v in (("start", 0), ("end", np.iinfo(np.int64).max), ("axis", 0), ("step", step))]
            m.graph.initializer.extend(consts)
            m.graph.node.extend([helper.make_node("Reshape", [t, shape_flat.name], [flat]),
                                 helper.make_node("Slice", [flat] + [c.name for c in consts], [smp])])
            m.graph.output.append(onnx.ValueInfoProto(name=smp))
            added_flat = True
        plan[t] = (mn, mx, smp, per)
    if added_flat:
        m.graph.initializer.append(shape_flat)
    return plan


def _dynamic_batch(model) -> bool:
    """Do all graph inputs have a symbolic (or unset) first dimension?"""
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return False
    return True
