"""TensorRT runner: the TensorRT Python API plus pycuda, timed with CUDA events.

Each ``infer`` call does, on one CUDA stream: event -> H2D copies from pinned host buffers ->
event -> enqueue -> event -> D2H copies -> event, then one synchronize. The three event intervals
are ``last_timing()``'s ``h2d_ms``, ``gpu_compute_ms`` and ``d2h_ms`` (the way trtexec splits its
"Latency" into H2D + GPU compute + D2H). Pinned (page-locked) host memory is what makes the async
copies truly asynchronous; pageable memory would make the driver stage every copy.

Two execution APIs, chosen by what the installed TensorRT has:

* 8.0-8.4: bindings (a list of device pointers in binding order) + ``execute_async_v2``;
  ``set_binding_shape`` for dynamic inputs.
* 8.5+: names: ``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3``
  (``execute_async_v2`` was removed in 10.0).

Optional: a CUDA graph of the enqueue (captured through cuda-python, since pycuda cannot capture
streams; not with DLA, where graphs are unsupported), and per-layer
times through an ``IProfiler`` (which synchronises after every layer, so phase times measured
with it attached are not representative; use it in a separate pass).

Before deserialising, the engine's sidecar manifest is compared with the installed TensorRT and
the board, so a mismatch is an :class:`EngineMismatchError` naming both sides instead of
TensorRT's "magic tag" assertion.

Tested only against test doubles of TensorRT 8.2 / 8.5 / 8.6 / 10.x / 11.x and of pycuda
(tests/fakes); never run on a board from this repository's CI. See docs/tensorrt.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from edgekit.errors import EngineMismatchError, InputError, ShapeError, require
from edgekit.graph.io import TensorSpec
from edgekit.runtime.base import Runner
from edgekit.trt.manifest import check_engine_compatible


class _Binding:
    __slots__ = ("name", "index", "is_input", "dtype", "shape", "host", "device", "nbytes")

    def __init__(self, name: str, index: int, is_input: bool, dtype, shape: Tuple[int, ...]):
        self.name, self.index, self.is_input, self.dtype, self.shape = name, index, is_input, dtype, shape
        self.host = self.device = None
        self.nbytes = 0


def make_layer_profiler(trt):
    """An ``IProfiler`` that accumulates per-layer milliseconds across calls."""

    class LayerProfiler(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: Dict[str, List[float]] = {}

        def report_layer_time(self, layer_name, ms) -> None:
            self.times.setdefault(str(layer_name), []).append(float(ms))

        def summary(self) -> List[Dict[str, float]]:
            total = sum(sum(v) for v in self.times.values()) or 1.0
            rows = [{"name": k, "calls": len(v), "total_ms": sum(v), "mean_ms": sum(v) / len(v),
                     "percentage": 100.0 * sum(v) / total} for k, v in self.times.items()]
            return sorted(rows, key=lambda r: -r["total_ms"])

    return LayerProfiler()


class _CudaGraph:
    """Capture one enqueue into a CUDA graph and replay it, through cuda-python's runtime API.

    pycuda has no stream-capture API, so graphs need ``cuda-python`` (``cuda.bindings.runtime`` or,
    in older releases, ``cuda.cudart``). Every call returns ``(error, *values)``. Written against the
    cuda-python documentation; exercised only with a fake of that module.
    """

    def __init__(self, stream_handle: int, cudart):
        self.stream, self.rt, self.exec = stream_handle, cudart, None

    @staticmethod
    def load_cudart():
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        return None

    @classmethod
    def create(cls, stream_handle: int, cudart=None) -> "Optional[_CudaGraph]":
        rt = cudart if cudart is not None else cls.load_cudart()
        return cls(stream_handle, rt) if rt is not None else None

    def _ok(self, result, what: str):
        err = result[0] if isinstance(result, tuple) else result
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")
        return result[1:] if isinstance(result, tuple) else ()

    def capture(self, enqueue) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(self.rt.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            (graph,) = self._ok(self.rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        (self.exec,) = self._ok(self.rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiateWithFlags")

    def launch(self) -> None:
        self._ok(self.rt.cudaGraphLaunch(self.exec, self.stream), "cudaGraphLaunch")


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, model, device: Optional[str] = None, cuda_graph: bool = False, profile_layers: bool = False,
                 shapes: Optional[Mapping[str, Tuple[int, ...]]] = None, dla_core: Optional[int] = None,
                 check_manifest: bool = True, trt=None, cuda=None, cudart=None, **_: object):
        super().__init__()
        self.engine_path = Path(model)
        self.device = device
        self.cuda_graph = bool(cuda_graph)
        self.profile_layers = bool(profile_layers)
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self.dla_core = dla_core
        self.check_manifest = check_manifest
        self._trt, self._cuda = trt, cuda
        self.cudart = cudart  # cuda-python runtime module (CUDA graphs); found lazily when None
        self._timing: Optional[Dict[str, float]] = None
        self.profiler = None
        self.manifest: Optional[dict] = None
        self.warnings: List[str] = []
        self._graph = None

    # ---- lifecycle ----
    def _activate(self) -> None:
        trt = self._trt or require("tensorrt", "tensorrt", "run TensorRT engines")
        cuda = self._cuda
        if cuda is None:
            cuda = require("pycuda.driver", "tensorrt", "move data to the GPU")
            require("pycuda.autoinit", "tensorrt", "create a CUDA context")
        self.trt, self.cuda = trt, cuda
        if not self.engine_path.exists():
            raise InputError(f"no such engine: {self.engine_path}", hint="build one with `edgekit build`")
        if self.engine_path.suffix.lower() == ".onnx":
            raise InputError(f"{self.engine_path} is an ONNX model, not a TensorRT engine",
                             hint="build it first: edgekit build MODEL.onnx --device NAME")
        if self.check_manifest:
            self.manifest = check_engine_compatible(self.engine_path, trt_version=str(trt.__version__),
                                                    device=self.device, gpu_sm=self._gpu_sm(cuda))
            if self.manifest is None:
                self.warnings.append(f"{self.engine_path.name} has no manifest: its TensorRT version and board "
                                     "cannot be checked before loading")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if self.dla_core is not None and hasattr(self.runtime, "DLA_core"):
            self.runtime.DLA_core = int(self.dla_core)
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(
                f"TensorRT {trt.__version__} could not deserialize {self.engine_path.name}",
                hint="the engine was probably built by another TensorRT version or for another GPU; rebuild it here")
        self.context = self.engine.create_execution_context()
        self.v3 = hasattr(self.context, "execute_async_v3") and hasattr(self.engine, "num_io_tensors")
        self.bindings = self._io_tensors()
        self.stream = cuda.Stream()
        self.events = [cuda.Event() for _ in range(4)]
        if self.profile_layers:
            self.profiler = make_layer_profiler(trt)
            self.context.profiler = self.profiler
        if self.cuda_graph and self.dla_core is not None:
            self.warnings.append("CUDA graphs do not work with the DLA: running without")
            self.cuda_graph = False
        for b in self.bindings:
            if b.is_input and b.name in self.shapes:
                self._set_input_shape(b, self.shapes[b.name])
        self._allocate()

    @staticmethod
    def _gpu_sm(cuda) -> Optional[str]:
        try:
            major, minor = cuda.Device(0).compute_capability()
            return f"{major}.{minor}"
        except Exception:  # no device query available: the SM check is skipped
            return None

    def _deactivate(self) -> None:
        for b in getattr(self, "bindings", []):
            if b.device is not None and hasattr(b.device, "free"):
                b.device.free()
            b.device = b.host = None
        self._graph = None
        self.context = self.engine = self.runtime = None

    # ---- tensors ----
    def _io_tensors(self) -> List[_Binding]:
        trt, eng = self.trt, self.engine
        out = []
        if self.v3:
            for i in range(eng.num_io_tensors):
                name = eng.get_tensor_name(i)
                is_in = eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                out.append(_Binding(name, i, is_in, np.dtype(trt.nptype(eng.get_tensor_dtype(name))),
                                    tuple(eng.get_tensor_shape(name))))
        else:
            for i in range(eng.num_bindings):
                out.append(_Binding(eng.get_binding_name(i), i, bool(eng.binding_is_input(i)),
                                    np.dtype(trt.nptype(eng.get_binding_dtype(i))), tuple(eng.get_binding_shape(i))))
        return out

    def _set_input_shape(self, b: _Binding, shape: Tuple[int, ...]) -> None:
        if len(shape) != len(b.shape) or any(d >= 0 and d != s for d, s in zip(b.shape, shape)):
            raise ShapeError(f"input '{b.name}' has shape {list(shape)} but the engine expects {list(b.shape)}")
        if self.v3:
            self.context.set_input_shape(b.name, tuple(shape))
        else:
            self.context.set_binding_shape(b.index, tuple(shape))
        self._graph = None

    def _current_shape(self, b: _Binding) -> Tuple[int, ...]:
        if self.v3:
            return tuple(self.context.get_tensor_shape(b.name))
        return tuple(self.context.get_binding_shape(b.index))

    def _allocate(self) -> None:
        for b in self.bindings:
            shape = self._current_shape(b)
            if any(d < 0 for d in shape):
                if b.is_input:
                    raise ShapeError(f"input '{b.name}' is dynamic {list(shape)}: pass shapes to the runner")
                continue
            nbytes = int(np.prod(shape)) * b.dtype.itemsize
            if b.host is None or b.host.shape != shape or b.nbytes < nbytes:
                if b.device is not None and hasattr(b.device, "free"):
                    b.device.free()
                b.host = self.cuda.pagelocked_empty(shape, b.dtype)
                b.device = self.cuda.mem_alloc(max(nbytes, 1))
                b.nbytes = nbytes
            if self.v3:
                self.context.set_tensor_address(b.name, int(b.device))
        self._graph = None

    def input_specs(self) -> List[TensorSpec]:
        return [TensorSpec(b.name, b.dtype.name, tuple(d if d >= 0 else None for d in b.shape))
                for b in self.bindings if b.is_input]

    # ---- execution ----
    def _enqueue(self) -> None:
        if self.v3:
            ok = self.context.execute_async_v3(stream_handle=self.stream.handle)
        else:
            ok = self.context.execute_async_v2(bindings=[int(b.device) for b in self.bindings],
                                               stream_handle=self.stream.handle)
        if ok is False:
            raise RuntimeError("TensorRT enqueue failed (see the TensorRT log)")

    def _launch_compute(self) -> None:
        if not self.cuda_graph:
            self._enqueue()
            return
        if self._graph is None:
            graph = _CudaGraph.create(self.stream.handle, self.cudart)
            if graph is None:
                self.warnings.append("CUDA graph disabled: pycuda cannot capture graphs and cuda-python "
                                     "(`pip install cuda-python`) is not installed")
                self.cuda_graph = False
                self._enqueue()
                return
            self._enqueue()  # one plain enqueue first: TensorRT may defer work (shape updates) to the first call
            graph.capture(self._enqueue)
            self._graph = graph
        self._graph.launch()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        inputs = [b for b in self.bindings if b.is_input]
        missing = [b.name for b in inputs if b.name not in feeds]
        if missing:
            raise ShapeError(f"missing input(s) {missing}", hint="inputs: " + ", ".join(b.name for b in inputs))
        changed = False
        for b in inputs:
            arr = feeds[b.name]
            if tuple(arr.shape) != self._current_shape(b):
                self._set_input_shape(b, tuple(arr.shape))
                changed = True
        if changed:
            self._allocate()
        for b in inputs:
            np.copyto(b.host, np.asarray(feeds[b.name]).astype(b.dtype, copy=False))
        ev = self.events
        cuda, stream = self.cuda, self.stream
        ev[0].record(stream)
        for b in inputs:
            cuda.memcpy_htod_async(b.device, b.host, stream)
        ev[1].record(stream)
        self._launch_compute()
        ev[2].record(stream)
        outputs = [b for b in self.bindings if not b.is_input]
        for b in outputs:
            cuda.memcpy_dtoh_async(b.host, b.device, stream)
        ev[3].record(stream)
        stream.synchronize()
        self._timing = {"h2d_ms": ev[1].time_since(ev[0]), "gpu_compute_ms": ev[2].time_since(ev[1]),
                        "d2h_ms": ev[3].time_since(ev[2])}
        return {b.name: np.array(b.host, copy=True) for b in outputs}

    def last_timing(self) -> Optional[Dict[str, float]]:
        return dict(self._timing) if self._timing else None

    def layer_times(self) -> List[Dict[str, float]]:
        """Per-layer times accumulated by the IProfiler (empty unless ``profile_layers=True``)."""
        return self.profiler.summary() if self.profiler is not None else []

    def describe(self) -> Dict[str, object]:
        d: Dict[str, object] = {"backend": self.name, "engine": str(self.engine_path),
                                "execution": "execute_async_v3" if getattr(self, "v3", False) else "execute_async_v2",
                                "cuda_graph": self.cuda_graph, "profile_layers": self.profile_layers}
        if getattr(self, "trt", None) is not None:
            d["tensorrt"] = str(self.trt.__version__)
        if self.manifest:
            d["manifest"] = {k: self.manifest.get(k) for k in ("tensorrt", "device", "precision", "jetpack")}
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d
