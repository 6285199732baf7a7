"""A test double of cuda-python's runtime module, just the stream-capture / graph calls.

While a capture is open, the fake TensorRT's ``execute_async_v3`` records its work instead of
running it; ``cudaGraphLaunch`` replays the recorded work. Every call returns ``(error, *values)``
like cuda-python does.
"""

from __future__ import annotations

import enum


class FakeCudart:
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorStreamCaptureInvalidated = 901

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1
        cudaStreamCaptureModeRelaxed = 2

    def __init__(self, trt):
        self.trt = trt
        self.calls = []

    def cudaStreamBeginCapture(self, stream, mode):
        assert isinstance(stream, int) and isinstance(mode, self.cudaStreamCaptureMode)
        self.calls.append("begin")
        self.trt._capture = []
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append("end")
        graph, self.trt._capture = self.trt._capture, None
        return (self.cudaError_t.cudaSuccess, graph)

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        self.calls.append("instantiate")
        return (self.cudaError_t.cudaSuccess, list(graph))

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append("launch")
        for work in graph_exec:
            work()
        return (self.cudaError_t.cudaSuccess,)
