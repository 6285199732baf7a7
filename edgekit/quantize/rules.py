"""TensorRT's QDQ placement rules, as a checker over an ONNX graph.

TensorRT (explicit quantization) reads QuantizeLinear/DequantizeLinear pairs as "this tensor is
INT8 here" and then fuses around them. It runs fast only when the pairs sit where its fusions
expect them, so the rules below describe *placement*, not just validity:

* ``compute-inputs``  both the data input and the weight of Conv/ConvTranspose/Gemm/MatMul come
  through a DequantizeLinear (TensorRT picks an INT8 kernel only when both are INT8).
* ``activation-symmetric``  activations are per-tensor, INT8, zero point 0 (TensorRT has no
  asymmetric INT8; a uint8 / non-zero zero point is rejected or emulated slowly).
* ``weight-per-channel``  weights are per-channel on the output-channel axis (0 for Conv, 1 for
  ConvTranspose, the N axis for Gemm/MatMul), symmetric INT8 (zero point 0).
* ``bias-float``  biases stay float: TensorRT quantizes the bias itself from the input/weight scales.
* ``qdq-placement``  no QDQ on op outputs or around BatchNormalization / activations: a DQ that
  feeds BN or ReLU (or is a graph output) blocks the Conv+BN+ReLU fusion.
* ``residual-add``  in a residual Add, the skip input is quantized and the branch coming out of the
  conv is not, so TensorRT can fuse Conv+Add(+ReLU) into one INT8 kernel.
* ``concat-scales``  all QDQ around a Concat (its inputs and its output) share one scale, else
  TensorRT has to re-quantize each input.
* ``opset``  QDQ with a per-channel ``axis`` needs opset >= 13.
* ``thin-conv`` (warning)  a conv/linear with fewer than ``min_channels`` input or output channels is
  quantized: it rarely gains from INT8 and is usually left in float.
* ``no-qdq``  the model has no QDQ nodes at all.

Ops the table does not know (custom domains) are reported in ``QdqReport.skipped``, never judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgekit.quantize.graphutil import GraphView, attr, weight_output_axis

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# A DQ feeding one of these sits "around BN/ReLU": TensorRT wants them fused into the conv instead.
NO_QDQ_AROUND = frozenset({
    "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Elu", "Selu", "Softplus", "Mish", "Gelu",
})
# Paths a conv branch may take into a residual Add and still fuse (BN folds into the conv).
_BRANCH_THROUGH = ("BatchNormalization",)

RULES: Dict[str, str] = {
    "compute-inputs": "inputs of Conv/ConvTranspose/Gemm/MatMul are quantized (data and weight)",
    "activation-symmetric": "activations per-tensor symmetric INT8 (zero point 0)",
    "weight-per-channel": "weights per-channel symmetric INT8 on the output-channel axis",
    "bias-float": "bias stays float (no DequantizeLinear on a bias)",
    "qdq-placement": "no QDQ on op outputs or around BatchNormalization/activations",
    "residual-add": "residual Add: skip input quantized, conv branch not",
    "concat-scales": "one scale for all QDQ around a Concat",
    "opset": "opset >= 13 for QDQ with per-channel axis",
    "thin-conv": "convs with fewer than min_channels channels are left float (warning)",
    "no-qdq": "the model holds QDQ nodes",
}


@dataclass
class Violation:
    rule: str
    node: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def to_dict(self) -> dict:
        return {"rule": self.rule, "node": self.node, "message": self.message, "severity": self.severity}


@dataclass
class QdqReport:
    violations: List[Violation] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {"node", "op_type", "reason"}
    quantized_nodes: List[str] = field(default_factory=list)
    float_nodes: List[str] = field(default_factory=list)
    qdq_pairs: int = 0

    @property
    def errors(self) -> List[Violation]:
        return [v for v in self.violations if v.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_rule(self) -> Dict[str, List[Violation]]:
        out: Dict[str, List[Violation]] = {}
        for v in self.violations:
            out.setdefault(v.rule, []).append(v)
        return out

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "violations": [v.to_dict() for v in self.violations],
            "counts": {r: len(vs) for r, vs in self.by_rule().items()},
            "skipped": list(self.skipped),
            "quantized_nodes": list(self.quantized_nodes),
            "float_nodes": list(self.float_nodes),
            "qdq_pairs": self.qdq_pairs,
        }


def channels(view: GraphView, node) -> Optional[tuple]:
    """(in_channels, out_channels) of a compute op from its weight, or None when not constant."""
    w = _weight_value(view, node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return None
    op = node.op_type
    g = int(attr(node, "group", 1) or 1)
    if op == "Conv" and w.ndim >= 2:
        return int(w.shape[1]) * g, int(w.shape[0])
    if op == "ConvTranspose" and w.ndim >= 2:
        return int(w.shape[0]), int(w.shape[1]) * g
    if op == "Gemm" and w.ndim == 2:
        return (int(w.shape[1]), int(w.shape[0])) if int(attr(node, "transB", 0)) else (int(w.shape[0]), int(w.shape[1]))
    if op == "MatMul" and w.ndim >= 2:
        return int(w.shape[-2]), int(w.shape[-1])
    return None


def is_thin(view: GraphView, node, min_channels: int) -> bool:
    ch = channels(view, node)
    return ch is not None and min(ch) < min_channels


def _weight_value(view: GraphView, name: str) -> Optional[np.ndarray]:
    """A weight's float (or int8) value whether it is a constant, DQ(const) or DQ(Q(const))."""
    v = view.const(name)
    if v is not None:
        return v
    p = view.producer.get(name)
    if p is not None and p.op_type == "DequantizeLinear":
        src = p.input[0]
        v = view.const(src)
        if v is not None:
            return v
        q = view.producer.get(src)
        if q is not None and q.op_type == "QuantizeLinear":
            return view.const(q.input[0])
    return None


