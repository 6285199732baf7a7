"""Exporting the ``nn.Module`` to ONNX for the mapping, and the names that tie the two together.

``export`` writes the graph the mapping starts from; the naming helpers read module scopes from
node names and metadata, normalise parameter names the exporters rewrote, and split state_dict
keys into the module that owns them.
"""

from __future__ import annotations

import ast
import io
import re
import warnings
from typing import Dict, Optional

import onnx

from edgekit.exporting import EXPORTERS as _EDGEKIT_EXPORTERS

EXPORTERS = ("legacy", "torchscript", "dynamo")


def export(module, example, exporter: str):
    """``legacy``: TorchScript exporter keeping BatchNorm nodes and parameter names (what data-free
    criteria want); ``torchscript`` / ``dynamo``: exactly what ``edgekit export`` writes (constant
    folding, BatchNorm folded into the convs, generated initializer names)."""
    import torch  # lazy: torch is optional

    module.eval()
    if exporter == "legacy":
        f = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), f, dynamo=False, opset_version=17,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                              input_names=["input"])
        return onnx.load_from_string(f.getvalue())
    return _EDGEKIT_EXPORTERS[exporter](module, [example], None, 18, ["input"], ["output"], False)


def norm_name(name: str) -> str:
    """A parameter name as the exporters spell it, without punctuation and their ``p_`` / ``b_`` /
    ``c_`` prefixes (``fc.weight`` and dynamo's ``p_fc_weight`` both give ``fc_weight``)."""
    n = re.sub(r"[^0-9A-Za-z]+", "_", name)
    for pre in ("p_", "b_", "c_"):
        if n.startswith(pre):
            n = n[len(pre):]
    return n


def node_scope(node, modules: Dict[str, object]) -> Optional[str]:
    """The qualified name of the module ``node`` was exported from, or None when unknown."""
    for p in getattr(node, "metadata_props", ()):
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                break
            for s in reversed(list(scopes)):
                if isinstance(s, str) and s in modules:
                    return s
    name = getattr(node, "name", "") or ""
    if name.startswith("/"):
        # TorchScript: one segment per module level, a container's child named "<attr>.<index>"
        # (/layer2/layer2.0/downsample/downsample.1/BatchNormalization -> layer2.0.downsample.1)
        path, last, best = "", "", None
        for seg in name.split("/")[1:-1]:
            if last and seg.startswith(last + "."):
                path += seg[len(last):]
            else:
                path = f"{path}.{seg}" if path else seg
            last = seg
            if path in modules:
                best = path
        return best
    return None


def stored_name(dg, tensor: str) -> str:
    """The stored tensor's own name (a private copy of a shared weight is ``name::node:slot``)."""
    return tensor.rsplit("::", 1)[0] if tensor in getattr(dg, "private", {}) else tensor


def owner(key: str) -> str:
    """The module that owns state_dict entry ``key`` (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``)."""
    return key.rsplit(".", 1)[0] if "." in key else ""


def common_depth(a: Optional[str], b: str) -> int:
    """How many leading module levels the qualified names ``a`` and ``b`` share."""
    if a is None:
        return 0
    pa, pb = a.split(".") if a else [], b.split(".") if b else []
    n = 0
    for x, y in zip(pa, pb):
        if x != y:
            break
        n += 1
    return n
