"""Built-in model definitions (no torchvision on our machines: the architectures are written here).

``BUILTIN`` maps a name to ``(factory, recipe)``; the recipe names an ``exporters/<family>.toml``
file that says how the family is exported (input spec, I/O names, dynamic axes). Importing this
module does not import torch; ``create(name)`` does.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Dict, List, Tuple

from edgekit.errors import InputError

# name -> ("module:function", recipe family)
BUILTIN: Dict[str, Tuple[str, str]] = {
    "resnet18": ("edgekit.models.resnet:resnet18", "classifier"),
    "resnet34": ("edgekit.models.resnet:resnet34", "classifier"),
    "resnet50": ("edgekit.models.resnet:resnet50", "classifier"),
    "mobilenetv2": ("edgekit.models.mobilenetv2:mobilenet_v2", "classifier"),
    "vit-tiny": ("edgekit.models.vit:vit_tiny", "vit"),
    "vit-b16": ("edgekit.models.vit:vit_b16", "vit"),
    "yolo-tiny": ("edgekit.models.yolo:yolo_tiny", "detector"),
}


def names() -> List[str]:
    """The built-in model names, sorted."""
    return sorted(BUILTIN)


def factory(name: str) -> Callable[..., object]:
    """The constructor of built-in model ``name`` (imports its module, hence torch)."""
    key = name.lower().replace("_", "-")
    if key not in BUILTIN:
        close = difflib.get_close_matches(key, list(BUILTIN), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "built-in models: " + ", ".join(names())
        raise InputError(f"unknown built-in model '{name}'", hint=hint)
    mod, fn = BUILTIN[key][0].split(":")
    return getattr(importlib.import_module(mod), fn)


def recipe_family(name: str) -> str:
    """The exporter recipe family (``exporters/<family>.toml``) of built-in model ``name``."""
    return BUILTIN[name.lower().replace("_", "-")][1]


def create(name: str, **kwargs: object):
    """Instantiate a built-in model (randomly initialised, eval mode)."""
    model = factory(name)(**kwargs)
    model.eval()
    return model
