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
from typing import Dict, List, Optional, Tuple

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
class StageDefaults:
    """A profile's ``[defaults]`` table: what ``--device NAME`` sets in the stages before the build
    (prune, quantize, inspect sparsity) when their own flag is not given.

    ``channel_multiple``: (precision, N) pairs, prune keeps channel counts at multiples of N, the
    alignment the board's kernels want at that precision (``dla-fp16`` / ``dla-int8`` for the DLA
    cores); ``channel_multiple_reason`` says where the numbers come from.
    """

    channel_multiple: Tuple[Tuple[str, int], ...] = ()
    channel_multiple_reason: str = ""


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
    defaults: StageDefaults = StageDefaults()
    source: str = ""

    @property
    def is_jetson(self) -> bool:
        return self.kind == "jetson"

    @property
    def sm_tag(self) -> str:
        """'8.7' -> 'sm_87' (what nvcc and TensorRT logs call it)."""
        return "sm_" + self.sm.replace(".", "") if self.sm else ""

    def channel_multiple(self, precision: Optional[str] = None) -> Optional[int]:
        """The channel multiple for ``precision`` (default: the profile's default precision);
        None when the profile names none for it."""
        want = self.default_precision if precision in (None, "", "auto") else precision
        return dict(self.defaults.channel_multiple).get(want)

    @property
    def sparsity_24(self) -> bool:
        """Whether TensorRT can run 2:4-sparse weights faster here (sparse tensor cores)."""
        return self.sparse_tensor_cores

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sm_tag"] = self.sm_tag
        d["defaults"]["channel_multiple"] = dict(self.defaults.channel_multiple)
        return d


def _typed(path: Path, table: dict, key: str, kind: type, default: object, where: str = "") -> object:
    """``table[key]`` as ``kind`` (int, float, bool, str, tuple of str), or a one-line InputError
    naming the file and field: TOML types are kept as written, ``"two"`` is not an int."""
    value = table.get(key, default)
    field_name = f"{where}{key}"
    if kind is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        want = "a list of strings"
    elif kind is bool:
        if isinstance(value, bool):
            return value
        want = "true or false"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        want = "a whole number >= 0"
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        want = "a number >= 0"
    else:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        want = "a string"
    raise InputError(f"device profile {path}: {field_name} = {value!r} is not {want}",
                     hint=f"fix {field_name} in {path.name} (see the profiles shipped with edgekit)")


def _stack(path: Path, table: object, where: str) -> SoftwareStack:
    if not isinstance(table, dict):
        raise InputError(f"device profile {path}: {where.rstrip('.')} is not a table")
    return SoftwareStack(**{k: _typed(path, table, k, str, "", where) for k in SoftwareStack.__dataclass_fields__})


def _stage_defaults(path: Path, table: object) -> StageDefaults:
    """The ``[defaults]`` table, checked: channel multiples are whole numbers >= 1."""
    if not isinstance(table, dict):
        raise InputError(f"device profile {path}: defaults is not a table")
    multiples = table.get("channel_multiple", {})
    if not isinstance(multiples, dict):
        raise InputError(f"device profile {path}: defaults.channel_multiple is not a table of precision = N",
                         hint="e.g. channel_multiple = { fp16 = 8, int8 = 32 }")
    pairs = []
    for prec, n in multiples.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"device profile {path}: defaults.channel_multiple.{prec} = {n!r} is not a whole "
                             "number >= 1", hint=f"fix it in {path.name}")
        pairs.append((str(prec), n))
    return StageDefaults(channel_multiple=tuple(pairs),
                         channel_multiple_reason=_typed(path, table, "channel_multiple_reason", str, "", "defaults."))


