"""What a board advertises to the Ray cluster, and how the desk reads it back.

A board joins with one custom resource per device profile, ``edgekit-device:<profile>: 1``: Ray then
runs at most one benchmark at a time per board, so two timings never share a GPU. Facts the
scheduler must filter on (TensorRT major.minor, JetPack, L4T, power mode, clock lock) travel as Ray
node labels, and a task asks for its TensorRT version with a ``label_selector``: a board with
another TensorRT is never given the task. Nothing here imports Ray.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from edgekit.devices import get_profile
from edgekit.errors import InputError
from edgekit.jetson import BoardInfo

RESOURCE_PREFIX = "edgekit-device:"
LABEL_DEVICE = "edgekit-device"
LABEL_TRT = "edgekit-tensorrt"       # major.minor: engines do not cross TensorRT minor versions
LABEL_JETPACK = "edgekit-jetpack"
LABEL_L4T = "edgekit-l4t"
LABEL_POWER = "edgekit-power-mode"
LABEL_CLOCKS = "edgekit-clocks"
LABEL_HOST = "edgekit-host"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")


def device_resource(device: str) -> str:
    """The Ray resource one board of ``device`` (a profile name) offers, with quantity 1."""
    return RESOURCE_PREFIX + device


def trt_label(version: Optional[str]) -> str:
    """TensorRT ``10.3.0`` -> ``10.3``; '' for no version."""
    parts = re.findall(r"\d+", version or "")
    return ".".join(parts[:2]) if parts else ""


def label_value(text: object) -> str:
    """A Ray label value (letters, digits, ``_ . -``, at most 63 characters, never empty)."""
    cleaned = _LABEL_VALUE.sub("-", str(text or "")).strip("-_.")[:63].strip("-_.")
    return cleaned or "unknown"


@dataclass
class WorkerSpec:
    """The resources and labels one board joins with (what ``edgekit worker`` passes to ``ray start``)."""

    device: str
    resources: Dict[str, float]
    labels: Dict[str, str]
    notes: List[str] = field(default_factory=list)

    def ray_start_args(self, address: str, num_cpus: Optional[int] = None) -> List[str]:
        """``ray start`` arguments that join ``address`` with this spec (``ray`` itself not included)."""
        args = ["start", "--address", address, "--resources", json.dumps(self.resources, sort_keys=True),
                "--labels", ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))]
        if num_cpus is not None:
            args += ["--num-cpus", str(num_cpus)]
        return args

    def to_dict(self) -> dict:
        return asdict(self)


def worker_spec(board: Optional[BoardInfo], device: Optional[str] = None, trt_version: Optional[str] = None,
                power_mode: str = "", clocks_locked: Optional[bool] = None, host: str = "") -> WorkerSpec:
    """The spec for this board: ``device`` overrides detection; TensorRT is the installed one, else
    what the board's JetPack ships, else ``trt_version``; an unknown board needs ``device``."""
    notes: List[str] = []
    name = device or (board.profile if board else None)
    if not name:
        raise InputError("cannot tell which board this is" if board is None else
                         f"no edgekit device profile matches this board ({board.model or 'unknown model'})",
                         hint="pass --device NAME (see `edgekit devices`)")
    prof = get_profile(name)
    trt = trt_version or (board.tensorrt_installed or board.tensorrt_expected if board else "")
    if not trt:
        trt = prof.software.tensorrt
        notes.append("TensorRT version not found on this machine: advertising the profile's")
    labels = {LABEL_DEVICE: prof.name, LABEL_TRT: label_value(trt_label(trt)),
              LABEL_JETPACK: label_value(board.jetpack if board else ""),
              LABEL_L4T: label_value(board.l4t if board else ""),
              LABEL_POWER: label_value(power_mode),
              LABEL_CLOCKS: "unknown" if clocks_locked is None else ("locked" if clocks_locked else "unlocked")}
    if host:
        labels[LABEL_HOST] = label_value(host)
    return WorkerSpec(device=prof.name, resources={device_resource(prof.name): 1.0}, labels=labels, notes=notes)


@dataclass
class BoardStatus:
    """One node of the cluster as ``edgekit cluster status`` shows it."""

    node_id: str
    address: str
    host: str
    alive: bool
    devices: List[str]
    busy: List[str]
    labels: Dict[str, str]
    death_reason: str = ""

    @property
    def name(self) -> str:
        """How a board is named in reports: host, address and a short node id."""
        return f"{self.host or '?'} ({self.address}, node {self.node_id[:8]})"

    @property
    def tensorrt(self) -> str:
        return self.labels.get(LABEL_TRT, "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["name"] = self.name
        return d


def board_status(node: dict, available: Optional[Dict[str, float]] = None) -> BoardStatus:
    """A :class:`BoardStatus` from one entry of ``ray.nodes()`` (and that node's available resources)."""
    total = node.get("Resources") or {}
    devices = sorted(k[len(RESOURCE_PREFIX):] for k in total if k.startswith(RESOURCE_PREFIX))
    busy = []
    if available is not None:
        busy = [d for d in devices if available.get(device_resource(d), 0.0) < total[device_resource(d)]]
    labels = {k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.io/")}
    return BoardStatus(node_id=node.get("NodeID", ""), address=node.get("NodeManagerAddress", ""),
                       host=labels.get(LABEL_HOST) or node.get("NodeManagerHostname", ""),
                       alive=bool(node.get("Alive")), devices=devices, busy=busy, labels=labels,
                       death_reason=node.get("DeathReasonMessage") or "")
