"""Which Jetson is this? Board detection from the files L4T leaves on every board.

Three sources, read under a ``root`` folder so that tests (and a mounted board image) can use the
same code as a live board:

* ``/etc/nv_tegra_release``: the L4T release, ``# R35 (release), REVISION: 4.1, ...`` -> 35.4.1.
  JetPack is derived from it (JetPack is a bundle name; L4T is what the board really runs).
* ``/proc/device-tree/model``: a human string such as ``NVIDIA Jetson AGX Orin Developer Kit``
  (NUL-terminated on a real board).
* ``/proc/device-tree/compatible``: NUL-separated module/carrier/SoC ids, e.g.
  ``nvidia,p3737-0000+p3701-0005``, ``nvidia,p3701-0005``, ``nvidia,tegra234``. The module part
  number is the most precise signal (it separates Orin NX from Orin Nano on the same carrier).

A device profile is picked by the ``compatible_match`` / ``model_match`` lists in ``profiles/*.toml``
(the longest matching pattern wins, so ``Jetson Xavier NX`` beats ``Jetson Xavier``). A board with no
profile (e.g. the original Jetson Nano) is still reported, with ``profile = None``.

Only tested against recorded files (``tests/fixtures/detect``), never on a live board here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from edgekit.devices import list_profiles
from edgekit.errors import EngineMismatchError

PathLike = Union[str, Path]

# L4T release -> JetPack. Exact pairs from NVIDIA's JetPack archive; an L4T not in the table maps to
# the closest lower entry of the same major.minor and is flagged ``jetpack_exact = False``.
L4T_TO_JETPACK: Dict[Tuple[int, int, int], str] = {
    (32, 4, 3): "4.4", (32, 4, 4): "4.4.1", (32, 5, 0): "4.5", (32, 5, 1): "4.5.1", (32, 5, 2): "4.5.1",
    (32, 6, 1): "4.6", (32, 7, 1): "4.6.1", (32, 7, 2): "4.6.2", (32, 7, 3): "4.6.3", (32, 7, 4): "4.6.4",
    (32, 7, 5): "4.6.5", (32, 7, 6): "4.6.6",
    (35, 1, 0): "5.0.2", (35, 2, 1): "5.1", (35, 3, 1): "5.1.1", (35, 4, 1): "5.1.2", (35, 5, 0): "5.1.3",
    (35, 6, 0): "5.1.4", (35, 6, 1): "5.1.5",
    (36, 2, 0): "6.0 DP", (36, 3, 0): "6.0", (36, 4, 0): "6.1", (36, 4, 3): "6.2", (36, 4, 4): "6.2.1",
    (38, 2, 0): "7.0",
    (39, 0, 0): "7.2",
}

# JetPack generation -> (TensorRT, CUDA) as shipped (see shared/reference/tensorrt.md).
JETPACK_STACK: Tuple[Tuple[Tuple[int, ...], str, str], ...] = (
    ((4, 6), "8.0.1", "10.2"),
    ((4, 6, 1), "8.2.1", "10.2"),
    ((5, 0), "8.4.1", "11.4"),
    ((5, 1), "8.5.2", "11.4"),
    ((6, 0), "8.6.2", "12.2"),
    ((6, 1), "10.3", "12.6"),
    ((7, 0), "10.13", "13.0"),   # (?) JetPack 7.0 (Thor launch): not in the reference table
    ((7, 2), "11.4", "13.0"),
)

_RELEASE_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", re.IGNORECASE)
_SOC_RE = re.compile(r"nvidia,(tegra\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class L4TRelease:
    major: int
    minor: int
    patch: int
    board: str = ""
    raw: str = ""

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass
class BoardInfo:
    """What ``detect_board`` found. ``profile`` is an edgekit device profile name or None."""

    model: str = ""
    compatible: List[str] = field(default_factory=list)
    soc: str = ""
    l4t: str = ""
    l4t_board: str = ""
    jetpack: str = ""
    jetpack_exact: bool = False
    tensorrt_expected: str = ""
    cuda_expected: str = ""
    tensorrt_installed: str = ""
    profile: Optional[str] = None
    matched_by: str = ""
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _under(root: PathLike, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


def _read_text(path: Path) -> Optional[str]:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def parse_nv_tegra_release(text: str) -> Optional[L4TRelease]:
    """First line of /etc/nv_tegra_release -> L4TRelease; None when it does not look like one.

    ``REVISION: 7.1`` is minor.patch of the release; a REVISION without a dot means patch 0.
    """
    m = _RELEASE_RE.search(text or "")
    if not m:
        return None
    board = ""
    bm = re.search(r"BOARD:\s*([^,\s]+)", text)
    if bm:
        board = bm.group(1)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return L4TRelease(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), board=board, raw=first)


def jetpack_for_l4t(l4t: Union[str, Sequence[int]]) -> Tuple[str, bool]:
    """L4T version -> (JetPack version, exact?). ('', False) when the L4T major is unknown."""
    if isinstance(l4t, str):
        parts = [int(p) for p in re.findall(r"\d+", l4t)[:3]]
    else:
        parts = [int(p) for p in l4t][:3]
    while len(parts) < 3:
        parts.append(0)
    key = (parts[0], parts[1], parts[2])
    if key in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[key], True
    same_minor = [k for k in L4T_TO_JETPACK if k[:2] == key[:2] and k <= key]
    if same_minor:
        return L4T_TO_JETPACK[max(same_minor)], False
    same_major = [k for k in L4T_TO_JETPACK if k[0] == key[0] and k <= key]
    if same_major:
        return L4T_TO_JETPACK[max(same_major)], False
    return "", False


def stack_for_jetpack(jetpack: str) -> Tuple[str, str]:
    """JetPack version -> (TensorRT, CUDA) it ships; ('', '') if unknown."""
    v = tuple(int(p) for p in re.findall(r"\d+", jetpack or ""))
    if not v:
        return "", ""
    best = ("", "")
    for since, trt, cuda in JETPACK_STACK:
        if v >= since and v[0] == since[0]:
            best = (trt, cuda)
    return best


def read_model(root: PathLike = "/") -> str:
    text = _read_text(_under(root, "/proc/device-tree/model"))
    return (text or "").replace("\x00", "").strip()


def read_compatible(root: PathLike = "/") -> List[str]:
    text = _read_text(_under(root, "/proc/device-tree/compatible"))
    if not text:
        return []
    return [part.strip() for part in text.split("\x00") if part.strip()]


def read_l4t(root: PathLike = "/") -> Optional[L4TRelease]:
    text = _read_text(_under(root, "/etc/nv_tegra_release"))
    return parse_nv_tegra_release(text) if text else None


_TRT_HEADER_DIRS = ("/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu", "/usr/include",
                    "/usr/local/tensorrt/include")


def read_tensorrt_version(root: PathLike = "/") -> str:
    """The TensorRT version of the installed headers (NvInferVersion.h), '' when none is found.

    8.x spells it ``NV_TENSORRT_MAJOR``; 10.x+ defines ``TRT_MAJOR_ENTERPRISE`` and aliases it.
    """
    for folder in _TRT_HEADER_DIRS:
        text = _read_text(_under(root, folder) / "NvInferVersion.h")
        if not text:
            continue
        values: Dict[str, int] = {}
        for name, num in re.findall(r"#define\s+(\w+)\s+(\d+)\b", text):
            values[name] = int(num)
        for prefix, suffix in (("NV_TENSORRT_", ""), ("TRT_", "_ENTERPRISE"), ("TRT_", "_RTX")):
            keys = [f"{prefix}{part}{suffix}" for part in ("MAJOR", "MINOR", "PATCH")]
            if keys[0] in values and keys[1] in values:
                return ".".join(str(values[k]) for k in keys if k in values)
    return ""


def match_profile(model: str, compatible: Sequence[str], profiles=None) -> Tuple[Optional[str], str]:
    """Pick the device profile for a model string and compatible list -> (name, 'how it matched').

    The module part number in ``compatible`` is tried first (most precise), then the model string;
    within each, the longest matching pattern wins. Matching is case-insensitive substring.
    """
    if profiles is None:
        profiles = list_profiles()
    tokens = _compatible_tokens(compatible)
    best: Tuple[Tuple[int, int], Optional[str], str] = ((0, 0), None, "")
    for prof in profiles:
        for pat in prof.compatible_match:
            p = pat.lower()
            for token, weight in tokens:
                score = (weight, len(p))
                if p and p in token and score > best[0]:
                    best = (score, prof.name, f"compatible:{pat}")
    if best[1] is not None and best[0][0] >= 2:
        return best[1], best[2]
    model_lower = (model or "").lower()
    by_model: Tuple[int, Optional[str], str] = (0, None, "")
    for prof in profiles:
        for pat in prof.model_match:
            p = pat.lower()
            if p and p in model_lower and len(p) > by_model[0]:
                by_model = (len(p), prof.name, f"model:{pat}")
    if by_model[1] is not None:
        return by_model[1], by_model[2]
    return best[1], best[2]


def _compatible_tokens(compatible: Sequence[str]) -> List[Tuple[str, int]]:
    """Split ``nvidia,p3509-0000+p3636-0001`` into carrier (weight 1) and module (weight 2) tokens.

    Carrier boards are shared between modules (the p3509 carrier takes a Xavier NX or a TX2 NX), so
    a carrier id alone must not decide the profile; SoC ids (``nvidia,tegra234``) get weight 1 too.
    """
    out: List[Tuple[str, int]] = []
    for entry in compatible:
        entry = entry.lower()
        vendor = entry.split(",", 1)[0] + "," if "," in entry else ""
        parts = entry.split("+")
        for i, part in enumerate(parts):
            token = part if "," in part else vendor + part
            carrier = len(parts) > 1 and i == 0
            weight = 1 if carrier or _SOC_RE.search(token) else 2
            out.append((token, weight))
    return out


def detect_board(root: PathLike = "/", profiles=None) -> Optional[BoardInfo]:
    """Describe the Jetson under ``root``; None when nothing there looks like a Jetson (a PC, CI)."""
    release = read_l4t(root)
    model = read_model(root)
    compatible = read_compatible(root)
    soc = ""
    for c in compatible:
        m = _SOC_RE.search(c)
        if m:
            soc = m.group(1).lower()
    looks_jetson = release is not None or "jetson" in model.lower() or bool(soc)
    if not looks_jetson:
        return None
    info = BoardInfo(model=model, compatible=compatible, soc=soc)
    if release is not None:
        info.l4t = release.version
        info.l4t_board = release.board
        info.jetpack, info.jetpack_exact = jetpack_for_l4t((release.major, release.minor, release.patch))
        info.tensorrt_expected, info.cuda_expected = stack_for_jetpack(info.jetpack)
        if not info.jetpack:
            info.notes.append(f"L4T {release.version} is not in edgekit's JetPack table")
        elif not info.jetpack_exact:
            info.notes.append(f"L4T {release.version} is not in edgekit's table; JetPack {info.jetpack} is the "
                              "closest earlier release")
    else:
        info.notes.append("no /etc/nv_tegra_release: L4T/JetPack unknown")
    if not model:
        info.notes.append("no /proc/device-tree/model")
    info.tensorrt_installed = read_tensorrt_version(root)
    info.profile, info.matched_by = match_profile(model, compatible, profiles)
    if info.profile is None:
        info.notes.append("no edgekit device profile matches this board; pass --device explicitly")
    return info


def _major_minor(v: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v or ""))[:2]


def check_engine_board(expected: dict, board: Optional[BoardInfo] = None, tensorrt_version: Optional[str] = None,
                       root: PathLike = "/", strict: bool = True) -> List[str]:
    """Compare what an engine (or bundle) was built for with this board.

    ``expected`` may hold ``device`` (profile name), ``l4t``, ``jetpack``, ``tensorrt``. TensorRT and
    L4T are compared on major.minor: engines do not cross TensorRT minor versions, and L4T fixes the
    TensorRT a Jetson runs. Returns the list of problems; with ``strict`` a non-empty list raises
    :class:`EngineMismatchError` naming both sides.
    """
    if board is None:
        board = detect_board(root)
    problems: List[str] = []
    want_dev = expected.get("device") or expected.get("device_profile")
    if want_dev and board is not None and board.profile and board.profile != want_dev:
        problems.append(f"built for device '{want_dev}', this board is '{board.profile}' ({board.model})")
    want_trt = expected.get("tensorrt") or expected.get("tensorrt_version")
    have_trt = tensorrt_version or (board.tensorrt_installed if board else "") or (board.tensorrt_expected if board else "")
    if want_trt and have_trt and _major_minor(want_trt) != _major_minor(have_trt):
        problems.append(f"built with TensorRT {want_trt}, this board has TensorRT {have_trt}")
    want_l4t = expected.get("l4t")
    if want_l4t and board is not None and board.l4t and _major_minor(want_l4t) != _major_minor(board.l4t):
        problems.append(f"built on L4T {want_l4t}, this board runs L4T {board.l4t} (JetPack {board.jetpack or '?'})")
    if problems and strict:
        raise EngineMismatchError("; ".join(problems), hint="rebuild the engine on this board (`edgekit build`)")
    return problems


__all__ = ["BoardInfo", "L4TRelease", "L4T_TO_JETPACK", "check_engine_board", "detect_board", "jetpack_for_l4t",
           "match_profile", "parse_nv_tegra_release", "read_compatible", "read_l4t", "read_model",
           "read_tensorrt_version", "stack_for_jetpack"]
