"""N:M sparsity on ONNX graphs, without torch: a checker and a one-shot pass over initializers.

Layouts (the reduction axis the N:M groups run along, in the *stored* weight):

* Conv ``W [K, C/g, *k]``: axis 1, dense convs (group=1) only.
* Gemm ``B``: ``transB=1`` stores ``[N, K]`` -> axis 1; ``transB=0`` stores ``[K, N]`` -> axis 0.
* MatMul ``A @ B`` with constant ``B [..., K, N]``: axis -2. (A constant ``A [..., M, K]``: axis -1.)

The checker follows a weight through ``DequantizeLinear`` (then a zero is ``q == zero_point`` in the
stored int8 values, which is what TensorRT sees) and through ``Transpose`` / ``Identity`` / ``Cast``
(the axis is mapped back through the permutation).
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import InputError
from edgekit.sparsity.nm import nm_mask, nm_violations, validate_nm
from edgekit.sparsity.report import LayerSparsity, SparsityReport

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        self.np = numpy_helper
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.producer = {}
        self.consumers: Dict[str, List[object]] = {}
        for node in g.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self.nodes = list(g.node)

    def const(self, name: str) -> Optional[np.ndarray]:
        if name in self.inits:
            return self.np.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return self.np.to_array(a.t)
        return None

    def _quantize(self, qnode) -> Optional[np.ndarray]:
        """Integer values a QuantizeLinear with constant inputs produces (round half to even, saturate)."""
        x = self.const(qnode.input[0])
        s = self.const(qnode.input[1]) if len(qnode.input) > 1 else None
        if x is None or s is None:
            return None
        zp = self.const(qnode.input[2]) if len(qnode.input) > 2 and qnode.input[2] else None
        zdt = np.asarray(zp).dtype if zp is not None else np.dtype(np.uint8)
        s = np.asarray(s, dtype=np.float32)
        z = np.asarray(zp, dtype=np.int64) if zp is not None else np.zeros((), np.int64)
        if s.size > 1:
            axis = int(_attr(qnode, "axis", 1)) % x.ndim
            shape = [1] * x.ndim
            shape[axis] = -1
            s, z = s.reshape(shape), z.reshape(shape) if z.size > 1 else z
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.rint(np.asarray(x, np.float32) / s) + z
        info = np.iinfo(zdt)
        return np.clip(np.nan_to_num(q), info.min, info.max).astype(zdt)

    def nonzero_of(self, name: str, depth: int = 0) -> Optional[Tuple[np.ndarray, str]]:
        """Non-zero mask of a constant weight tensor as the consuming op sees it, plus its path."""
        if depth > 8:
            return None
        value = self.const(name)
        if value is not None:
            return np.asarray(value) != 0, "initializer"
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            q = self.const(node.input[0])
            zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            how = "DequantizeLinear"
            if q is None:
                # float weight -> QuantizeLinear -> DequantizeLinear: TensorRT folds the Q into int8
                # weights, so judge the values that quantization produces (small weights round to 0)
                qnode = self.producer.get(node.input[0])
                if qnode is None or qnode.op_type != "QuantizeLinear":
                    return None
                q = self._quantize(qnode)
                if q is None:
                    return None
                zp = self.const(qnode.input[2]) if len(qnode.input) > 2 and qnode.input[2] else None
                how = "QuantizeLinear->DequantizeLinear"
            if zp is None or np.asarray(zp).size == 1:
                zero = np.asarray(zp).reshape(()) if zp is not None else np.zeros((), q.dtype)
                return q != zero, f"{how}({q.dtype})"
            axis = int(_attr(node, "axis", 1)) % q.ndim
            shape = [1] * q.ndim
            shape[axis] = -1
            return q != np.asarray(zp).reshape(shape), f"{how}({q.dtype}, per-channel)"
        if node.op_type in ("Identity", "Cast"):
            inner = self.nonzero_of(node.input[0], depth + 1)
            return None if inner is None else (inner[0], f"{node.op_type}<-{inner[1]}")
        if node.op_type == "Transpose":
            inner = self.nonzero_of(node.input[0], depth + 1)
            if inner is None:
                return None
            perm = _attr(node, "perm", None)
            nz = np.transpose(inner[0], perm) if perm is not None else np.transpose(inner[0])
            return nz, f"Transpose<-{inner[1]}"
        return None


def _layer_name(node) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


def _weight_slots(node, g: _Graph) -> List[Tuple[int, int, Optional[str]]]:
    """(input index, reduction axis in the op's view, skip reason) for each constant weight of a node."""
    op = node.op_type
    if op == "Conv":
        group = int(_attr(node, "group", 1))
        why = None
        if group != 1:
            why = f"grouped/depthwise conv (group={group}): TensorRT's 2:4 kernels cover dense convs only"
        return [(1, 1, why)]
    if op == "Gemm":
        return [(1, 1 if int(_attr(node, "transB", 0)) else 0, None)]
    if op == "MatMul":
        slots = [(1, -2, None)]
        if g.nonzero_of(node.input[0]) is not None:
            slots.append((0, -1, None))
        return slots
    return []


def _weight_uses(g: _Graph):
    """``(node, input index, reduction axis, skip reason or None)`` for every weight slot of every
    op N:M applies to (an index the node does not have is left out)."""
    for node in g.nodes:
        if node.op_type not in WEIGHT_OPS:
            continue
        for idx, axis, why in _weight_slots(node, g):
            if idx < len(node.input):
                yield node, idx, axis, why


def check_nm_onnx(model, n: int = 2, m: int = 4) -> SparsityReport:
    """Per Conv/Gemm/MatMul constant weight: does it hold the N:M pattern as TensorRT reads it?

    ``model`` is a ModelProto or a path. Weights computed at run time are not reported.
    """
    validate_nm(n, m)
    if not hasattr(model, "graph"):
        from edgekit.graph.io import load_model

        model = load_model(model)
    g = _Graph(model)
    report = SparsityReport(pattern=f"{n}:{m}")
    for node, idx, axis, why in _weight_uses(g):
        found = g.nonzero_of(node.input[idx])
        if found is None:
            continue
        nz, source = found
        name = _layer_name(node) + ("" if idx == 1 else f"[input{idx}]")
        zero_frac = float(1.0 - nz.mean()) if nz.size else 0.0
        if nz.ndim < 2:
            report.layers.append(LayerSparsity(name, node.op_type, tuple(nz.shape), None, "skipped",
                                               "weight has fewer than 2 dims", zero_fraction=zero_frac,
                                               source=source))
            continue
        ax = axis % nz.ndim
        if why is None and nz.shape[ax] % m:
            why = f"reduction dim {nz.shape[ax]} (axis {ax}) not a multiple of {m}"
        if why is not None:
            report.layers.append(LayerSparsity(name, node.op_type, tuple(nz.shape), ax, "skipped", why,
                                               zero_fraction=zero_frac, source=source))
            continue
        groups, bad = nm_violations(nz, n, m, axis=ax)
        report.layers.append(LayerSparsity(name, node.op_type, tuple(nz.shape), ax,
                                           "ok" if bad == 0 else "violates", groups=groups, bad_groups=bad,
                                           zero_fraction=zero_frac, source=source))
    return report


def apply_nm_onnx(model, n: int = 2, m: int = 4, exclude: Sequence[str] = ()):
    """One-shot N:M magnitude sparsity on the weight initializers of Conv / Gemm / MatMul.

    Returns ``(new_model, report)``; the input model is not modified. Only weights stored directly as
    float initializers are rewritten. Skipped, with a reason in the report: grouped/depthwise convs,
    reduction dims not a multiple of ``m``, weights behind DequantizeLinear (the model is already
    quantized: apply 2:4 before quantizing), weights produced at run time, and initializers shared by
    ops that would group them along different axes.
    """
    from onnx import numpy_helper

    validate_nm(n, m)
    if not hasattr(model, "graph"):
        raise InputError("apply_nm_onnx expects an onnx.ModelProto", hint="load it with edgekit.graph.io.load_model")
    out = copy.deepcopy(model)
    g = _Graph(out)
    report = SparsityReport(pattern=f"{n}:{m}")
    excluded = set(exclude)

    # initializer name -> [(node, axis, skip reason)]
    uses: Dict[str, List[Tuple[object, int, Optional[str]]]] = {}
    for node, idx, axis, why in _weight_uses(g):
        name = node.input[idx]
        lname = _layer_name(node) + ("" if idx == 1 else f"[input{idx}]")
        if name not in g.inits:
            found = g.nonzero_of(name)
            if found is None:
                continue  # activation input, not a weight
            reason = ("weight is behind DequantizeLinear (already quantized): apply N:M before quantizing"
                      if "DequantizeLinear" in found[1] else
                      f"weight reaches the op through {found[1]}: only plain initializers are rewritten")
            report.layers.append(LayerSparsity(lname, node.op_type, tuple(found[0].shape), None, "skipped",
                                               reason, source=found[1]))
            continue
        if _layer_name(node) in excluded:
            why = "excluded by request"
        uses.setdefault(name, []).append((node, axis, why, lname))

    for init_name, entries in uses.items():
        tensor = g.inits[init_name]
        w = numpy_helper.to_array(tensor)
        lname = entries[0][3] if len(entries) == 1 else f"{init_name} (shared by {len(entries)} ops)"
        op = entries[0][0].op_type
        reasons = [e[2] for e in entries if e[2]]
        if not np.issubdtype(w.dtype, np.floating):
            reasons.append(f"weight dtype {w.dtype} is not float")
        if w.ndim < 2:
            reasons.append("weight has fewer than 2 dims")
        axes = {e[1] % max(w.ndim, 1) for e in entries}
        if len(axes) > 1:
            reasons.append("initializer shared by ops that read it along different axes")
        ax = next(iter(axes))
        if not reasons and w.shape[ax] % m:
            reasons.append(f"reduction dim {w.shape[ax]} (axis {ax}) not a multiple of {m}")
        if reasons:
            report.layers.append(LayerSparsity(lname, op, tuple(w.shape), ax, "skipped", "; ".join(reasons),
                                               zero_fraction=float((w == 0).mean()) if w.size else 0.0,
                                               source="initializer"))
            continue
        keep = nm_mask(w, n, m, axis=ax)
        new = np.where(keep, w, np.zeros((), w.dtype)).astype(w.dtype)
        tensor.CopyFrom(numpy_helper.from_array(new, init_name))
        groups, _ = nm_violations(new != 0, n, m, axis=ax)
        report.layers.append(LayerSparsity(lname, op, tuple(w.shape), ax, "ok", groups=groups,
                                           zero_fraction=float((new == 0).mean()), source="initializer"))
    return out, report
