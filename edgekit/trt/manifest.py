"""The sidecar manifest ``OUT.engine.json`` and the compatibility check before deserialising.

A TensorRT engine only loads on the TensorRT version (and GPU) that built it; loading it elsewhere
fails deep inside TensorRT with an assertion about a "magic tag" or a serialisation version that
names neither side. The manifest lets edgekit say plainly *which* version and board built the
engine and which are present, before TensorRT touches the bytes.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Dict, Optional, Union

from edgekit import __version__
from edgekit.errors import EngineMismatchError, InputError
from edgekit.graph.io import atomic_output
from edgekit.trt.versions import version_tag

MANIFEST_SCHEMA = 1


def manifest_path(engine: Union[str, Path]) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def make_manifest(plan, trt_version: Optional[str] = None, gpu_name: str = "", gpu_sm: str = "",
                  builder: str = "", extra: Optional[dict] = None) -> dict:
    """The manifest dict for a plan; ``trt_version`` is the version that actually built it."""
    return {
        "schema": MANIFEST_SCHEMA,
        "edgekit": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engine": Path(plan.output).name,
        "tensorrt": trt_version or plan.trt_version,
        "gpu": {"name": gpu_name, "sm": gpu_sm or plan.sm},
        "jetpack": plan.jetpack,
        "l4t": plan.l4t,
        "device": plan.device,
        "device_display": plan.device_display,
        "precision": plan.precision,
        "int8_mode": plan.int8_mode,
        "onnx": {"file": Path(plan.onnx_path).name, "sha256": plan.onnx_sha256},
        "builder": builder or plan.backend,
        "inputs": list(plan.inputs),
        "flags": {
            "fp16": plan.fp16, "int8": plan.int8, "sparse": plan.sparse, "dla_core": plan.dla_core,
            "gpu_fallback": plan.gpu_fallback, "workspace_mib": plan.workspace_mib,
            "shapes": [s.to_dict() for s in plan.shapes],
            "calib_cache": str(plan.calib_cache) if plan.calib_cache else None,
            "timing_cache": str(plan.timing_cache) if plan.timing_cache else None,
        },
        **(extra or {}),
    }


def write_manifest(engine: Union[str, Path], manifest: dict) -> Path:
    dest = manifest_path(engine)
    with atomic_output(dest) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return dest


def read_manifest(engine: Union[str, Path]) -> Optional[dict]:
    p = manifest_path(engine)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"engine manifest {p} is not valid JSON: {exc}", hint="rebuild the engine") from exc
    if not isinstance(data, dict) or "tensorrt" not in data:
        raise InputError(f"engine manifest {p} lacks the 'tensorrt' field", hint="rebuild the engine")
    _check_fields(p, data)
    return data


# field -> (accepted types, what it should look like); fields edgekit reads from a manifest
_FIELDS = {
    "tensorrt": ((str, int, float), 'a version string like "10.3.0"'),
    "device": ((str,), 'a profile name like "orin-nano"'),
    "device_display": ((str,), "a board name"),
    "precision": ((str,), 'a precision like "fp16"'),
    "jetpack": ((str,), 'a JetPack version like "6.1"'),
    "gpu": ((dict,), 'an object like {"name": "Orin", "sm": "8.7"}'),
    "onnx": ((dict,), 'an object like {"file": "model.onnx", "sha256": HEX}'),
    "inputs": ((list,), 'a list of {"name", "dtype", "shape"} objects'),
}


def _check_fields(path: Path, data: dict) -> None:
    """A one-line error for a hand-edited or damaged manifest, instead of a crash where it is read."""
    def bad(field: str, value: object, want: str) -> InputError:
        return InputError(f"engine manifest {path}: '{field}' is {json.dumps(value)[:60]}, not {want}",
                          hint="rebuild the engine (edgekit build writes the manifest), or fix the field")

    for key, (types, want) in _FIELDS.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise bad(key, value, want)
    sm = (data.get("gpu") or {}).get("sm")
    if sm not in (None, "") and not (isinstance(sm, (str, int, float)) and not isinstance(sm, bool)
                                     and re.fullmatch(r"\d+\.\d+", str(sm))):
        raise bad("gpu.sm", sm, 'a compute capability like "8.7"')
    for i, item in enumerate(data.get("inputs") or []):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("shape", []), list)):
            raise bad(f"inputs[{i}]", item, 'an object like {"name": "input", "shape": [1, 3, 224, 224]}')


def check_engine_compatible(engine: Union[str, Path], trt_version: Optional[str] = None,
                            device: Optional[str] = None, gpu_sm: Optional[str] = None) -> Optional[dict]:
    """Raise EngineMismatchError when the manifest names another TensorRT version or board.

    TensorRT versions are compared on major.minor (an engine built with 8.5.2 loads on 8.5.x);
    ``device`` is compared by profile name and ``gpu_sm`` by compute capability. Returns the
    manifest (or None when the engine has no sidecar: nothing can be checked then).
    """
    man = read_manifest(engine)
    if man is None:
        return None
    problems = []
    built = str(man.get("tensorrt", ""))
    if trt_version and version_tag(built) != version_tag(trt_version):
        problems.append(f"it was built with TensorRT {built}, this system has TensorRT {trt_version}")
    if device and man.get("device") and man["device"] != device:
        problems.append(f"it was built for {man.get('device_display') or man['device']} ({man['device']}), "
                        f"this board is {device}")
    built_sm = (man.get("gpu") or {}).get("sm")
    if gpu_sm and built_sm and str(built_sm) != str(gpu_sm):
        problems.append(f"it was built for a GPU with SM {built_sm}, this GPU is SM {gpu_sm}")
    if problems:
        raise EngineMismatchError(f"engine {Path(engine).name} cannot be loaded here: " + "; ".join(problems),
                                  hint=f"rebuild it on this board: edgekit build {man.get('onnx', {}).get('file', 'MODEL.onnx')} "
                                       f"--device {device or man.get('device', 'NAME')}")
    return man


def manifest_summary(man: Dict[str, object]) -> str:
    return f"TensorRT {man.get('tensorrt')} / {man.get('device')} / {man.get('precision')}"
