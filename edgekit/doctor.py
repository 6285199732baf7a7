"""What is available on this machine, and how to install what is missing (`edgekit doctor`): Python
packages, TensorRT and trtexec, the CUDA device, and on a Jetson the board and its power state."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from importlib.metadata import PackageNotFoundError, version
from typing import Dict, List, Optional

from edgekit.bench.telemetry import read_board_state
from edgekit.jetson import detect_board

TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False

    def to_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


@dataclass
class DoctorReport:
    checks: List[Check] = field(default_factory=list)
    board: Optional[Dict[str, object]] = None
    board_state: Optional[Dict[str, object]] = None
    python: str = platform.python_version()
    machine: str = platform.machine()

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.required)

    def to_dict(self) -> Dict[str, object]:
        return {"ok": self.ok, "python": self.python, "machine": self.machine,
                "checks": [c.to_dict() for c in self.checks], "board": self.board, "board_state": self.board_state}


def _version_of(module: str) -> Optional[str]:
    """Version of an installed module without importing heavy packages when metadata suffices."""
    if importlib.util.find_spec(module) is None:
        return None
    dist = {"onnxruntime": "onnxruntime", "onnx_ir": "onnx-ir", "pycuda": "pycuda", "tensorrt": "tensorrt"}
    for name in (dist.get(module, module), module.replace("_", "-")):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception as exc:  # a module that is present but broken (e.g. TensorRT without libnvinfer)
        return f"present but fails to import: {type(exc).__name__}: {str(exc)[:80]}"


def find_trtexec() -> Optional[str]:
    found = shutil.which("trtexec")
    if found:
        return found
    for p in TRTEXEC_PATHS:
        if os.access(p, os.X_OK):
            return p
    return None


def run_doctor(root: str = "/") -> DoctorReport:
    rep = DoctorReport()
    add = rep.checks.append
    for mod, extra, required in (("onnx", None, True), ("onnxruntime", None, True), ("numpy", None, True),
                                 ("typer", None, True), ("rich", None, True), ("onnx_ir", None, False)):
        v = _version_of(mod)
        add(Check(mod, v is not None, v or "missing", "" if v else f"pip install {mod.replace('_', '-')}", required))
    v = _version_of("onnxruntime")
    if v and not v.startswith("present"):
        import onnxruntime as ort  # lazy: only when it is installed and imports

        provs = ort.get_available_providers()
        add(Check("onnxruntime providers", True, ", ".join(provs)))
    v = _version_of("torch")
    add(Check("torch", v is not None, v or "missing (needed by export and torch-level pruning/QAT)",
              "" if v else "pip install 'edgekit[torch]'  (pin the CPU wheel with a constraints file)"))
    v = _version_of("tensorrt")
    add(Check("tensorrt (Python API)", v is not None and not v.startswith("present"), v or "missing",
              "" if v else "on a Jetson: sudo apt install python3-libnvinfer (ships with JetPack); "
                           "on x86: pip install 'edgekit[tensorrt]'"))
    trtexec = find_trtexec()
    add(Check("trtexec", trtexec is not None, trtexec or "not on PATH or in /usr/src/tensorrt/bin",
              "" if trtexec else "ships with TensorRT (JetPack: /usr/src/tensorrt/bin/trtexec)"))
    v = _version_of("pycuda")
    add(Check("pycuda", v is not None and not v.startswith("present"), v or "missing",
              "" if v else "pip install 'edgekit[tensorrt]' (needs the CUDA toolkit headers to build)"))
    nvsmi = shutil.which("nvidia-smi")
    cuda_dev = Path(root, "dev/nvhost-ctrl-gpu").exists() or Path(root, "dev/nvidia0").exists()
    add(Check("CUDA device", cuda_dev, "found" if cuda_dev else "none (CPU only: ONNX Runtime is the runtime here)",
              "" if cuda_dev else "TensorRT builds/profiling need a Jetson or an NVIDIA GPU"))
    nvcc = shutil.which("nvcc") or (("/usr/local/cuda/bin/nvcc") if os.access("/usr/local/cuda/bin/nvcc", os.X_OK)
                                    else None)
    add(Check("nvcc", nvcc is not None, nvcc or "missing (only needed to pre-compile kernels/)"))
    if nvsmi:
        add(Check("nvidia-smi", True, nvsmi))
    v = _version_of("matplotlib")
    add(Check("matplotlib", v is not None, v or "missing (profile --plot)",
              "" if v else "pip install 'edgekit[plot]'"))
    try:
        board = detect_board(root)
        rep.board = board.to_dict() if board else None
    except Exception as exc:  # detection is informative; report, don't crash
        rep.board = {"error": f"{type(exc).__name__}: {exc}"}
    if rep.board and "error" not in rep.board:
        add(Check("Jetson board", True, f"{rep.board.get('model')} (L4T {rep.board.get('l4t')}, "
                                       f"JetPack {rep.board.get('jetpack')}, profile {rep.board.get('profile')})"))
        for tool in ("tegrastats", "nvpmodel", "jetson_clocks"):
            path = shutil.which(tool)
            add(Check(tool, path is not None, path or "missing", "" if path else "part of L4T: check your JetPack"))
        try:
            rep.board_state = read_board_state()
        except Exception as exc:
            rep.board_state = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        add(Check("Jetson board", False, "not a Jetson (no /etc/nv_tegra_release)",
                  "build engines on the board: copy a bundle made by `edgekit deploy`"))
    return rep