def _dq_source_is_const(view: GraphView, dq) -> bool:
    src = dq.input[0]
    if view.is_const(src):
        return True
    q = view.producer.get(src)
    return q is not None and q.op_type == "QuantizeLinear" and view.is_const(q.input[0])


def _from_dq(view: GraphView, name: str) -> bool:
    p = view.producer.get(name)
    return p is not None and p.op_type == "DequantizeLinear"


def _zero_point(view: GraphView, node) -> tuple:
    """(dtype name, values) of a Q/DQ zero point; absent means uint8 zeros per the ONNX spec."""
    if len(node.input) > 2 and node.input[2]:
        zp = view.const(node.input[2])
        if zp is None:
            return "unknown", None
        return str(zp.dtype), zp
    if node.op_type == "QuantizeLinear":
        return "uint8", np.zeros(1, np.uint8)
    src = view.const(node.input[0])
    if src is not None:
        return str(src.dtype), np.zeros(1, src.dtype)
    q = view.producer.get(node.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return _zero_point(view, q)
    return "uint8", np.zeros(1, np.uint8)


def _scale(view: GraphView, node) -> Optional[np.ndarray]:
    return view.const(node.input[1]) if len(node.input) > 1 else None


def conv_branch(view: GraphView, name: str):
    """The compute node a tensor comes from through BN only (a fusable conv branch), else None."""
    p = view.producer.get(_unwrap_dq(view, name))
    while p is not None and p.op_type in _BRANCH_THROUGH:
        p = view.producer.get(p.input[0])
    if p is not None and p.op_type in COMPUTE_OPS:
        return p
    return None


def tensor_depths(view: GraphView) -> Dict[str, int]:
    """Longest path (in nodes) from the graph inputs to each tensor: tells a main branch from a skip."""
    depth: Dict[str, int] = {}
    for n in view.nodes:  # ONNX graphs are topologically sorted
        d = max((depth.get(i, 0) for i in n.input if i), default=0)
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):  # QDQ must not change the answer
            d += 1
        for o in n.output:
            depth[o] = d
    return depth


def residual_skip_index(view: GraphView, add, depth: Optional[Dict[str, int]] = None) -> Optional[int]:
    """For a residual Add, the input index that should carry the QDQ (the skip), else None.

    Exactly one conv branch: the other input is the skip. Two conv branches (a downsample
    projection): the shallower one is the skip, the deeper main branch fuses with the Add.
    """
    if add.op_type != "Add" or len(add.input) != 2 or any(view.is_const(i) for i in add.input):
        return None
    b = [conv_branch(view, i) for i in add.input]
    if b[0] is None and b[1] is None:
        return None
    if b[0] is not None and b[1] is not None:
        depth = depth or tensor_depths(view)
        d0, d1 = depth.get(add.input[0], 0), depth.get(add.input[1], 0)
        return 0 if d0 < d1 else 1
    return 1 if b[0] is not None else 0


def _skip_input_name(view: GraphView, add) -> Optional[str]:
    k = residual_skip_index(view, add)
    return None if k is None else add.input[k]


