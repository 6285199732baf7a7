"""NumPy references that DEFINE what each CUDA kernel in ``kernels/`` computes.

They are also edgekit's CPU pre/post-processing path, so they are written to be exact about the
details a kernel must reproduce: pixel-centre convention, rounding of the letterboxed size, tie
breaking in top-k and NMS, float32 arithmetic. A CUDA kernel is correct when it matches these
(``tests/device/test_kernels_cuda.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import InputError, ShapeError

F32 = np.float32


# ---- letterbox + normalize + HWC->CHW + cast --------------------------------------------------

@dataclass(frozen=True)
class LetterboxInfo:
    """Where the resized image sits inside the network input, to map boxes back to the original."""

    in_h: int
    in_w: int
    out_h: int
    out_w: int
    new_h: int
    new_w: int
    pad_top: int
    pad_left: int
    scale_y: float  # input pixels per resized pixel (in_h / new_h)
    scale_x: float

    def to_dict(self) -> dict:
        return asdict(self)


def letterbox_params(in_h: int, in_w: int, out_h: int, out_w: int, letterbox: bool = True) -> LetterboxInfo:
    """Letterbox: one scale r = min(out_h / in_h, out_w / in_w) for both axes (aspect kept), the
    resized size rounded half-to-even, the pad split evenly with the odd pixel at the bottom/right.
    Without letterbox: a plain stretch to the output size, no pad."""
    if min(in_h, in_w, out_h, out_w) <= 0:
        raise ShapeError(f"image sizes must be positive (got {in_h}x{in_w} -> {out_h}x{out_w})")
    if letterbox:
        r = min(out_h / in_h, out_w / in_w)
        new_h = min(out_h, max(1, int(round(in_h * r))))
        new_w = min(out_w, max(1, int(round(in_w * r))))
    else:
        new_h, new_w = out_h, out_w
    pad_top = (out_h - new_h) // 2
    pad_left = (out_w - new_w) // 2
    return LetterboxInfo(in_h, in_w, out_h, out_w, new_h, new_w, pad_top, pad_left,
                         float(F32(in_h) / F32(new_h)), float(F32(in_w) / F32(new_w)))


def _axis_samples(n_out: int, scale: float, n_in: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(n_out, dtype=F32) + F32(0.5)) * F32(scale) - F32(0.5)
    pos = np.clip(pos, F32(0.0), F32(n_in - 1))
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (pos - i0.astype(F32)).astype(F32)
    return i0, i1, w


def letterbox_normalize(image: np.ndarray, out_hw: Sequence[int], mean: Sequence[float] = (0.0, 0.0, 0.0),
                        std: Sequence[float] = (1.0, 1.0, 1.0), pad_value: float = 114.0, letterbox: bool = True,
                        swap_rb: bool = False, pixel_scale: float = 1.0 / 255.0,
                        dtype=np.float32) -> Tuple[np.ndarray, LetterboxInfo]:
    """uint8 image ``[H, W, C]`` (or a batch ``[B, H, W, C]``) -> ``[C', out_h, out_w]`` (``[B, ...]``).

    value = (bilinear(image) * pixel_scale - mean[c]) / std[c]; pad pixels use ``pad_value`` in
    place of the sampled value. ``swap_rb`` reads channels 2, 1, 0 (BGR camera frame -> RGB net).
    C' = len(mean). Bilinear uses half-pixel centres with clamped source coordinates.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"letterbox_normalize wants a uint8 image, got {img.dtype}")
    batched = img.ndim == 4
    if img.ndim == 2:
        img = img[:, :, None]
    if not batched:
        img = img[None]
    if img.ndim != 4:
        raise ShapeError(f"image must be [H, W, C] or [B, H, W, C], got shape {tuple(np.asarray(image).shape)}")
    mean_a = np.asarray(mean, dtype=F32)
    std_a = np.asarray(std, dtype=F32)
    out_c = len(mean_a)
    if len(std_a) != out_c:
        raise InputError("mean and std must have the same length")
    if np.any(std_a == 0):
        raise InputError("std must not contain 0")
    _, in_h, in_w, in_c = img.shape
    if in_c < out_c or (swap_rb and in_c < 3):
        raise ShapeError(f"image has {in_c} channels, {out_c} needed")
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    info = letterbox_params(in_h, in_w, out_h, out_w, letterbox)
    y0, y1, wy = _axis_samples(info.new_h, info.scale_y, in_h)
    x0, x1, wx = _axis_samples(info.new_w, info.scale_x, in_w)
    chans = [(2 - c) if (swap_rb and c < 3) else c for c in range(out_c)]
    # Gather the four neighbours while still uint8 (a quarter of the bytes), then go to float32.
    ch = np.asarray(chans)
    wx_ = wx[None, None, :, None]
    wy_ = wy[None, :, None, None]
    r0 = img[:, y0]
    r1 = img[:, y1]

    def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return rows[:, :, cols][..., ch].astype(F32)

    top = corner(r0, x0) * (F32(1) - wx_) + corner(r0, x1) * wx_
    bot = corner(r1, x0) * (F32(1) - wx_) + corner(r1, x1) * wx_
    resized = top * (F32(1) - wy_) + bot * wy_  # [B, new_h, new_w, C']
    scale = F32(pixel_scale)
    norm = (resized * scale - mean_a) / std_a
    pad = (F32(pad_value) * scale - mean_a) / std_a
    out = np.empty((img.shape[0], out_c, out_h, out_w), dtype=F32)
    out[:] = pad[None, :, None, None]
    out[:, :, info.pad_top:info.pad_top + info.new_h, info.pad_left:info.pad_left + info.new_w] = \
        np.transpose(norm, (0, 3, 1, 2))
    out = out.astype(dtype, copy=False)
    return (out if batched else out[0]), info


def scale_boxes(boxes: np.ndarray, info: LetterboxInfo, clip: bool = True) -> np.ndarray:
    """Map xyxy boxes from network-input pixels back to the original image (inverse letterbox)."""
    b = np.asarray(boxes, dtype=F32).copy()
    b[..., [0, 2]] = (b[..., [0, 2]] - info.pad_left) * F32(info.scale_x)
    b[..., [1, 3]] = (b[..., [1, 3]] - info.pad_top) * F32(info.scale_y)
    if clip:
        b[..., [0, 2]] = np.clip(b[..., [0, 2]], 0, info.in_w)
        b[..., [1, 3]] = np.clip(b[..., [1, 3]], 0, info.in_h)
    return b


# ---- softmax + top-k ---------------------------------------------------------------------------

def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(logits, dtype=F32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(F32)


def softmax_topk(logits: np.ndarray, k: int = 5) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[B, C]`` (or ``[C]``) logits -> (probs, top-k indices int32, top-k probabilities).

    Order: descending probability, ties broken by the lower class index (a stable sort).
    """
    x = np.asarray(logits, dtype=F32)
    single = x.ndim == 1
    if single:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ShapeError(f"logits must be [B, C] with C > 0, got shape {tuple(np.asarray(logits).shape)}")
    if not 1 <= int(k) <= x.shape[1]:
        raise InputError(f"k must be between 1 and the number of classes ({x.shape[1]}), got {k}")
    probs = softmax(x)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int32)
    vals = np.take_along_axis(probs, order, axis=1)
    if single:
        return probs[0], order[0], vals[0]
    return probs, order, vals


# ---- YOLO-style decode + NMS -------------------------------------------------------------------

def grid_sizes(in_h: int, in_w: int, strides: Sequence[int]) -> List[Tuple[int, int]]:
    """(grid_h, grid_w) per stride: ceil(size / stride), what stride-2 convs with k//2 padding give."""
    return [(-(-in_h // s), -(-in_w // s)) for s in strides]


def make_anchors(in_h: int, in_w: int, strides: Sequence[int] = (8, 16, 32)) -> Tuple[np.ndarray, np.ndarray]:
    """Cell centres ``[N, 2]`` (x, y) in stride units and the stride of each anchor ``[N]``."""
    pts, strd = [], []
    for (gh, gw), s in zip(grid_sizes(in_h, in_w, strides), strides):
        ys, xs = np.meshgrid(np.arange(gh, dtype=F32), np.arange(gw, dtype=F32), indexing="ij")
        pts.append(np.stack([xs.ravel() + F32(0.5), ys.ravel() + F32(0.5)], axis=1))
        strd.append(np.full(gh * gw, s, dtype=F32))
    return np.concatenate(pts).astype(F32), np.concatenate(strd)


def encode_boxes(boxes_xyxy: np.ndarray, anchors: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """The inverse of the box part of ``yolo_decode``: xyxy pixels -> ltrb distances in stride units."""
    b = np.asarray(boxes_xyxy, dtype=F32)
    s = strides[:, None]
    lt = anchors - b[:, :2] / s
    rb = b[:, 2:] / s - anchors
    return np.concatenate([lt, rb], axis=1).astype(F32)


def yolo_decode(preds: np.ndarray, in_hw: Sequence[int], strides: Sequence[int] = (8, 16, 32)
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[B, 4 + C, N]`` raw head output -> (boxes ``[B, N, 4]`` xyxy input pixels, scores ``[B, N]``,
    classes ``[B, N]`` int32). Class = first arg-max of the logits, score = sigmoid(that logit);
    box = ((ax - l) * s, (ay - t) * s, (ax + r) * s, (ay + b) * s) with the distances used as given."""
    p = np.asarray(preds, dtype=F32)
    if p.ndim != 3 or p.shape[1] < 5:
        raise ShapeError(f"detector output must be [B, 4 + classes, N], got shape {tuple(p.shape)}")
    in_h, in_w = int(in_hw[0]), int(in_hw[1])
    anchors, strd = make_anchors(in_h, in_w, strides)
    if anchors.shape[0] != p.shape[2]:
        raise ShapeError(f"detector output has N={p.shape[2]} anchors but a {in_h}x{in_w} input with strides "
                         f"{list(strides)} gives {anchors.shape[0]}", hint="check the input size and strides")
    dist = p[:, :4, :]  # [B, 4, N]
    ax, ay, s = anchors[:, 0], anchors[:, 1], strd
    boxes = np.stack([(ax - dist[:, 0]) * s, (ay - dist[:, 1]) * s, (ax + dist[:, 2]) * s, (ay + dist[:, 3]) * s],
                     axis=-1).astype(F32)
    logits = p[:, 4:, :]
    classes = np.argmax(logits, axis=1).astype(np.int32)
    best = np.take_along_axis(logits, classes[:, None, :].astype(np.int64), axis=1)[:, 0, :]
    scores = (F32(1) / (F32(1) + np.exp(-best))).astype(F32)
    return boxes, scores, classes


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many, float32; boxes with negative extent have zero area."""
    a = np.asarray(box, dtype=F32)
    b = np.asarray(boxes, dtype=F32)
    iw = np.maximum(F32(0), np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]))
    ih = np.maximum(F32(0), np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]))
    inter = iw * ih
    area_a = max(F32(0), a[2] - a[0]) * max(F32(0), a[3] - a[1])
    area_b = np.maximum(F32(0), b[:, 2] - b[:, 0]) * np.maximum(F32(0), b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    out = np.zeros(len(b), dtype=F32)
    ok = union > 0
    out[ok] = inter[ok] / union[ok]
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, classes: Optional[np.ndarray] = None, iou_threshold: float = 0.45,
        max_detections: int = 300, class_agnostic: bool = False, tie_break: Optional[np.ndarray] = None) -> np.ndarray:
    """Greedy NMS. Visit boxes by descending score (ties: lower ``tie_break`` value, default the
    position); keep a box unless a kept box of the same class (any class if agnostic) overlaps it
    with IoU > ``iou_threshold``. Returns kept positions in visiting order, at most max_detections."""
    boxes = np.asarray(boxes, dtype=F32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=F32).reshape(-1)
    n = len(scores)
    if classes is None:
        classes = np.zeros(n, dtype=np.int32)
    tb = np.arange(n) if tie_break is None else np.asarray(tie_break)
    order = np.lexsort((tb, -scores))
    removed = np.zeros(n, dtype=bool)
    keep: List[int] = []
    for pos, i in enumerate(order):
        if removed[i]:
            continue
        keep.append(int(i))
        if len(keep) >= max_detections:
            break
        rest = order[pos + 1:]
        rest = rest[~removed[rest]]
        if not class_agnostic:
            rest = rest[classes[rest] == classes[i]]
        if len(rest):
            removed[rest[box_iou(boxes[i], boxes[rest]) > F32(iou_threshold)]] = True
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Detections:
    boxes: np.ndarray    # [K, 4] xyxy, network-input pixels
    scores: np.ndarray   # [K]
    classes: np.ndarray  # [K] int32
    anchors: np.ndarray  # [K] index into N (which cell produced it)

    def to_dict(self) -> dict:
        return {"boxes": self.boxes.tolist(), "scores": self.scores.tolist(), "classes": self.classes.tolist()}


def yolo_decode_nms(preds: np.ndarray, in_hw: Sequence[int], strides: Sequence[int] = (8, 16, 32),
                    conf_threshold: float = 0.25, iou_threshold: float = 0.45, max_detections: int = 300,
                    max_candidates: int = 4096, class_agnostic: bool = False) -> List[Detections]:
    """Decode, keep scores >= conf_threshold, take the best ``max_candidates`` (score desc, ties by
    anchor index), greedy NMS, at most ``max_detections`` per image."""
    if not 0 < max_candidates <= 4096:
        raise InputError("max_candidates must be in 1..4096 (the CUDA kernel's bitmask limit)")
    if max_detections <= 0:
        raise InputError("max_detections must be positive")
    boxes, scores, classes = yolo_decode(preds, in_hw, strides)
    out = []
    for b in range(boxes.shape[0]):
        cand = np.nonzero(scores[b] >= F32(conf_threshold))[0]
        cand = cand[np.lexsort((cand, -scores[b][cand]))][:max_candidates]
        keep = nms(boxes[b][cand], scores[b][cand], classes[b][cand], iou_threshold, max_detections,
                   class_agnostic, tie_break=cand)
        idx = cand[keep]
        out.append(Detections(boxes[b][idx], scores[b][idx], classes[b][idx], idx.astype(np.int64)))
    return out
