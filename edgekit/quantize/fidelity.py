"""How faithful an INT8 model is to its float original: SQNR and top-1 agreement.

Shared by both targets of :mod:`edgekit.quantize.ptq` (the held-out fidelity report) and by the CPU
sensitivity pass in :mod:`edgekit.quantize.cpu`, which scores candidate models with ``sqnr_db``.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgekit.quantize.calibrate import batches
from edgekit.runtime.onnxruntime import OnnxRuntimeRunner


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10*log10(sum ref^2 / sum (ref-test)^2), in dB."""
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    sig = float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    if sig == 0:
        return float("-inf")
    return 10.0 * math.log10(sig / noise)


def centred_sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """SQNR of what varies with the input: the float model's per-element mean over the samples (axis 0)
    is taken out of both before :func:`sqnr_db`.

    A constant part of the outputs (padded classes given a huge bias, a large logit offset) is signal
    that quantization cannot touch; left in, it inflates the ratio (99 dB printed beside a 95 %
    top-1 agreement). With one sample there is nothing to centre on and the plain SQNR is returned.
    """
    if ref.ndim == 0 or ref.shape[0] < 2:
        return sqnr_db(ref, test)
    mu = ref.astype(np.float64).mean(axis=0, keepdims=True)
    return sqnr_db(ref - mu, test.astype(np.float64) - mu)


def fidelity(float_model, quant_model, data, indices: Tuple[int, int], batch_size: int = 8,
             threads: Optional[int] = None) -> Dict[str, object]:
    """Top-1 agreement (outputs shaped [N, classes]) and per-output SQNR (:func:`centred_sqnr_db`) of the
    INT8 vs the float model."""
    lo, hi = indices
    outs: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]] = {}
    with OnnxRuntimeRunner(float_model, threads=threads) as fr, OnnxRuntimeRunner(quant_model, threads=threads) as qr:
        for s, e in batches(hi - lo, batch_size):
            feed = data.take(lo + s, lo + e)
            a, b = fr.infer(feed), qr.infer(feed)
            for k in a:
                outs.setdefault(k, ([], []))
                outs[k][0].append(a[k])
                outs[k][1].append(b[k])
    res: Dict[str, object] = {"samples": hi - lo, "top1_agreement": None, "top1_per_output": {}, "sqnr_db": {},
                              "sqnr_note": "SQNR of the outputs' variation across the samples (the float "
                                           "model's per-element mean removed): constant offsets cannot inflate it"}
    for k, (fa, qa) in outs.items():
        f, q = np.concatenate(fa), np.concatenate(qa)
        s = centred_sqnr_db(f, q)
        res["sqnr_db"][k] = round(s, 2) if math.isfinite(s) else s
        if f.ndim == 2 and f.shape[1] > 1:
            agree = float(np.mean(f.argmax(1) == q.argmax(1)))
            res["top1_per_output"][k] = agree
            if res["top1_agreement"] is None:
                res["top1_agreement"] = agree
    return res
