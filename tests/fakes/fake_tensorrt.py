"""A test double of the ``tensorrt`` Python module, one shape per API generation.

``make_tensorrt("8.2.1" | "8.5.2" | "8.6.2" | "10.3.0" | "11.4.0", cuda)`` returns a module object
exposing exactly the attributes that generation has (read from ``python/src/infer/pyCore.cpp``,
``pyFoundationalTypes.cpp`` and ``pyInt8.cpp`` of each release branch), so code calling an API
that a version removed fails with AttributeError, as it would on the board:

* 8.2: ``config.max_workspace_size``, no memory pools, bindings + ``execute_async_v2`` only;
  ``create_network`` must be given the EXPLICIT_BATCH flag for the ONNX parser.
* 8.5 / 8.6: memory pools; both the binding API and the name-based tensor API + ``execute_async_v3``.
* 10.x: no ``max_workspace_size``, no binding API, no ``execute_async_v2``; EXPLICIT_BATCH exists
  but is ignored; FP16/INT8 flags and the calibrator still exist.
* 11.x: no EXPLICIT_BATCH, no ``BuilderFlag.FP16/INT8``, no ``int8_calibrator`` and no calibrator
  classes; enum values renumbered (so a stored raw int selects another member).

The "engine" it builds embeds the ONNX model and the TensorRT version; executing it runs the model
with ONNX Runtime on the fake device memory of :mod:`tests.fakes.fake_pycuda`. Deserialising an
engine from another version fails the way TensorRT does: an error logged and ``None`` returned.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Dict, List

import numpy as np

MAGIC = b"FTRT"
DLA_OPS = {"Conv", "Relu", "MaxPool", "AveragePool", "BatchNormalization", "Add", "Concat", "Sigmoid",
           "ConvTranspose", "Mul", "Clip", "QuantizeLinear", "DequantizeLinear"}


def _code(version: str) -> int:
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def make_tensorrt(version: str, cuda, num_dla_cores: int = 2) -> types.ModuleType:
    major, minor = (int(x) for x in version.split(".")[:2])
    v = (major, minor)
    gen11 = major >= 11
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt._fake_events = []  # what the fake saw, for assertions
    trt._capture = None  # set to a list while tests/fakes/fake_cudart captures a stream
    shift = 7 if gen11 else 0  # TensorRT 11 renumbered enums: raw ints from older versions mean something else

    def IntEnumOf(name, members):
        return enum.IntEnum(name, {m: i + shift for i, m in enumerate(members)})

    class ILogger:
        Severity = enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

        def __init__(self) -> None:
            pass

        def log(self, severity, msg) -> None:  # pragma: no cover - overridden
            pass

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = list(ILogger.Severity)

        def __init__(self, min_severity=None) -> None:
            self.min_severity = min_severity
            self.messages: List[str] = []

        def log(self, severity, msg) -> None:
            self.messages.append(msg)

    trt.ILogger, trt.Logger = ILogger, Logger

    ncf = ["STRONGLY_TYPED"] if gen11 else (["EXPLICIT_BATCH", "EXPLICIT_PRECISION"] if major == 8 else
                                           ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    trt.NetworkDefinitionCreationFlag = IntEnumOf("NetworkDefinitionCreationFlag", ncf)
    flags = ["GPU_FALLBACK", "REFIT", "DEBUG", "TF32", "SPARSE_WEIGHTS", "DIRECT_IO"]
    if not gen11:
        flags = ["FP16", "INT8"] + flags
    if major == 8:
        flags.append("STRICT_TYPES")
    trt.BuilderFlag = IntEnumOf("BuilderFlag", flags)
    if v >= (8, 4):
        trt.MemoryPoolType = IntEnumOf("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM"])
    trt.DeviceType = IntEnumOf("DeviceType", ["GPU", "DLA"])
    # 8.0 called the levels DEFAULT / NONE / VERBOSE; 8.2 renamed them LAYER_NAMES_ONLY / NONE / DETAILED
    trt.ProfilingVerbosity = IntEnumOf("ProfilingVerbosity", ["DEFAULT", "NONE", "VERBOSE"] if v < (8, 2)
                                       else ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL"] + (["INT64", "BF16"] if major >= 10 else [])
    trt.DataType = IntEnumOf("DataType", dtypes)
    np_of = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
             "INT64": np.int64}
    trt.nptype = lambda dt: np_of[dt.name]
    trt_of_np = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "bool": "BOOL",
                 "int64": "INT64" if major >= 10 else "INT32"}
    if v >= (8, 5):
        trt.TensorIOMode = IntEnumOf("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])

    class IProfiler:
        def __init__(self) -> None:
            pass

    trt.IProfiler = IProfiler

    if not gen11:
        class IInt8Calibrator:
            def __init__(self) -> None:
                pass

        class IInt8EntropyCalibrator2(IInt8Calibrator):
            pass

        trt.IInt8Calibrator = IInt8Calibrator
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    # ---- network / parser ----
    class ITensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class INetworkDefinition:
        def __init__(self, flags: int):
            self.flags = flags
            self.inputs: List[ITensor] = []
            self.outputs: List[ITensor] = []
            self.model = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_output(self, i):
            return self.outputs[i]

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

        def __str__(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            with open(path, "rb") as fh:
                return self.parse(fh.read())

        def parse(self, data):
            import onnx
            from edgekit.graph.io import model_input_specs, model_output_specs

            explicit = major >= 10 or (self.network.flags >> int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)) & 1
            if not explicit:
                self.errors.append(ParserError("Network must have explicit batch dimensions: create it with "
                                               "EXPLICIT_BATCH"))
                return False
            model = onnx.load_from_string(bytes(data))
            self.network.model = bytes(data)
            for s in model_input_specs(model):
                shape = [d if isinstance(d, int) and d > 0 else -1 for d in s.shape]
                self.network.inputs.append(ITensor(s.name, shape, getattr(trt.DataType, trt_of_np[s.dtype])))
            for s in model_output_specs(model):
                shape = [d if isinstance(d, int) and d > 0 else -1 for d in s.shape]
                self.network.outputs.append(ITensor(s.name, shape, getattr(trt.DataType, trt_of_np[s.dtype])))
            self.network.nodes = [(n.name or n.op_type, n.op_type) for n in model.graph.node]
            self.network.onnx = model
            return True

    trt.OnnxParser = OnnxParser

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, name):
            return self.shapes[name]

    class ITimingCache:
        def __init__(self, blob: bytes):
            self.blob = bytes(blob)
            self.hits = 0

        def serialize(self):
            return MAGIC + b"-timing-" + str(_code(version)).encode() + b":" + str(len(self.blob) + 1).encode()

    # ---- builder config: attribute set per generation ----
    config_attrs = {"flags", "default_device_type", "DLA_core", "profiling_verbosity", "profiles", "timing_cache",
                    "calibration_profile", "pool_limits", "avg_timing_iterations"}
    if major == 8:
        config_attrs.add("max_workspace_size")
    if not gen11:
        config_attrs.add("int8_calibrator")

    class IBuilderConfig:
        def __init__(self):
            object.__setattr__(self, "flags", set())
            object.__setattr__(self, "profiles", [])
            object.__setattr__(self, "pool_limits", {})
            object.__setattr__(self, "default_device_type", trt.DeviceType.GPU)
            object.__setattr__(self, "DLA_core", -1)
            object.__setattr__(self, "timing_cache", None)
            if "int8_calibrator" in config_attrs:
                object.__setattr__(self, "int8_calibrator", None)
            if "max_workspace_size" in config_attrs:
                object.__setattr__(self, "max_workspace_size", 16 << 20)

        def __setattr__(self, name, value):
            if name not in config_attrs:
                raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}' (TensorRT {version})")
            object.__setattr__(self, name, value)

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError(f"set_flag(): incompatible argument {flag!r} (raw ints are not enum members)")
            self.flags.add(flag.name)

        def get_flag(self, flag):
            return flag.name in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob):
            return ITimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            object.__setattr__(self, "timing_cache", cache)
            return True

        def get_timing_cache(self):
            return self.timing_cache

    if v >= (8, 4):
        def set_memory_pool_limit(self, pool, size):
            if not isinstance(pool, trt.MemoryPoolType):
                raise TypeError("set_memory_pool_limit(): pool must be a MemoryPoolType")
            self.pool_limits[pool.name] = int(size)

        IBuilderConfig.set_memory_pool_limit = set_memory_pool_limit
    if not gen11:
        def set_calibration_profile(self, profile):
            object.__setattr__(self, "calibration_profile", profile)

        IBuilderConfig.set_calibration_profile = set_calibration_profile

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = num_dla_cores

        def create_network(self, flags=0):
            if gen11 and flags not in (0, 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)):
                raise ValueError(f"create_network(): unknown flags {flags} for TensorRT {version}")
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def _log(self, sev, msg):
            self.logger.log(getattr(ILogger.Severity, sev), msg)

        def build_serialized_network(self, network, config):
            trt._fake_events.append(("build", sorted(config.flags)))
            dyn = [t.name for t in network.inputs if any(d < 0 for d in t.shape)]
            profiled = set()
            for p in config.profiles:
                profiled |= set(p.shapes)
            if dyn and not set(dyn) <= profiled:
                self._log("ERROR", "4: [network.cpp::validate::2997] Error Code 4: Internal Error (Network has dynamic "
                          "or shape inputs, but no optimization profile has been defined.)")
                return None
            if "INT8" in config.flags and getattr(config, "int8_calibrator", None) is not None:
                cal = config.int8_calibrator
                cache = cal.read_calibration_cache()
                if cache is None:
                    names = [t.name for t in network.inputs]
                    batches = 0
                    while True:
                        ptrs = cal.get_batch(names)
                        if ptrs is None:
                            break
                        assert len(ptrs) == len(names) and all(int(p) in cuda.memory for p in ptrs)
                        batches += 1
                    trt._fake_events.append(("calibrated", batches, cal.get_batch_size()))
                    body = "".join(f"{t.name}: 3c010a14\n" for t in network.inputs)
                    cal.write_calibration_cache(f"TRT-{_code(version)}-EntropyCalibration2\n{body}".encode())
                else:
                    trt._fake_events.append(("calibration-cache-read", len(cache)))
            if config.default_device_type == trt.DeviceType.DLA:
                for name, op in network.nodes:
                    if op not in DLA_OPS:
                        if "GPU_FALLBACK" in config.flags:
                            self._log("WARNING", f"Layer '{name}' ({op.upper()}): Unsupported on DLA. "
                                                 "Switching this layer's device type to GPU.")
                        else:
                            self._log("ERROR", f"Layer '{name}' ({op.upper()}): Unsupported on DLA and GPU "
                                               "fallback is not enabled.")
                            return None
            if "SPARSE_WEIGHTS" in config.flags:
                eligible = [name for name, op in network.nodes if op in ("Conv", "Gemm", "MatMul")
                            and _is_24(network.onnx, name)]
                if eligible:
                    self._log("INFO", "(Sparsity) Layers eligible for sparse math: " + ", ".join(eligible))
                    self._log("INFO", "(Sparsity) TRT inference plan picked sparse implementation for layers: "
                              + ", ".join(eligible))
            if config.timing_cache is None:
                config.set_timing_cache(ITimingCache(b""), False)
            header = {"version": version, "inputs": [(t.name, list(t.shape), t.dtype.name) for t in network.inputs],
                      "outputs": [(t.name, list(t.shape), t.dtype.name) for t in network.outputs],
                      "nodes": [n for n, _ in network.nodes]}
            hb = json.dumps(header).encode()
            return MAGIC + _code(version).to_bytes(4, "little") + len(hb).to_bytes(4, "little") + hb + network.model

    trt.Builder = Builder

    # ---- runtime ----
    class ICudaEngine:
        def __init__(self, header, model_bytes):
            self.header = header
            self.model_bytes = model_bytes
            self.io = [(n, s, d, True) for n, s, d in header["inputs"]] + [(n, s, d, False) for n, s, d in header["outputs"]]
            self.names = [x[0] for x in self.io]

        def create_execution_context(self):
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self.shapes = {n: tuple(s) for n, s, _, _ in engine.io}
            self.addresses: Dict[str, int] = {}
            self.profiler = None
            self._sess = None
            self._resolve_outputs()

        def _session(self):
            if self._sess is None:
                import onnxruntime as ort

                self._sess = ort.InferenceSession(self.engine.model_bytes, providers=["CPUExecutionProvider"])
            return self._sess

        def _resolve_outputs(self):
            if any(d < 0 for n, s, _, inp in self.engine.io if inp for d in self.shapes[n]):
                return
            feeds = {n: np.zeros(self.shapes[n], dtype=np_of[d]) for n, s, d, inp in self.engine.io if inp}
            outs = self._session().run(None, feeds)
            for (n, _, _, inp), o in zip([x for x in self.engine.io if not x[3]], outs):
                self.shapes[n] = tuple(o.shape)

        def _run(self, ptr_of):
            feeds = {}
            for n, _, d, inp in self.engine.io:
                if inp:
                    shape = self.shapes[n]
                    if any(x < 0 for x in shape):
                        raise RuntimeError(f"input '{n}' shape not set")
                    dt = np.dtype(np_of[d])
                    feeds[n] = cuda.read(ptr_of(n), int(np.prod(shape)) * dt.itemsize, dt, shape)
            sess = self._session()
            outs = sess.run(None, feeds)
            for (n, _, _, inp), o in zip([x for x in self.engine.io if not x[3]], outs):
                cuda.write(ptr_of(n), o)
            if self.profiler is not None:
                for name in self.engine.header["nodes"]:
                    self.profiler.report_layer_time(name, 0.01)
            return True

    def _check_stream(stream_handle):
        if not isinstance(stream_handle, int):
            raise TypeError("stream_handle must be an int (stream.handle)")

    if major == 8:
        def get_binding_name(self, i):
            return self.io[i][0]

        def binding_is_input(self, i):
            return self.io[i][3]

        def get_binding_shape(self, i):
            return tuple(self.io[i][1])

        def get_binding_dtype(self, i):
            return getattr(trt.DataType, self.io[i][2])

        def get_binding_index(self, name):
            return self.names.index(name)

        ICudaEngine.num_bindings = property(lambda self: len(self.io))
        ICudaEngine.get_binding_name = get_binding_name
        ICudaEngine.binding_is_input = binding_is_input
        ICudaEngine.get_binding_shape = get_binding_shape
        ICudaEngine.get_binding_dtype = get_binding_dtype
        ICudaEngine.get_binding_index = get_binding_index

        def set_binding_shape(self, i, dims):
            self.shapes[self.engine.io[i][0]] = tuple(dims)
            self._resolve_outputs()
            return True

        def ctx_get_binding_shape(self, i):
            return self.shapes[self.engine.io[i][0]]

        def execute_async_v2(self, bindings, stream_handle):
            _check_stream(stream_handle)
            trt._fake_events.append(("execute_async_v2",))
            names = self.engine.names
            return self._run(lambda n: int(bindings[names.index(n)]))

        IExecutionContext.set_binding_shape = set_binding_shape
        IExecutionContext.get_binding_shape = ctx_get_binding_shape
        IExecutionContext.execute_async_v2 = execute_async_v2

    if v >= (8, 5):
        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if self.io[self.names.index(name)][3] else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return tuple(self.io[self.names.index(name)][1])

        def get_tensor_dtype(self, name):
            return getattr(trt.DataType, self.io[self.names.index(name)][2])

        ICudaEngine.num_io_tensors = property(lambda self: len(self.io))
        ICudaEngine.get_tensor_name = get_tensor_name
        ICudaEngine.get_tensor_mode = get_tensor_mode
        ICudaEngine.get_tensor_shape = get_tensor_shape
        ICudaEngine.get_tensor_dtype = get_tensor_dtype

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            self._resolve_outputs()
            return True

        def ctx_get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, ptr):
            if not isinstance(ptr, int):
                raise TypeError("set_tensor_address(): ptr must be an int")
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            _check_stream(stream_handle)
            missing = [n for n in self.engine.names if n not in self.addresses]
            if missing:
                raise RuntimeError(f"tensor addresses not set: {missing}")
            trt._fake_events.append(("execute_async_v3",))
            addresses = dict(self.addresses)
            work = lambda: self._run(lambda n: addresses[n])  # noqa: E731
            if trt._capture is not None:  # a fake cuda-python stream capture is recording
                trt._capture.append(work)
                return True
            return work()

        IExecutionContext.set_input_shape = set_input_shape
        IExecutionContext.get_tensor_shape = ctx_get_tensor_shape
        IExecutionContext.set_tensor_address = set_tensor_address
        IExecutionContext.execute_async_v3 = execute_async_v3

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, blob):
            blob = bytes(blob)
            if blob[:4] != MAGIC:
                self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: "
                                "Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
                return None
            code = int.from_bytes(blob[4:8], "little")
            if code != _code(version):
                self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: "
                                "Serialization (Serialization assertion stdVersionRead == serializationVersion failed."
                                "Version tag does not match.)")
                return None
            n = int.from_bytes(blob[8:12], "little")
            header = json.loads(blob[12:12 + n])
            return ICudaEngine(header, blob[12 + n:])

    trt.Runtime = Runtime
    return trt


def _is_24(model, node_name) -> bool:
    """Whether a node's weight follows TensorRT's 2:4 rule along input channels."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if (n.name or n.op_type) == node_name and len(n.input) > 1 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            if w.ndim < 2 or w.shape[1] % 4:
                return False
            k, c = w.shape[:2]
            g = np.moveaxis(w.reshape(k, c // 4, 4, -1), 2, -1)
            return bool(((g == 0).sum(-1) >= 2).all())
    return False


def install(monkeypatch, version: str, num_dla_cores: int = 2):
    """Put a fake ``tensorrt`` and ``pycuda`` into sys.modules for one test; return (trt, fake cuda)."""
    import sys

    from .fake_pycuda import FakeCuda

    fc = FakeCuda()
    trt = make_tensorrt(version, fc, num_dla_cores=num_dla_cores)
    driver = fc.as_module()
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    autoinit = types.ModuleType("pycuda.autoinit")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", autoinit)
    return trt, fc
