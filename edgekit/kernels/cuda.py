"""Run the CUDA kernels of ``kernels/`` through pycuda (compiled at run time with nvcc).

Nothing here imports pycuda at module import; the first call does, and raises
:class:`~edgekit.errors.DependencyMissingError` when pycuda is missing. A CUDA context must be
current (a TensorRT runner has one); otherwise ``pycuda.autoinit`` creates one on the default GPU.

These functions take and return host NumPy arrays, which is what the tests compare with the
references; a board pipeline would pass device pointers to the same kernels. NOT exercised in this
project's CI (no GPU): only compiled to PTX with nvcc here; tests/device runs them where a GPU exists.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Tuple

import numpy as np

from edgekit.errors import DependencyMissingError, InputError
from edgekit.kernels import KERNELS, kernel_source
from edgekit.kernels import reference as ref


def _pycuda():
    """pycuda's driver and SourceModule, with a current CUDA context (created when none is)."""
    try:
        import pycuda.driver as drv  # lazy: pycuda is optional
        from pycuda.compiler import SourceModule  # lazy: pycuda is optional
    except ImportError as exc:
        raise DependencyMissingError("pycuda", "run the CUDA pre/post-processing kernels",
                                     install="pip install pycuda (needs nvcc on PATH; on a Jetson add "
                                             "/usr/local/cuda/bin) or pip install 'edgekit[jetson]'") from exc
    try:
        drv.Context.get_current()
        has_ctx = drv.Context.get_current() is not None
    except drv.LogicError:
        has_ctx = False
    if not has_ctx:
        import pycuda.autoinit  # noqa: F401  (lazy: creates a context on device 0)
    return drv, SourceModule


@lru_cache(maxsize=None)
def load_module(name: str):
    """Compile ``kernels/<name>.cu`` for the current GPU (cached per process)."""
    _, SourceModule = _pycuda()
    return SourceModule(kernel_source(name), no_extern_c=True, options=["-O3"])


def get_function(name: str, entry: str):
    """Entry point ``entry`` of kernel file ``name``, compiled on first use."""
    if entry not in KERNELS[name][1]:
        raise InputError(f"kernel file {name} has no entry point {entry}")
    return load_module(name).get_function(entry)


