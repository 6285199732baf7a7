"""CPU cost of edgekit's pre/post-processing references (the CPU path of kernels/), side by side.

Prints JSON: median ms per call of the NumPy letterbox (1080p frame -> 640x640 CHW) next to the same
work done with torch.nn.functional.interpolate (ratio = numpy / torch), YOLO decode + NMS on a 640
input (8400 anchors, 80 classes), softmax + top-5 over 32 x 1000 logits, and the tegrastats parser
(microseconds per line). The CUDA kernels are not timed here (no GPU on this machine).
Run: .venv/bin/python bench/kernels_cpu_postprocess.py
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeat: int = 15, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def main() -> dict:
    from edgekit.bench.telemetry import parse_tegrastats_line
    from edgekit.kernels import reference as ref

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8)
    out = {"threads": os.environ.get("OMP_NUM_THREADS", "default")}
    out["letterbox_numpy_ms"] = _median_ms(lambda: ref.letterbox_normalize(frame, (640, 640), swap_rb=True))
    try:
        import torch

        torch.set_num_threads(1)
        info = ref.letterbox_params(1080, 1920, 640, 640)

        def torch_letterbox():
            t = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].float()
            r = torch.nn.functional.interpolate(t, size=(info.new_h, info.new_w), mode="bilinear", align_corners=False)
            o = torch.full((1, 3, 640, 640), 114.0)
            o[:, :, info.pad_top:info.pad_top + info.new_h, info.pad_left:info.pad_left + info.new_w] = r
            return (o / 255.0).numpy()

        out["letterbox_torch_ms"] = _median_ms(torch_letterbox)
        out["letterbox_ratio_numpy_over_torch"] = out["letterbox_numpy_ms"] / out["letterbox_torch_ms"]
    except ImportError:
        out["letterbox_torch_ms"] = None
    n = len(ref.make_anchors(640, 640)[0])
    preds = np.empty((1, 84, n), dtype=np.float32)
    preds[:, :4] = rng.uniform(0.5, 6, size=(1, 4, n))
    preds[:, 4:] = rng.normal(-6.5, 1.5, size=(1, 80, n))
    dets = ref.yolo_decode_nms(preds, (640, 640))
    out["yolo_anchors"] = n
    out["yolo_candidates_above_conf"] = int((ref.yolo_decode(preds, (640, 640))[1] >= 0.25).sum())
    out["yolo_detections"] = int(len(dets[0].scores))
    out["yolo_decode_nms_ms"] = _median_ms(lambda: ref.yolo_decode_nms(preds, (640, 640)), repeat=7)
    logits = rng.normal(size=(32, 1000)).astype(np.float32)
    out["softmax_top5_32x1000_ms"] = _median_ms(lambda: ref.softmax_topk(logits, 5))
    fix = Path("/work/shared/fixtures/tegrastats/agx-orin64-jp7.2-singleline.txt")
    line = fix.read_text() if fix.is_file() else ("RAM 1004/7852MB CPU [0%@350,4%@345] GR3D_FREQ 0%@114 GPU@32C "
                                                  "VDD_IN 1876/1876 VDD_SYS_GPU 153/153")
    t = time.perf_counter()
    for _ in range(2000):
        parse_tegrastats_line(line)
    out["tegrastats_parse_us_per_line"] = (time.perf_counter() - t) / 2000 * 1e6
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
