"""Runners own the device lifecycle: ``activate()`` loads the model onto its device,
``infer(feeds)`` runs one inference, ``deactivate()`` releases everything. Nothing touches a GPU or
imports TensorRT at import time.

``runner_class(backend)`` maps a backend name to its runner class lazily. :mod:`.verify` checks
rewritten models with an ONNX Runtime run.
"""

from __future__ import annotations

import importlib
from typing import Dict, Tuple

from edgekit.errors import InputError
from edgekit.runtime.base import Runner

# backend name -> (module, class). Modules are imported only when the backend is used.
BACKENDS: Dict[str, Tuple[str, str]] = {
    "onnxruntime": ("edgekit.runtime.onnxruntime", "OnnxRuntimeRunner"),
    "tensorrt": ("edgekit.runtime.tensorrt", "TensorRTRunner"),
    "trtexec": ("edgekit.runtime.trtexec", "TrtexecRunner"),
}


def runner_class(backend: str):
    """The runner class of ``backend``, importing its module only now."""
    try:
        module, cls = BACKENDS[backend]
    except KeyError:
        raise InputError(f"unknown backend '{backend}'", hint="choose one of: " + ", ".join(sorted(BACKENDS))) from None
    return getattr(importlib.import_module(module), cls)


__all__ = ["BACKENDS", "Runner", "runner_class"]
