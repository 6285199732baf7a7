"""Per-layer engine times from the files a board run leaves: trtexec ``--exportProfile`` JSON,
the ``edgekit profile --export-layers`` file, or an ``edgekit profile --json`` report that carries
``extra.layers``. All three become ``[(layer name, mean ms per run)]`` for the estimator's refit."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Tuple

from edgekit.errors import InputError
from edgekit.trt.trtexec_log import parse_export_profile

FORMAT = "edgekit-layer-profile/1"


def _rows(items: list, where: str) -> List[Tuple[str, float]]:
    out = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            continue
        ms = item.get("average_ms", item.get("averageMs", item.get("mean_ms")))
        if isinstance(ms, (int, float)) and not math.isnan(float(ms)) and ms >= 0:
            out.append((str(item["name"]), float(ms)))
    if not out:
        raise InputError(f"{where} holds no per-layer times",
                         hint="use trtexec --exportProfile output or `edgekit profile --export-layers`")
    return out


def read_layer_times(path: Path) -> List[Tuple[str, float]]:
    """``[(name, ms)]`` from one file (see the module docstring); a one-line InputError otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a JSON layer profile: {str(exc).splitlines()[0]}") from exc
    if isinstance(data, list):
        prof = parse_export_profile(data)
        return _rows([layer.to_dict() for layer in prof.layers], str(path))
    if isinstance(data, dict):
        layers = data.get("layers")
        if layers is None and isinstance(data.get("extra"), dict):
            layers = (data["extra"].get("layers") or {})
        if isinstance(layers, dict):
            layers = layers.get("layers")
        if isinstance(layers, list):
            return _rows(layers, str(path))
    raise InputError(f"{path} is not a layer profile",
                     hint="use trtexec --exportProfile output or `edgekit profile --export-layers`")
