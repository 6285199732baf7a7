"""Report dataclasses shared by the torch and ONNX sparsity passes and the checker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple


@dataclass
class LayerSparsity:
    """One weight tensor as seen by a sparsity pass or by the N:M checker.

    ``status`` is ``"ok"`` (pattern holds / mask applied), ``"violates"`` (checker: at least one group
    has more than N non-zeros) or ``"skipped"`` (pattern not applicable; ``reason`` says why).
    """

    name: str
    op: str
    shape: Tuple[int, ...]
    axis: Optional[int]            # reduction axis the groups run along (in the stored layout)
    status: str
    reason: str = ""
    groups: int = 0
    bad_groups: int = 0
    zero_fraction: float = 0.0
    source: str = ""               # how the weight was reached (initializer, DequantizeLinear(int8), Transpose, ...)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class SparsityReport:
    """Per-layer results plus totals; ``pattern`` is e.g. ``"2:4"`` or ``"global-magnitude"``."""

    pattern: str
    layers: List[LayerSparsity] = field(default_factory=list)

    @property
    def ok(self) -> List[LayerSparsity]:
        return [layer for layer in self.layers if layer.status == "ok"]

    @property
    def skipped(self) -> List[LayerSparsity]:
        return [layer for layer in self.layers if layer.status == "skipped"]

    @property
    def violating(self) -> List[LayerSparsity]:
        return [layer for layer in self.layers if layer.status == "violates"]

    @property
    def compliant(self) -> bool:
        """True when at least one layer was checked and none violates the pattern."""
        return bool(self.ok) and not self.violating

    def layer(self, name: str) -> LayerSparsity:
        for item in self.layers:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "pattern": self.pattern,
            "compliant": self.compliant,
            "layers_ok": len(self.ok),
            "layers_violating": len(self.violating),
            "layers_skipped": len(self.skipped),
            "layers": [layer.to_dict() for layer in self.layers],
        }
