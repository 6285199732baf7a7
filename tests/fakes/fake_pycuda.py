"""A test double for ``pycuda.driver``: device memory is a dict of NumPy byte buffers.

Only the calls edgekit makes exist (mem_alloc, memcpy_htod[_async], memcpy_dtoh[_async],
pagelocked_empty, Stream, Event, Device). Pointers are integers, as with pycuda's
``DeviceAllocation.__int__``, so code that hands ``int(ptr)`` to TensorRT works unchanged.
"""

from __future__ import annotations

import itertools
import time
import types
from typing import Dict

import numpy as np


class FakeCuda:
    def __init__(self, device_name: str = "Orin (fake)", cc=(8, 7)):
        self.memory: Dict[int, np.ndarray] = {}
        self._next = itertools.count(0x1000, 0x1000)
        self.device_name = device_name
        self.cc = cc
        self.calls = []
        cuda = self

        class DeviceAllocation:
            def __init__(self, nbytes: int):
                self.ptr = next(cuda._next)
                cuda.memory[self.ptr] = np.zeros(int(nbytes), dtype=np.uint8)
                self.nbytes = int(nbytes)

            def __int__(self) -> int:
                return self.ptr

            def free(self) -> None:
                cuda.memory.pop(self.ptr, None)

        class Stream:
            def __init__(self, flags: int = 0):
                self.handle = next(cuda._next)

            def synchronize(self) -> None:
                cuda.calls.append("stream.synchronize")

        class Event:
            def __init__(self, flags: int = 0):
                self.t = None

            def record(self, stream=None) -> "Event":
                self.t = time.perf_counter()
                return self

            def synchronize(self) -> None:
                pass

            def time_since(self, other: "Event") -> float:
                return (self.t - other.t) * 1000.0

        class Device:
            def __init__(self, index: int):
                self.index = index

            def name(self) -> str:
                return cuda.device_name

            def compute_capability(self):
                return cuda.cc

        self.DeviceAllocation = DeviceAllocation
        self.Stream = Stream
        self.Event = Event
        self.Device = Device

    # -- module-level functions of pycuda.driver --
    def mem_alloc(self, nbytes: int):
        return self.DeviceAllocation(nbytes)

    def _dst(self, ptr) -> np.ndarray:
        return self.memory[int(ptr)]

    def memcpy_htod(self, dest, src) -> None:
        src = np.ascontiguousarray(src)
        raw = src.view(np.uint8).reshape(-1)
        self._dst(dest)[: raw.size] = raw
        self.calls.append("htod")

    def memcpy_dtoh(self, dest, src) -> None:
        buf = self._dst(src)
        view = dest.view(np.uint8).reshape(-1)
        view[:] = buf[: view.size]
        self.calls.append("dtoh")

    def memcpy_htod_async(self, dest, src, stream=None) -> None:
        assert stream is not None, "async copies need a stream"
        self.memcpy_htod(dest, src)

    def memcpy_dtoh_async(self, dest, src, stream=None) -> None:
        assert stream is not None, "async copies need a stream"
        self.memcpy_dtoh(dest, src)

    def pagelocked_empty(self, shape, dtype):
        self.calls.append("pagelocked_empty")
        return np.zeros(shape, dtype=dtype)

    def read(self, ptr, nbytes: int, dtype, shape) -> np.ndarray:
        return self._dst(ptr)[:nbytes].view(dtype).reshape(shape).copy()

    def write(self, ptr, array: np.ndarray) -> None:
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self._dst(ptr)[: raw.size] = raw

    def as_module(self) -> types.ModuleType:
        mod = types.ModuleType("pycuda.driver")
        for name in ("mem_alloc", "memcpy_htod", "memcpy_dtoh", "memcpy_htod_async", "memcpy_dtoh_async",
                     "pagelocked_empty"):
            setattr(mod, name, getattr(self, name))
        mod.Stream, mod.Event, mod.Device, mod.DeviceAllocation = self.Stream, self.Event, self.Device, self.DeviceAllocation
        mod._fake = self
        return mod