def letterbox_normalize(image: np.ndarray, out_hw: Sequence[int], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                        pad_value: float = 114.0, letterbox: bool = True, swap_rb: bool = False,
                        pixel_scale: float = 1.0 / 255.0, dtype=np.float32) -> Tuple[np.ndarray, ref.LetterboxInfo]:
    """CUDA version of :func:`edgekit.kernels.reference.letterbox_normalize` (same arguments)."""
    drv, _ = _pycuda()
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or img.ndim not in (3, 4):
        raise InputError("letterbox_normalize wants a uint8 [H, W, C] or [B, H, W, C] image")
    batched = img.ndim == 4
    if not batched:
        img = img[None]
    b, in_h, in_w, in_c = img.shape
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    info = ref.letterbox_params(in_h, in_w, out_h, out_w, letterbox)
    mean_a = np.ascontiguousarray(mean, dtype=np.float32)
    std_a = np.ascontiguousarray(std, dtype=np.float32)
    out_c = len(mean_a)
    half = np.dtype(dtype) == np.float16
    out = np.empty((b, out_c, out_h, out_w), dtype=np.float16 if half else np.float32)
    fn = get_function("letterbox_normalize", "letterbox_normalize_f16" if half else "letterbox_normalize_f32")
    block = (16, 16, 1)
    grid = ((out_w + 15) // 16, (out_h + 15) // 16, b)
    fn(drv.In(img), np.int32(in_h), np.int32(in_w), np.int32(in_c), np.int32(in_w * in_c),
       np.int64(in_h * in_w * in_c), drv.Out(out), np.int32(out_h), np.int32(out_w), np.int32(out_c),
       np.int32(info.new_h), np.int32(info.new_w), np.int32(info.pad_top), np.int32(info.pad_left),
       np.float32(info.scale_y), np.float32(info.scale_x), drv.In(mean_a), drv.In(std_a),
       np.float32(pixel_scale), np.float32(pad_value), np.int32(1 if swap_rb else 0), block=block, grid=grid)
    return (out if batched else out[0]), info


def softmax_topk(logits: np.ndarray, k: int = 5) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CUDA version of :func:`edgekit.kernels.reference.softmax_topk`."""
    drv, _ = _pycuda()
    x = np.ascontiguousarray(logits, dtype=np.float32)
    single = x.ndim == 1
    if single:
        x = x[None]
    rows, classes = x.shape
    if not 1 <= k <= classes:
        raise InputError(f"k must be between 1 and {classes}")
    probs = np.empty_like(x)
    scratch = drv.mem_alloc(x.nbytes)
    idx = np.empty((rows, k), dtype=np.int32)
    vals = np.empty((rows, k), dtype=np.float32)
    threads = 1
    while threads < min(classes, 1024):
        threads *= 2
    threads = max(32, threads)
    get_function("softmax_topk", "softmax_topk")(drv.In(x), np.int32(rows), np.int32(classes), np.int32(k),
                                                 drv.Out(probs), scratch, drv.Out(idx), drv.Out(vals),
                                                 block=(threads, 1, 1), grid=(rows, 1, 1))
    scratch.free()
    if single:
        return probs[0], idx[0], vals[0]
    return probs, idx, vals


def yolo_decode_nms(preds: np.ndarray, in_hw: Sequence[int], strides: Sequence[int] = (8, 16, 32),
                    conf_threshold: float = 0.25, iou_threshold: float = 0.45, max_detections: int = 300,
                    max_candidates: int = 4096, class_agnostic: bool = False) -> List[ref.Detections]:
    """CUDA version of :func:`edgekit.kernels.reference.yolo_decode_nms`."""
    drv, _ = _pycuda()
    p = np.ascontiguousarray(preds, dtype=np.float32)
    if p.ndim != 3 or p.shape[1] < 5:
        raise InputError(f"detector output must be [B, 4 + classes, N], got {p.shape}")
    if not 0 < max_candidates <= 4096:
        raise InputError("max_candidates must be in 1..4096")
    b, ch, n = p.shape
    in_h, in_w = int(in_hw[0]), int(in_hw[1])
    expected = sum(gh * gw for gh, gw in ref.grid_sizes(in_h, in_w, strides))
    if expected != n:
        raise InputError(f"N={n} does not match a {in_h}x{in_w} input with strides {list(strides)} ({expected})")
    st = np.ascontiguousarray(strides, dtype=np.int32)
    count = np.zeros(b, dtype=np.int32)
    d_count = drv.to_device(count)
    cand_box = drv.mem_alloc(b * n * 4 * 4)
    cand_score = drv.mem_alloc(b * n * 4)
    cand_cls = drv.mem_alloc(b * n * 4)
    cand_anchor = drv.mem_alloc(b * n * 4)
    m = max_candidates
    s_box = drv.mem_alloc(b * m * 4 * 4)
    s_score = drv.mem_alloc(b * m * 4)
    s_cls = drv.mem_alloc(b * m * 4)
    s_anchor = drv.mem_alloc(b * m * 4)
    words = (m + 63) // 64
    mask = drv.mem_alloc(b * m * words * 8)
    out_box = np.zeros((b, max_detections, 4), dtype=np.float32)
    out_score = np.zeros((b, max_detections), dtype=np.float32)
    out_cls = np.zeros((b, max_detections), dtype=np.int32)
    out_anchor = np.zeros((b, max_detections), dtype=np.int32)
    out_count = np.zeros(b, dtype=np.int32)
    g = lambda e: get_function("yolo_decode_nms", e)  # noqa: E731
    g("yolo_decode_candidates")(drv.In(p), np.int32(b), np.int32(ch - 4), np.int32(n), np.int32(in_h), np.int32(in_w),
                                drv.In(st), np.int32(len(st)), np.float32(conf_threshold), d_count, cand_box,
                                cand_score, cand_cls, cand_anchor, block=(256, 1, 1), grid=((n + 255) // 256, b, 1))
    g("yolo_rank_candidates")(d_count, cand_box, cand_score, cand_cls, cand_anchor, np.int32(n), np.int32(m),
                              s_box, s_score, s_cls, s_anchor, block=(256, 1, 1), grid=((n + 255) // 256, b, 1))
    g("yolo_nms_mask")(d_count, np.int32(m), s_box, s_cls, np.float32(iou_threshold),
                       np.int32(1 if class_agnostic else 0), mask, block=(64, 1, 1), grid=(words, words, b))
    g("yolo_nms_select")(d_count, np.int32(m), mask, s_box, s_score, s_cls, s_anchor, np.int32(max_detections),
                         drv.Out(out_box), drv.Out(out_score), drv.Out(out_cls), drv.Out(out_anchor), drv.Out(out_count),
                         block=(64, 1, 1), grid=(b, 1, 1))
    for buf in (d_count, cand_box, cand_score, cand_cls, cand_anchor, s_box, s_score, s_cls, s_anchor, mask):
        buf.free()
    out = []
    for i in range(b):
        k = int(out_count[i])
        out.append(ref.Detections(out_box[i, :k], out_score[i, :k], out_cls[i, :k], out_anchor[i, :k].astype(np.int64)))
    return out


__all__ = ["get_function", "letterbox_normalize", "load_module", "softmax_topk", "yolo_decode_nms"]