def _profile_from_toml(path: Path) -> DeviceProfile:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"device profile {path} is not valid TOML: {exc}") from exc
    if "name" not in raw:
        raise InputError(f"device profile {path} lacks the field 'name'")
    sw = raw.get("software", {})
    stack = _stack(path, sw, "software.")
    supported = sw.get("supported", []) if isinstance(sw, dict) else []
    if not isinstance(supported, list):
        raise InputError(f"device profile {path}: software.supported is not a list of tables ([[software.supported]])")
    max_opset = _typed(path, sw, "max_onnx_opset", int, 0, "software.")
    if not max_opset and stack.tensorrt:
        max_opset = max_opset_for_tensorrt(stack.tensorrt)

    def get(key: str, kind: type, default: object) -> object:
        return _typed(path, raw, key, kind, default)

    name = get("name", str, "")
    return DeviceProfile(
        name=name, display_name=get("display_name", str, name), kind=get("kind", str, "jetson"),
        soc=get("soc", str, ""), arch=get("arch", str, ""), sm=get("sm", str, ""),
        dla_cores=get("dla_cores", int, 0), fast_fp16=get("fast_fp16", bool, False),
        fast_int8=get("fast_int8", bool, False), sparse_tensor_cores=get("sparse_tensor_cores", bool, False),
        memory_gb=get("memory_gb", float, 0), memory_bandwidth_gbs=get("memory_bandwidth_gbs", float, 0),
        peak=get("peak", str, ""), default_precision=get("default_precision", str, "fp32"),
        workspace_mib=get("workspace_mib", int, 0), power_modes=get("power_modes", tuple, []),
        default_power_mode=get("default_power_mode", str, ""),
        preferred_backend=get("preferred_backend", str, "onnxruntime"), software=stack, max_onnx_opset=max_opset,
        aliases=get("aliases", tuple, []), variants=get("variants", tuple, []),
        supported_stacks=tuple(_stack(path, s, f"software.supported[{i}].") for i, s in enumerate(supported)),
        model_match=get("model_match", tuple, []), compatible_match=get("compatible_match", tuple, []),
        defaults=_stage_defaults(path, raw.get("defaults", {})), source=str(path),
    )


@lru_cache(maxsize=None)
def _load_all(folder: str) -> Dict[str, DeviceProfile]:
    profiles: Dict[str, DeviceProfile] = {}
    if not Path(folder).is_dir():
        raise InputError(f"device profiles folder {folder} does not exist",
                         hint="fix or unset EDGEKIT_PROFILES_DIR")
    files = sorted(Path(folder).glob("*.toml"))
    if not files:
        raise InputError(f"device profiles folder {folder} has no *.toml profiles",
                         hint="fix or unset EDGEKIT_PROFILES_DIR")
    for path in files:
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


_VENDOR_PREFIXES = ("nvidia-", "jetson-")


def _core(key: str) -> str:
    """``key`` without the vendor words a user may put in front (``jetson-``, ``nvidia-``)."""
    for _ in range(2):
        for pre in _VENDOR_PREFIXES:
            if key.startswith(pre):
                key = key[len(pre):]
    return key


def _closest(key: str, index: Dict[str, DeviceProfile]) -> Optional[str]:
    """The known name or alias nearest ``key``: most shared words first (``jetson-nano`` ->
    ``orin-nano``), then spelling (``orn`` -> ``orin``); None when nothing is near."""
    core = _core(key)
    words = set(core.split("-"))

    def score(cand: str) -> Tuple[int, float]:
        c = _core(cand)
        return len(words & set(c.split("-"))), difflib.SequenceMatcher(None, core, c).ratio()

    best = max(sorted(index), key=score, default=None)
    if best is None:
        return None
    shared, ratio = score(best)
    return best if shared or ratio >= 0.5 else None


def get_profile(name: str) -> DeviceProfile:
    """Resolve a device name or alias; unknown names raise with a "did you mean" hint."""
    key = (name or "").strip().lower().replace("_", "-")
    index = _name_index()
    if key in index:
        return index[key]
    if _core(key) in index:  # "jetson-agx-orin" is agx-orin
        return index[_core(key)]
    close = _closest(key, index)
    known = ", ".join(sorted(p.name for p in list_profiles()))
    if close:
        raise UnknownDeviceError(f"unknown device '{name}'; did you mean '{close}'?", hint=f"known devices: {known}")
    raise UnknownDeviceError(f"unknown device '{name}'", hint=f"known devices: {known} (see `edgekit devices`)")


DEFAULT_DEVICE = "cpu"
