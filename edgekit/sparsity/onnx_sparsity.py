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
from onnx import numpy_helper

from edgekit.errors import InputError
from edgekit.graph.io import load_model
from edgekit.graph.view import GraphView, attr
from edgekit.sparsity.nm import nm_mask, nm_violations, validate_nm
from edgekit.sparsity.report import LayerSparsity, SparsityReport

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _quantized(g: GraphView, qnode) -> Optional[np.ndarray]:
    """Integer values a QuantizeLinear with constant inputs produces (round half to even, saturate)."""
    x = g.const(qnode.input[0])
    s = g.const(qnode.input[1]) if len(qnode.input) > 1 else None
    if x is None or s is None:
        return None
    zp = g.const(qnode.input[2]) if len(qnode.input) > 2 and qnode.input[2] else None
    zdt = np.asarray(zp).dtype if zp is not None else np.dtype(np.uint8)
    s = np.asarray(s, dtype=np.float32)
    z = np.asarray(zp, dtype=np.int64) if zp is not None else np.zeros((), np.int64)
    if s.size > 1:
        axis = int(attr(qnode, "axis", 1)) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape) if z.size > 1 else z
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(np.asarray(x, np.float32) / s) + z
    info = np.iinfo(zdt)
    return np.clip(np.nan_to_num(q), info.min, info.max).astype(zdt)


def _nonzero(g: GraphView, name: str, depth: int = 0) -> Optional[Tuple[np.ndarray, str]]:
    """Non-zero mask of a constant weight tensor as the consuming op sees it, plus its path."""
    if depth > 8:
        return None
    value = g.const(name)
    if value is not None:
        return np.asarray(value) != 0, "initializer"
    node = g.producer.get(name)
    if node is None:
        return None
    if node.op_type == "DequantizeLinear":
        return _dequantized_nonzero(g, node)
    if node.op_type in ("Identity", "Cast"):
        inner = _nonzero(g, node.input[0], depth + 1)
        return None if inner is None else (inner[0], f"{node.op_type}<-{inner[1]}")
    if node.op_type == "Transpose":
        inner = _nonzero(g, node.input[0], depth + 1)
        if inner is None:
            return None
        perm = attr(node, "perm", None)
        nz = np.transpose(inner[0], perm) if perm is not None else np.transpose(inner[0])
        return nz, f"Transpose<-{inner[1]}"
    return None


def _dequantized_nonzero(g: GraphView, node) -> Optional[Tuple[np.ndarray, str]]:
    """Non-zero mask behind a DequantizeLinear: a zero is ``q == zero_point`` in the stored integers."""
    q = g.const(node.input[0])
    zp = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    how = "DequantizeLinear"
    if q is None:
        # float weight -> QuantizeLinear -> DequantizeLinear: TensorRT folds the Q into int8
        # weights, so judge the values that quantization produces (small weights round to 0)
        qnode = g.producer.get(node.input[0])
        if qnode is None or qnode.op_type != "QuantizeLinear":
            return None
        q = _quantized(g, qnode)
        if q is None:
            return None
        zp = g.const(qnode.input[2]) if len(qnode.input) > 2 and qnode.input[2] else None
        how = "QuantizeLinear->DequantizeLinear"
    if zp is None or np.asarray(zp).size == 1:
        zero = np.asarray(zp).reshape(()) if zp is not None else np.zeros((), q.dtype)
        return q != zero, f"{how}({q.dtype})"
    axis = int(attr(node, "axis", 1)) % q.ndim
    shape = [1] * q.ndim
    shape[axis] = -1
    return q != np.asarray(zp).reshape(shape), f"{how}({q.dtype}, per-channel)"


def _weight_slots(node, g: GraphView) -> List[Tuple[int, int, Optional[str]]]:
    """(input index, reduction axis in the op's view, skip reason) for each constant weight of a node."""
    op = node.op_type
    if op == "Conv":
        group = int(attr(node, "group", 1))
        why = None
        if group != 1:
            why = f"grouped/depthwise conv (group={group}): TensorRT's 2:4 kernels cover dense convs only"
        return [(1, 1, why)]
    if op == "Gemm":
        return [(1, 1 if int(attr(node, "transB", 0)) else 0, None)]
    if op == "MatMul":
        slots = [(1, -2, None)]
        if _nonzero(g, node.input[0]) is not None:
            slots.append((0, -1, None))
        return slots
    return []


def _weight_uses(g: GraphView):
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
        model = load_model(model)
    g = GraphView(model)
    report = SparsityReport(pattern=f"{n}:{m}")
    for node, idx, axis, why in _weight_uses(g):
        found = _nonzero(g, node.input[idx])
        if found is None:
            continue
        nz, source = found
        name = g.node_name(node) + ("" if idx == 1 else f"[input{idx}]")
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
    validate_nm(n, m)
    if not hasattr(model, "graph"):
        raise InputError("apply_nm_onnx expects an onnx.ModelProto", hint="load it with edgekit.graph.io.load_model")
    out = copy.deepcopy(model)
    g = GraphView(out)
    report = SparsityReport(pattern=f"{n}:{m}")
    excluded = set(exclude)

    # initializer name -> [(node, axis, skip reason)]
    uses: Dict[str, List[Tuple[object, int, Optional[str]]]] = {}
    for node, idx, axis, why in _weight_uses(g):
        name = node.input[idx]
        lname = g.node_name(node) + ("" if idx == 1 else f"[input{idx}]")
        if name not in g.initializers:
            found = _nonzero(g, name)
            if found is None:
                continue  # activation input, not a weight
            reason = ("weight is behind DequantizeLinear (already quantized): apply N:M before quantizing"
                      if "DequantizeLinear" in found[1] else
                      f"weight reaches the op through {found[1]}: only plain initializers are rewritten")
            report.layers.append(LayerSparsity(lname, node.op_type, tuple(found[0].shape), None, "skipped",
                                               reason, source=found[1]))
            continue
        if g.node_name(node) in excluded:
            why = "excluded by request"
        uses.setdefault(name, []).append((node, axis, why, lname))

    for init_name, entries in uses.items():
        tensor = g.initializers[init_name]
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
