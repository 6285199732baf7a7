"""The CUDA kernels against their NumPy references. Needs pycuda and a CUDA GPU: skipped elsewhere
(never ran in this project's CI, which has no GPU)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.device


def _have_gpu() -> bool:
    try:
        import pycuda.driver as drv

        drv.init()
        return drv.Device.count() > 0
    except Exception:
        return False


if not _have_gpu():
    pytest.skip("needs pycuda and a CUDA device", allow_module_level=True)

from edgekit.kernels import cuda  # noqa: E402
from edgekit.kernels import reference as ref  # noqa: E402


@pytest.mark.parametrize("in_hw, out_hw, letterbox, swap", [((480, 640), (320, 320), True, False),
                                                            ((333, 101), (224, 224), True, True),
                                                            ((100, 120), (224, 224), False, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_letterbox_matches_reference(in_hw, out_hw, letterbox, swap, dtype):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(2,) + in_hw + (3,), dtype=np.uint8)
    kw = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pad_value=114, letterbox=letterbox,
              swap_rb=swap, dtype=dtype)
    got, ginfo = cuda.letterbox_normalize(img, out_hw, **kw)
    want, winfo = ref.letterbox_normalize(img, out_hw, **kw)
    assert ginfo == winfo and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-3 if dtype == np.float16 else 1e-4)


@pytest.mark.parametrize("rows, classes, k", [(1, 10, 3), (4, 1000, 5), (3, 21843, 10)])
def test_softmax_topk_matches_reference(rows, classes, k):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(rows, classes)) * 5).astype(np.float32)
    gp, gi, gv = cuda.softmax_topk(logits, k)
    wp, wi, wv = ref.softmax_topk(logits, k)
    np.testing.assert_allclose(gp, wp, rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(gi, wi)
    np.testing.assert_allclose(gv, wv, rtol=1e-4)


@pytest.mark.parametrize("agnostic", [False, True])
def test_yolo_decode_nms_matches_reference(agnostic):
    rng = np.random.default_rng(2)
    in_hw, strides = (320, 320), (8, 16, 32)
    n = len(ref.make_anchors(*in_hw, strides)[0])
    preds = np.empty((2, 4 + 6, n), dtype=np.float32)
    preds[:, :4] = rng.uniform(0.2, 4.0, size=(2, 4, n))
    preds[:, 4:] = rng.normal(-3.0, 1.5, size=(2, 6, n))
    got = cuda.yolo_decode_nms(preds, in_hw, strides, 0.25, 0.45, 300, 4096, agnostic)
    want = ref.yolo_decode_nms(preds, in_hw, strides, 0.25, 0.45, 300, 4096, agnostic)
    for g, w in zip(got, want):
        assert len(w.anchors) > 10
        np.testing.assert_array_equal(g.anchors, w.anchors)
        np.testing.assert_array_equal(g.classes, w.classes)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
        np.testing.assert_allclose(g.scores, w.scores, rtol=1e-5)
