"""Pre/post-processing kernels: CUDA C sources in ``kernels/`` with NumPy references.

``edgekit.kernels.reference`` defines what each kernel computes and is edgekit's CPU path;
``edgekit.kernels.cuda`` compiles the ``.cu`` files at run time through pycuda (imported lazily:
without pycuda it raises DependencyMissingError). ``KERNELS`` lists each source file and the
``extern "C"`` entry points it must define.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

from edgekit._resources import data_dir
from edgekit.errors import InputError
from edgekit.kernels.reference import (Detections, LetterboxInfo, letterbox_normalize, letterbox_params, nms,
                                       scale_boxes, softmax, softmax_topk, yolo_decode, yolo_decode_nms)

# kernel name -> (source file in kernels/, entry points, NumPy reference)
KERNELS: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    "letterbox_normalize": ("letterbox_normalize.cu", ("letterbox_normalize_f32", "letterbox_normalize_f16"),
                            "edgekit.kernels.reference.letterbox_normalize"),
    "softmax_topk": ("softmax_topk.cu", ("softmax_topk",), "edgekit.kernels.reference.softmax_topk"),
    "yolo_decode_nms": ("yolo_decode_nms.cu", ("yolo_decode_candidates", "yolo_rank_candidates", "yolo_nms_mask",
                                               "yolo_nms_select"), "edgekit.kernels.reference.yolo_decode_nms"),
}


def kernel_source_path(name: str) -> Path:
    """The ``.cu`` file of kernel ``name``."""
    if name not in KERNELS:
        raise InputError(f"unknown kernel '{name}'", hint="one of: " + ", ".join(sorted(KERNELS)))
    return data_dir("kernels") / KERNELS[name][0]


def kernel_source(name: str) -> str:
    """The CUDA C source of kernel ``name``."""
    return kernel_source_path(name).read_text()


__all__ = ["Detections", "KERNELS", "LetterboxInfo", "kernel_source", "kernel_source_path", "letterbox_normalize",
           "letterbox_params", "nms", "scale_boxes", "softmax", "softmax_topk", "yolo_decode", "yolo_decode_nms"]
