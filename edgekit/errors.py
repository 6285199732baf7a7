"""Typed errors.

The library raises these and never prints. ``EdgekitError`` is a *user* error: something about the
input, the environment or the request is wrong, and the message plus hint say what to do. The CLI
renders it as one line (exit code 1, no traceback unless ``EDGEKIT_DEBUG=1``). Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
from typing import Optional


class EdgekitError(Exception):
    """A user-facing error: a message, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, the CLI adds the hint on its own line
        return self.message

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class InputError(EdgekitError):
    """A file or argument given by the user is missing, malformed or of the wrong kind."""


class ModelLoadError(InputError):
    """A model file could not be read as ONNX (not ONNX, truncated, missing external data)."""


class ShapeError(InputError):
    """An input shape or an array does not fit the model."""


class UnknownDeviceError(InputError):
    """A device name matches no profile."""


class UnsupportedError(EdgekitError):
    """The request is valid but edgekit (or the target) does not support it."""


class UnsupportedOpError(UnsupportedError):
    """An operator that a pass does not know how to handle."""


class DependencyMissingError(EdgekitError):
    """An optional dependency (torch, tensorrt, pycuda, matplotlib, ...) is not installed."""

    def __init__(self, package: str, purpose: str, install: Optional[str] = None):
        hint = install or f"pip install 'edgekit[{package}]'"
        super().__init__(f"{package} is needed to {purpose} but is not installed", hint=f"install it: {hint}")
        self.package = package


class ExportError(EdgekitError):
    """PyTorch -> ONNX export failed with every exporter."""


class ParityError(EdgekitError):
    """The exported/rewritten model disagrees numerically with its reference."""


class TorchMappingError(UnsupportedError):
    """A pruned ONNX tensor cannot be traced back to a tensor of the PyTorch module."""


class EngineMismatchError(EdgekitError):
    """An engine (or calibration cache) was built for another TensorRT version or board."""


class CalibrationError(InputError):
    """Calibration data is unusable (wrong shape/dtype, empty folder, ...)."""


class BuildError(EdgekitError):
    """An engine build failed (TensorRT or trtexec reported an error)."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise :class:`DependencyMissingError` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through tests that hide modules
        raise DependencyMissingError(extra, purpose) from exc
