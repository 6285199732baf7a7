"""Accuracy of an ONNX model on labelled data (top-1 / top-5), and, against a reference model, how
faithful it is (top-1 agreement, SQNR of every output): what ``edgekit eval`` prints and what every
candidate of ``edgekit optimize`` is scored with. Runs on ONNX Runtime CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from edgekit.errors import ShapeError
from edgekit.graph.io import model_input_specs, model_output_specs
from edgekit.optimize.data import LabelledData, check_data, load_data
from edgekit.quantize.fidelity import sqnr_db
from edgekit.runtime.onnxruntime import OnnxRuntimeRunner


@dataclass
class EvalReport:
    """Scores of one model on one data set; None where the data or the model cannot give one."""

    samples: int
    source: str
    top1: Optional[float] = None
    top5: Optional[float] = None
    classes: Optional[int] = None
    reference_top1: Optional[float] = None  # the reference model's own accuracy (labels given)
    agreement: Optional[float] = None       # top-1 agreement with the reference
    sqnr_db: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def fixed_batch(model) -> int:
    """The static batch of the model's first input, 0 when the batch axis is dynamic."""
    d = model_input_specs(model)[0].shape[0]
    return d if isinstance(d, int) and d > 0 else 0


def predict(model, data: LabelledData, batch_size: int = 64, threads: Optional[int] = None,
            progress: Optional[Callable[..., None]] = None) -> Dict[str, np.ndarray]:
    """Every output of ``model`` over all samples, concatenated along the first axis."""
    bs = fixed_batch(model) or max(1, batch_size)
    n = data.num_samples
    if fixed_batch(model) and n % bs:
        raise ShapeError(f"the model has a fixed batch of {bs} and {n} samples do not divide into it",
                         hint="re-export with --dynamic-batch, or pass a sample count that is a multiple")
    outs: Dict[str, List[np.ndarray]] = {}
    with OnnxRuntimeRunner(model, threads=threads) as runner:
        for s in range(0, n, bs):
            for k, v in runner.infer(data.take(s, min(n, s + bs))).items():
                outs.setdefault(k, []).append(v)
            if progress is not None:
                progress(advance=min(bs, n - s))
    return {k: np.concatenate(v) for k, v in outs.items()}


def logits_of(outputs: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
    """The classifier output: the first output shaped [N, classes]."""
    for v in outputs.values():
        if v.ndim == 2 and v.shape[1] > 1:
            return v
    return None


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def evaluate(model, data: LabelledData, reference=None, batch_size: int = 64, threads: Optional[int] = None,
             progress: Optional[Callable[..., None]] = None) -> EvalReport:
    """Score ``model`` (ModelProto) on checked ``data``; with ``reference`` (ModelProto) also the
    agreement with it and the SQNR of each output. ``progress(advance=n)`` per batch (samples)."""
    t0 = time.perf_counter()
    rep = EvalReport(samples=data.num_samples, source=data.source)
    outs = predict(model, data, batch_size, threads, progress)
    logits = logits_of(outs)
    if logits is not None:
        rep.classes = int(logits.shape[1])
    if data.labels is not None:
        if logits is None:
            rep.notes.append("no output shaped [N, classes]: top-1/top-5 need a classifier")
        else:
            rep.top1 = topk(logits, data.labels, 1)
            rep.top5 = topk(logits, data.labels, 5) if logits.shape[1] > 5 else None
    if reference is not None:
        ref = predict(reference, data, batch_size, threads, progress)
        for k in outs:
            if k in ref and ref[k].shape == outs[k].shape:
                s = sqnr_db(ref[k], outs[k])
                rep.sqnr_db[k] = round(s, 2) if math.isfinite(s) else s
            else:
                rep.notes.append(f"output '{k}' has no same-shaped output in the reference: no SQNR")
        ref_logits = logits_of(ref)
        if logits is not None and ref_logits is not None and ref_logits.shape == logits.shape:
            rep.agreement = float(np.mean(ref_logits.argmax(1) == logits.argmax(1)))
            if data.labels is not None:
                rep.reference_top1 = topk(ref_logits, data.labels, 1)
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def num_classes(model) -> Optional[int]:
    """Width of the model's first 2-D output (classes), None when it is not a [N, C] output or not static."""
    for spec in model_output_specs(model):
        if len(spec.shape) == 2:
            c = spec.shape[1]
            return c if isinstance(c, int) and c > 0 else None
    return None


def prepare(model, source, x_name: Optional[str] = None, y_name: Optional[str] = None,
            limit: Optional[int] = None) -> LabelledData:
    """Read ``source`` and check it against ``model`` (shapes, dtypes, label range): the data every
    evaluation uses, or one ShapeError/InputError before any work starts."""
    specs = model_input_specs(model)
    data = load_data(source, [s.name for s in specs], x_name=x_name, y_name=y_name, limit=limit)
    checked = check_data(data, specs, num_classes(model))
    if checked.labels is not None and num_classes(model) is None:  # dynamic width: ask the model once
        logits = logits_of(predict(model, checked.head(fixed_batch(model) or 1)))
        if logits is None:
            raise ShapeError("the data has labels but the model has no output shaped [N, classes]")
        checked = check_data(data, specs, int(logits.shape[1]))
    return checked
