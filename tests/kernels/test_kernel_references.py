"""Properties of the NumPy references that define the CUDA kernels (run everywhere, on CPU)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgekit.errors import DependencyMissingError, InputError, ShapeError
from edgekit.kernels import reference as ref
from edgekit.kernels import KERNELS, kernel_source_path


# ---- letterbox ------------------------------------------------------------------------------------

@pytest.mark.parametrize("in_hw, out_hw", [((100, 200), (320, 320)), ((480, 640), (320, 320)),
                                           ((333, 101), (224, 160)), ((50, 50), (64, 96))])
def test_letterbox_keeps_aspect_and_pads(in_hw, out_hw):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=in_hw + (3,), dtype=np.uint8)
    out, info = ref.letterbox_normalize(img, out_hw, pad_value=114)
    assert out.shape == (3,) + tuple(out_hw) and out.dtype == np.float32
    # one scale for both axes: the resized aspect matches the input within a pixel of rounding
    r = min(out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    assert abs(info.new_h - in_hw[0] * r) <= 0.5 + 1e-9 and abs(info.new_w - in_hw[1] * r) <= 0.5 + 1e-9
    assert info.new_h == out_hw[0] or info.new_w == out_hw[1]
    # pad split evenly (odd pixel at the bottom/right), every pad pixel == pad value
    assert 0 <= (out_hw[0] - info.new_h) - 2 * info.pad_top <= 1
    assert 0 <= (out_hw[1] - info.new_w) - 2 * info.pad_left <= 1
    mask = np.ones(out_hw, dtype=bool)
    mask[info.pad_top:info.pad_top + info.new_h, info.pad_left:info.pad_left + info.new_w] = False
    assert np.all(out[:, mask] == np.float32(114) * np.float32(1 / 255))
    inside = out[:, ~mask]
    assert inside.min() >= 0 and inside.max() <= 1


def test_letterbox_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for in_hw, out_hw in [((37, 53), (64, 64)), ((120, 90), (32, 32)), ((64, 48), (64, 48))]:
        img = rng.integers(0, 256, size=in_hw + (3,), dtype=np.uint8)
        out, info = ref.letterbox_normalize(img, out_hw, mean=(0, 0, 0), std=(1, 1, 1), pixel_scale=1.0)
        t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
        want = torch.nn.functional.interpolate(t, size=(info.new_h, info.new_w), mode="bilinear",
                                               align_corners=False)[0].numpy()
        got = out[:, info.pad_top:info.pad_top + info.new_h, info.pad_left:info.pad_left + info.new_w]
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_letterbox_chw_layout_normalize_and_swap():
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    out, _ = ref.letterbox_normalize(img, (4, 4), mean=mean, std=std, letterbox=False)
    for c, v in enumerate((10, 20, 30)):
        np.testing.assert_allclose(out[c], (v / 255 - mean[c]) / std[c], rtol=1e-6)
    out_sw, _ = ref.letterbox_normalize(img, (4, 4), letterbox=False, swap_rb=True)
    np.testing.assert_allclose(out_sw[0], 30 / 255, rtol=1e-6)
    np.testing.assert_allclose(out_sw[2], 10 / 255, rtol=1e-6)


def test_letterbox_half_downscale_is_block_mean_and_fp16():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    out, _ = ref.letterbox_normalize(img, (8, 8), pixel_scale=1.0)
    blocks = img.astype(np.float64).reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(out, blocks, atol=1e-4)
    out16, _ = ref.letterbox_normalize(img, (8, 8), dtype=np.float16)
    assert out16.dtype == np.float16
    np.testing.assert_allclose(out16.astype(np.float32), out / 255 * 1.0, atol=1e-3)


def test_letterbox_batch_equals_single():
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(2, 30, 40, 3), dtype=np.uint8)
    out, _ = ref.letterbox_normalize(imgs, (32, 32))
    for i in range(2):
        np.testing.assert_array_equal(out[i], ref.letterbox_normalize(imgs[i], (32, 32))[0])


def test_letterbox_bad_inputs():
    with pytest.raises(InputError):
        ref.letterbox_normalize(np.zeros((4, 4, 3), dtype=np.float32), (4, 4))
    with pytest.raises(ShapeError):
        ref.letterbox_normalize(np.zeros((4, 4, 2), dtype=np.uint8), (4, 4))
    with pytest.raises(InputError):
        ref.letterbox_normalize(np.zeros((4, 4, 3), dtype=np.uint8), (4, 4), std=(1, 0, 1))
    with pytest.raises(ShapeError):
        ref.letterbox_params(0, 4, 4, 4)


def test_scale_boxes_inverts_letterbox():
    info = ref.letterbox_params(480, 640, 320, 320)
    orig = np.array([[10, 20, 300, 400], [0, 0, 640, 480]], dtype=np.float32)
    r = 1 / info.scale_x
    net = orig.copy()
    net[:, [0, 2]] = orig[:, [0, 2]] * r + info.pad_left
    net[:, [1, 3]] = orig[:, [1, 3]] / info.scale_y + info.pad_top
    np.testing.assert_allclose(ref.scale_boxes(net, info), orig, atol=1e-3)


# ---- softmax + top-k ------------------------------------------------------------------------------

def test_softmax_topk_properties():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 1000)).astype(np.float32) * 4
    probs, idx, vals = ref.softmax_topk(logits, k=7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(probs >= 0)
    np.testing.assert_array_equal(idx, np.argsort(-logits, axis=1)[:, :7])
    np.testing.assert_array_equal(vals, np.take_along_axis(probs, idx, axis=1))
    assert np.all(np.diff(vals, axis=1) <= 0)
    # shift invariance and no overflow on huge logits
    np.testing.assert_allclose(ref.softmax_topk(logits + 500, 7)[0], probs, rtol=1e-4, atol=1e-7)
    p, i, v = ref.softmax_topk(np.array([1000.0, 0.0, 1000.0], dtype=np.float32), k=3)
    assert np.all(np.isfinite(p)) and list(i) == [0, 2, 1]  # tie: lower index first
    assert v[0] == v[1] == pytest.approx(0.5)


def test_softmax_topk_bad_inputs():
    with pytest.raises(InputError):
        ref.softmax_topk(np.zeros((2, 3)), k=4)
    with pytest.raises(InputError):
        ref.softmax_topk(np.zeros((2, 3)), k=0)
    with pytest.raises(ShapeError):
        ref.softmax_topk(np.zeros((2, 3, 4)), k=1)


# ---- YOLO decode + NMS ----------------------------------------------------------------------------

def _preds_with_boxes(in_hw, strides, placed, num_classes=3, seed=5):
    """Raw head output whose decode is known: `placed` = [(anchor index, xyxy box, class, logit)]."""
    anchors, strd = ref.make_anchors(in_hw[0], in_hw[1], strides)
    n = len(anchors)
    rng = np.random.default_rng(seed)
    preds = np.zeros((1, 4 + num_classes, n), dtype=np.float32)
    preds[0, :4] = rng.uniform(0.5, 3, size=(4, n))
    preds[0, 4:] = rng.uniform(-12, -8, size=(num_classes, n))
    for a, box, cls, logit in placed:
        preds[0, :4, a] = ref.encode_boxes(np.array([box], np.float32), anchors[a:a + 1], strd[a:a + 1])[0]
        preds[0, 4 + cls, a] = logit
    return preds, anchors, strd


def test_anchor_layout_matches_detector_output():
    anchors, strd = ref.make_anchors(320, 320, (8, 16, 32))
    assert len(anchors) == 40 * 40 + 20 * 20 + 10 * 10 == 2100
    assert tuple(anchors[0]) == (0.5, 0.5) and tuple(anchors[1]) == (1.5, 0.5) and tuple(anchors[40]) == (0.5, 1.5)
    assert strd[1599] == 8 and strd[1600] == 16 and strd[-1] == 32
    assert len(ref.make_anchors(330, 250, (8, 16, 32))[0]) == 42 * 32 + 21 * 16 + 11 * 8  # ceil division


def test_decode_inverts_known_encoding():
    strides = (8, 16, 32)
    placed = [(100, [10, 20, 60, 90], 0, 4.0), (1700, [100, 120, 180, 200], 2, 3.0),
              (2050, [200, 10, 310, 300], 1, 2.0)]
    preds, _, _ = _preds_with_boxes((320, 320), strides, placed)
    boxes, scores, classes = ref.yolo_decode(preds, (320, 320), strides)
    for a, box, cls, logit in placed:
        np.testing.assert_allclose(boxes[0, a], box, atol=1e-3)
        assert classes[0, a] == cls and scores[0, a] == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-6)
    dets = ref.yolo_decode_nms(preds, (320, 320), strides, conf_threshold=0.5)[0]
    assert sorted(dets.anchors.tolist()) == [100, 1700, 2050]
    assert list(dets.anchors) == [100, 1700, 2050]  # score order
    np.testing.assert_allclose(dets.boxes, [p[1] for p in placed], atol=1e-3)


def test_nms_keeps_best_of_overlapping_pair():
    strides = (8, 16, 32)
    a, b = [100, 100, 200, 200], [104, 102, 204, 198]  # IoU ~0.9
    placed = [(300, a, 1, 2.0), (900, b, 1, 5.0), (1000, [10, 10, 40, 40], 1, 1.0)]
    preds, _, _ = _preds_with_boxes((320, 320), strides, placed)
    dets = ref.yolo_decode_nms(preds, (320, 320), strides, conf_threshold=0.5, iou_threshold=0.45)[0]
    assert list(dets.anchors) == [900, 1000]  # the better of the pair survives, the far box too
    # another class is not suppressed unless class-agnostic
    placed[0] = (300, a, 2, 2.0)
    preds, _, _ = _preds_with_boxes((320, 320), strides, placed)
    assert sorted(ref.yolo_decode_nms(preds, (320, 320), strides, 0.5, 0.45)[0].anchors) == [300, 900, 1000]
    assert list(ref.yolo_decode_nms(preds, (320, 320), strides, 0.5, 0.45, class_agnostic=True)[0].anchors) == [900, 1000]
    # a threshold above their IoU keeps both
    assert len(ref.yolo_decode_nms(preds, (320, 320), strides, 0.5, 0.95, class_agnostic=True)[0].anchors) == 3


def test_nms_invariants_on_random_boxes():
    rng = np.random.default_rng(6)
    n = 300
    xy = rng.uniform(0, 200, size=(n, 2)).astype(np.float32)
    wh = rng.uniform(5, 60, size=(n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(size=n).astype(np.float32)
    classes = rng.integers(0, 3, size=n).astype(np.int32)
    thr = 0.5
    keep = ref.nms(boxes, scores, classes, thr, max_detections=1000)
    assert np.all(np.diff(scores[keep]) <= 0)
    kept = set(keep.tolist())
    for i in keep:  # no two kept boxes of one class overlap above the threshold
        same = [j for j in keep if j != i and classes[j] == classes[i]]
        if same:
            assert np.all(ref.box_iou(boxes[i], boxes[same]) <= thr)
    for j in range(n):  # every dropped box is covered by a better kept box of its class
        if j in kept:
            continue
        cover = [i for i in keep if classes[i] == classes[j] and scores[i] >= scores[j]]
        assert cover and np.any(ref.box_iou(boxes[j], boxes[cover]) > thr)
    assert len(ref.nms(boxes, scores, classes, thr, max_detections=5)) == 5


def test_decode_bad_inputs():
    with pytest.raises(ShapeError):
        ref.yolo_decode(np.zeros((1, 84, 2000), np.float32), (320, 320))
    with pytest.raises(ShapeError):
        ref.yolo_decode(np.zeros((1, 4, 2100), np.float32), (320, 320))
    with pytest.raises(InputError):
        ref.yolo_decode_nms(np.zeros((1, 6, 2100), np.float32), (320, 320), max_candidates=5000)


def test_yolo_model_output_decodes():
    torch = pytest.importorskip("torch")
    from edgekit.models.yolo import yolo_tiny

    torch.manual_seed(0)
    model = yolo_tiny(num_classes=4, width=8).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 96, 128)).numpy()
    assert out.shape[2] == len(ref.make_anchors(96, 128)[0])
    boxes, scores, classes = ref.yolo_decode(out, (96, 128))
    assert boxes.shape == (1, out.shape[2], 4) and np.all((scores > 0) & (scores < 1)) and classes.max() < 4


# ---- registry and the lazy CUDA loader --------------------------------------------------------------

def test_every_kernel_source_exists_and_defines_its_entry_points():
    import re

    for name, (fname, entries, _) in KERNELS.items():
        text = kernel_source_path(name).read_text()
        defined = set(re.findall(r'extern "C" __global__ void (\w+)', text))
        assert set(entries) == defined, name


def test_cuda_loader_without_pycuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    from edgekit.kernels import cuda

    with pytest.raises(DependencyMissingError) as exc:
        cuda.softmax_topk(np.zeros((1, 10), np.float32), 3)
    assert "pycuda" in exc.value.message and "pip install" in exc.value.hint
