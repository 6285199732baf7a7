"""ONNX Runtime: the embedded default (CPU execution provider).

``OnnxRuntimeRunner`` is the runner behind ``--backend onnxruntime``; ``ort_session`` is the one
place every other stage (calibration, verification, obspa statistics, accuracy) opens a raw
``onnxruntime.InferenceSession``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from edgekit.errors import InputError, ModelLoadError, ShapeError
from edgekit.graph.io import TensorSpec
from edgekit.runtime.base import Runner

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
}


_LEVELS = ("disable", "basic", "extended", "all")


def ort_session(model, *, intra_threads: Optional[int] = None, inter_threads: Optional[int] = None,
                log_level: int = 3, optimization: Optional[str] = None, providers: Optional[Sequence[str]] = None):
    """An ``onnxruntime.InferenceSession`` for ``model`` (ModelProto, serialised bytes or a path).

    ``intra_threads`` / ``inter_threads``: thread pools (None or 0: ONNX Runtime's default);
    ``log_level``: ORT's severity threshold (3: errors only, 4: fatal only, failures still raise);
    ``optimization``: one of disable / basic / extended / all (None: ORT's default); providers
    default to the CPU execution provider. ORT's own exceptions propagate: callers turn them into
    the error their stage reports.
    """
    import onnxruntime as ort  # lazy: keeps `edgekit --help` and non-ORT stages light

    so = ort.SessionOptions()
    if intra_threads:
        so.intra_op_num_threads = int(intra_threads)
    if inter_threads:
        so.inter_op_num_threads = int(inter_threads)
    so.log_severity_level = log_level
    if optimization is not None:
        if optimization not in _LEVELS:
            raise InputError(f"unknown ONNX Runtime optimization level {optimization!r}", hint=", ".join(_LEVELS))
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=so, providers=list(providers or ["CPUExecutionProvider"]))


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: Union[str, Path, bytes, "object"], threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, optimization: str = "all"):
        super().__init__()
        self.model = model
        self.threads = threads
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.optimization = optimization
        self.session = None
        self._output_names: List[str] = []

    def _activate(self) -> None:
        try:
            self.session = ort_session(self.model, intra_threads=self.threads,
                                       inter_threads=1 if self.threads else None,
                                       optimization=self.optimization, providers=self.providers)
        except InputError:
            raise
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelLoadError(f"ONNX Runtime could not load the model: {str(exc).splitlines()[0][:300]}",
                                 hint="run `onnx.checker` on it, or re-export with a supported opset") from exc
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        self.session = None

    def input_specs(self) -> List[TensorSpec]:
        assert self.session is not None, "activate() first"
        specs = []
        for i in self.session.get_inputs():
            shape = tuple(d if isinstance(d, int) else (d or None) for d in i.shape)
            specs.append(TensorSpec(i.name, _ORT_TYPES.get(i.type, "float32"), shape))
        return specs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outs = self.session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, outs))

    def run_raw(self, feeds: Mapping[str, np.ndarray]):
        """The bare ``session.run`` call with no dict building: what the harness times."""
        return self.session.run(self._output_names, feeds)

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Validate names, dtypes and static dims before timing anything."""
        specs = {s.name: s for s in self.input_specs()}
        missing = set(specs) - set(feeds)
        extra = set(feeds) - set(specs)
        if missing or extra:
            raise ShapeError(f"inputs do not match the model: missing {sorted(missing)}, unexpected {sorted(extra)}",
                             hint="model inputs: " + ", ".join(f"{s.name}{list(s.shape)}" for s in specs.values()))
        for name, arr in feeds.items():
            spec = specs[name]
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d > 0 and d != a for d, a in zip(spec.shape, arr.shape)
            ):
                raise ShapeError(f"input '{name}' has shape {list(arr.shape)} but the model expects {list(spec.shape)}",
                                 hint="pass --batch or an input file that matches the model")
            if np.dtype(spec.dtype) != arr.dtype:
                raise ShapeError(f"input '{name}' has dtype {arr.dtype} but the model expects {spec.dtype}")

    def describe(self) -> Dict[str, object]:
        import onnxruntime as ort  # lazy: see ort_session

        return {"backend": self.name, "onnxruntime": ort.__version__, "providers": self.providers,
                "threads": self.threads or "default"}