def _unwrap_dq(view: GraphView, name: str) -> str:
    """The tensor a DQ output stands for (the input of its Q), so rules see through QDQ pairs."""
    p = view.producer.get(name)
    if p is not None and p.op_type == "DequantizeLinear":
        q = view.producer.get(p.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            return q.input[0]
    return name


def check_qdq(model, min_channels: int = 16, exclude: Sequence[str] = ()) -> List[Violation]:
    """All placement-rule violations (errors and warnings) of a QDQ model; [] means TensorRT-ready."""
    return inspect_qdq(model, min_channels=min_channels, exclude=exclude).violations


def inspect_qdq(model, min_channels: int = 16, exclude: Sequence[str] = ()) -> QdqReport:
    """Check every rule in :data:`RULES` and return the full report (violations, skips, counts)."""
    view = GraphView(model)
    rep = QdqReport()
    qs = [n for n in view.nodes if n.op_type == "QuantizeLinear"]
    dqs = [n for n in view.nodes if n.op_type == "DequantizeLinear"]
    rep.qdq_pairs = len(dqs)
    for n in view.nodes:
        if n.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            rep.skipped.append({"node": view.node_name(n), "op_type": f"{n.domain}::{n.op_type}",
                                "reason": "operator outside the ONNX domain: the rules do not cover it"})
    if not qs and not dqs:
        rep.violations.append(Violation("no-qdq", "<graph>", "the model holds no QuantizeLinear/DequantizeLinear nodes"))
        return rep
    v = rep.violations
    if view.opset() < 13:
        v.append(Violation("opset", "<graph>", f"opset {view.opset()} < 13: per-channel QDQ needs opset 13"))
    weight_dqs = {id(d) for d in dqs if _dq_source_is_const(view, d)}
    weight_qs = {id(q) for q in qs if view.is_const(q.input[0])}
    _check_activation_qdq(view, [n for n in qs + dqs if id(n) not in weight_dqs | weight_qs], v)
    _check_placement(view, [d for d in dqs if id(d) not in weight_dqs], v)
    _check_compute_ops(view, rep, min_channels, set(exclude))
    _check_residual_adds(view, v)
    _check_concat_scales(view, weight_qs, v)
    return rep


def _check_activation_qdq(view: GraphView, nodes, v: List[Violation]) -> None:
    """activation-symmetric: every activation Q/DQ is per-tensor int8 with zero point 0."""
    for n in nodes:
        s = _scale(view, n)
        dt, zp = _zero_point(view, n)
        name = view.node_name(n)
        if s is None or s.size != 1:
            v.append(Violation("activation-symmetric", name, "activation scale must be one constant scalar (per-tensor)"))
        if dt != "int8":
            v.append(Violation("activation-symmetric", name, f"activation zero point type is {dt}, TensorRT needs int8"))
        elif zp is not None and np.any(zp != 0):
            v.append(Violation("activation-symmetric", name, f"activation zero point is {zp.ravel()[:4].tolist()}, must be 0"))


def _check_placement(view: GraphView, act_dqs, v: List[Violation]) -> None:
    """qdq-placement: what activation DQs feed, graph outputs, and QDQ on compute/BN outputs."""
    for d in act_dqs:
        name = view.node_name(d)
        if d.output[0] in view.graph_outputs:
            v.append(Violation("qdq-placement", name, "a DequantizeLinear output is a graph output (QDQ on an op output)"))
        for c in view.consumers.get(d.output[0], []):
            if c.op_type in NO_QDQ_AROUND:
                v.append(Violation("qdq-placement", name,
                                   f"QDQ feeds {c.op_type} '{view.node_name(c)}': keep QDQ off BN/activations so they fuse"))
        q = view.producer.get(d.input[0])
        src = view.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if src is not None and src.op_type in COMPUTE_OPS + ("BatchNormalization",):
            cons = view.consumers.get(d.output[0], [])
            ok_use = [c for c in cons if c.op_type in COMPUTE_OPS
                      # a residual Add is judged by the residual-add rule (skip vs branch)
                      or (c.op_type == "Add" and _skip_input_name(view, c) is not None)]
            if cons and not ok_use:
                v.append(Violation("qdq-placement", name,
                                   f"QDQ on the output of {src.op_type} '{view.node_name(src)}' that feeds no quantized op"))


def _check_compute_ops(view: GraphView, rep: QdqReport, min_channels: int, excluded: set) -> None:
    """compute-inputs, weight-per-channel, bias-float, thin-conv; sorts ops into quantized / float."""
    v = rep.violations
    for n in view.nodes:
        if n.op_type not in COMPUTE_OPS or len(n.input) < 2:
            continue
        name = view.node_name(n)
        q_in = [_from_dq(view, n.input[0]), _from_dq(view, n.input[1])]
        thin = is_thin(view, n, min_channels)
        if any(q_in):
            rep.quantized_nodes.append(name)
        else:
            rep.float_nodes.append(name)
        if thin and any(q_in):
            ch = channels(view, n)
            v.append(Violation("thin-conv", name, f"{n.op_type} with channels {ch} (< {min_channels}) is quantized",
                               severity="warning"))
        if any(q_in) and not all(q_in):
            which = "data" if not q_in[0] else "weight"
            v.append(Violation("compute-inputs", name, f"only one input is quantized: the {which} input is float"))
        elif not any(q_in) and not thin and n.name not in excluded:
            v.append(Violation("compute-inputs", name, f"{n.op_type} runs in float: its inputs have no QDQ"))
        if len(n.input) > 2 and n.input[2] and _from_dq(view, n.input[2]):
            v.append(Violation("bias-float", name, "bias comes through a DequantizeLinear; leave it float"))
        if q_in[1]:
            _check_weight(view, n, v)


def _check_residual_adds(view: GraphView, v: List[Violation]) -> None:
    """residual-add: the skip input of a residual Add is quantized, the conv branch is not."""
    depth = tensor_depths(view)
    for n in view.nodes:
        k = residual_skip_index(view, n, depth)
        if k is None:
            continue
        name = view.node_name(n)
        branch_in = n.input[1 - k]
        if _from_dq(view, branch_in) and _from_dq(view, n.input[k]):
            v.append(Violation("residual-add", name, "both Add inputs are quantized: leave the conv branch float so Conv+Add fuse"))
        elif _from_dq(view, branch_in):
            v.append(Violation("residual-add", name, "the conv branch input is quantized and the skip is not (swap them)"))
        else:
            conv = conv_branch(view, branch_in)
            if conv is not None and _from_dq(view, conv.input[0]) and not _from_dq(view, n.input[k]):
                v.append(Violation("residual-add", name,
                                   f"skip input '{n.input[k]}' is float while conv '{view.node_name(conv)}' is INT8: quantize the skip"))


def _check_concat_scales(view: GraphView, weight_qs: set, v: List[Violation]) -> None:
    """concat-scales: the activation Qs around a Concat (its inputs and output) share one scale."""
    for n in view.nodes:
        if n.op_type != "Concat":
            continue
        scales = set()
        for t in list(n.input) + list(n.output):
            for c in view.consumers.get(t, []):
                if c.op_type == "QuantizeLinear" and id(c) not in weight_qs:
                    s = _scale(view, c)
                    if s is not None and s.size == 1:
                        scales.add(float(s.ravel()[0]))
        if len(scales) > 1:
            v.append(Violation("concat-scales", view.node_name(n),
                               f"QDQ around the Concat use {len(scales)} different scales {sorted(scales)[:4]}"))


def _check_weight(view: GraphView, node, v: List[Violation]) -> None:
    name = view.node_name(node)
    dq = view.producer[node.input[1]]
    if not _dq_source_is_const(view, dq):
        return  # an activation used as a "weight" (MatMul of two activations): activation rules apply
    w = _weight_value(view, node.input[1])
    axis = weight_output_axis(node, w.ndim if w is not None else 0)
    s = _scale(view, dq)
    dt, zp = _zero_point(view, dq)
    if dt != "int8":
        v.append(Violation("weight-per-channel", name, f"weight zero point type is {dt}, TensorRT needs int8"))
    elif zp is not None and np.any(zp != 0):
        v.append(Violation("weight-per-channel", name, "weight zero point is not 0 (asymmetric weights)"))
    if w is None or axis is None or s is None:
        return
    n_out = int(w.shape[axis])
    if s.size == 1:
        if n_out > 1:
            v.append(Violation("weight-per-channel", name, f"weight is per-tensor; use per-channel on axis {axis} ({n_out} channels)"))
        return
    dq_axis = int(attr(dq, "axis", 1))
    if dq_axis < 0:
        dq_axis += w.ndim
    if dq_axis != axis or s.size != n_out:
        v.append(Violation("weight-per-channel", name,
                           f"weight quantized per-channel on axis {dq_axis} ({s.size} scales); the output-channel axis is {axis} ({n_out})"))
