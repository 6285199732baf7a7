"""The runner protocol shared by every backend (ONNX Runtime, TensorRT, trtexec, torch)."""

from __future__ import annotations

import abc
from typing import Dict, List, Mapping, Optional

import numpy as np

from edgekit.graph.io import TensorSpec


class Runner(abc.ABC):
    """activate / infer / deactivate, usable as a context manager.

    ``infer`` takes a name -> array mapping and returns name -> array. Runners that time on the
    device themselves (TensorRT with CUDA events, trtexec) also implement ``last_timing()`` returning
    a dict of per-phase milliseconds (``h2d_ms``, ``gpu_compute_ms``, ``d2h_ms``) for the last call.
    """

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def input_specs(self) -> List[TensorSpec]: ...

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def last_timing(self) -> Optional[Dict[str, float]]:
        return None

    def describe(self) -> Dict[str, object]:
        """What this runner is running on (provider, threads, versions): goes into reports."""
        return {"backend": self.name}
