"""Device profiles: what a build and a benchmark need to know about a target board.

One TOML file per device in ``profiles/``. ``--device orin`` resolves through aliases; a typo gets a
"did you mean" suggestion. Profiles are plain data: a user can drop a new TOML file into a folder
named by ``EDGEKIT_PROFILES_DIR`` to add a board.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

from edgekit._resources import data_dir
from edgekit.errors import InputError, UnknownDeviceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 on older JetPacks
    import tomli as tomllib

# Highest ONNX opset each TensorRT ONNX parser accepts (onnx-tensorrt operators.md per release).
# An exporter targeting a board must not emit a newer opset than its parser knows.
TRT_MAX_OPSET: Tuple[Tuple[Tuple[int, int], int], ...] = (
    ((7, 0), 11),
    ((7, 2), 13),
    ((8, 0), 13),
    ((8, 2), 13),
    ((8, 4), 17),
    ((8, 5), 17),
    ((8, 6), 17),
    ((10, 0), 20),
    ((10, 8), 22),
    ((11, 0), 25),
)


def parse_version(text: str) -> Tuple[int, ...]:
    """'8.5.2' -> (8, 5, 2); '' -> ()."""
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def max_opset_for_tensorrt(version: str) -> int:
    """The newest ONNX opset that TensorRT ``version``'s parser accepts."""
    v = parse_version(version)[:2]
    if not v:
        raise InputError(f"not a TensorRT version: {version!r}", hint="use a form like 8.5.2 or 10.3")
    best = TRT_MAX_OPSET[0][1]
    for since, opset in TRT_MAX_OPSET:
        if v >= since:
            best = opset
    return best


@dataclass(frozen=True)
class SoftwareStack:
    tensorrt: str = ""
    cuda: str = ""
    python: str = ""
    jetpack: str = ""
    l4t: str = ""
    ubuntu: str = ""

    @property
    def tensorrt_tuple(self) -> Tuple[int, ...]:
        return parse_version(self.tensorrt)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    display_name: str
    kind: str  # "jetson" | "gpu" | "cpu"
    soc: str
    arch: str
    sm: str
    dla_cores: int
    fast_fp16: bool
    fast_int8: bool
    sparse_tensor_cores: bool
    memory_gb: float
    memory_bandwidth_gbs: float
    peak: str
    default_precision: str
    workspace_mib: int
    power_modes: Tuple[str, ...]
    default_power_mode: str
    preferred_backend: str
    software: SoftwareStack
    max_onnx_opset: int
    aliases: Tuple[str, ...] = ()
    variants: Tuple[str, ...] = ()
    supported_stacks: Tuple[SoftwareStack, ...] = ()
    model_match: Tuple[str, ...] = ()
    compatible_match: Tuple[str, ...] = ()
    source: str = ""

    @property
    def is_jetson(self) -> bool:
        return self.kind == "jetson"

    @property
    def sm_tag(self) -> str:
        """'8.7' -> 'sm_87' (what nvcc and TensorRT logs call it)."""
        return "sm_" + self.sm.replace(".", "") if self.sm else ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sm_tag"] = self.sm_tag
        return d


def _profile_from_toml(path: Path) -> DeviceProfile:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"device profile {path} is not valid TOML: {exc}") from exc
    sw = dict(raw.get("software", {}))
    supported = tuple(
        SoftwareStack(**{k: str(v) for k, v in s.items() if k in SoftwareStack.__dataclass_fields__})
        for s in sw.pop("supported", [])
    )
    max_opset = int(sw.pop("max_onnx_opset", 0))
    stack = SoftwareStack(**{k: str(v) for k, v in sw.items() if k in SoftwareStack.__dataclass_fields__})
    if not max_opset and stack.tensorrt:
        max_opset = max_opset_for_tensorrt(stack.tensorrt)
    try:
        return DeviceProfile(
            name=raw["name"],
            display_name=raw.get("display_name", raw["name"]),
            kind=raw.get("kind", "jetson"),
            soc=raw.get("soc", ""),
            arch=raw.get("arch", ""),
            sm=str(raw.get("sm", "")),
            dla_cores=int(raw.get("dla_cores", 0)),
            fast_fp16=bool(raw.get("fast_fp16", False)),
            fast_int8=bool(raw.get("fast_int8", False)),
            sparse_tensor_cores=bool(raw.get("sparse_tensor_cores", False)),
            memory_gb=float(raw.get("memory_gb", 0)),
            memory_bandwidth_gbs=float(raw.get("memory_bandwidth_gbs", 0)),
            peak=str(raw.get("peak", "")),
            default_precision=raw.get("default_precision", "fp32"),
            workspace_mib=int(raw.get("workspace_mib", 0)),
            power_modes=tuple(raw.get("power_modes", [])),
            default_power_mode=raw.get("default_power_mode", ""),
            preferred_backend=raw.get("preferred_backend", "onnxruntime"),
            software=stack,
            max_onnx_opset=max_opset,
            aliases=tuple(raw.get("aliases", [])),
            variants=tuple(raw.get("variants", [])),
            supported_stacks=supported,
            model_match=tuple(raw.get("model_match", [])),
            compatible_match=tuple(raw.get("compatible_match", [])),
            source=str(path),
        )
    except KeyError as exc:
        raise InputError(f"device profile {path} lacks the field {exc}") from exc


@lru_cache(maxsize=None)
def _load_all(folder: str) -> Dict[str, DeviceProfile]:
    profiles: Dict[str, DeviceProfile] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        prof = _profile_from_toml(path)
        profiles[prof.name] = prof
    return profiles


def list_profiles() -> List[DeviceProfile]:
    return list(_load_all(str(data_dir("profiles"))).values())


def _name_index() -> Dict[str, DeviceProfile]:
    index: Dict[str, DeviceProfile] = {}
    for prof in list_profiles():
        index[prof.name.lower()] = prof
        for alias in prof.aliases:
            index.setdefault(alias.lower(), prof)
    return index


def get_profile(name: str) -> DeviceProfile:
    """Resolve a device name or alias; unknown names raise with a "did you mean" hint."""
    key = (name or "").strip().lower().replace("_", "-")
    index = _name_index()
    if key in index:
        return index[key]
    close = difflib.get_close_matches(key, list(index), n=1, cutoff=0.5)
    known = ", ".join(sorted(p.name for p in list_profiles()))
    if close:
        raise UnknownDeviceError(f"unknown device '{name}'; did you mean '{close[0]}'?", hint=f"known devices: {known}")
    raise UnknownDeviceError(f"unknown device '{name}'", hint=f"known devices: {known} (see `edgekit devices`)")


DEFAULT_DEVICE = "cpu"
