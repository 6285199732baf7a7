"""An ONNX graph as TensorRT would run it: a list of fused layers with the numbers a cost model
needs (MACs, activation and weight elements, channel counts, op class).

Fusion follows what TensorRT does on every release we know of: a pointwise op (activation,
BatchNorm, residual Add, scale) is folded into the convolution / GEMM / pointwise chain that
produces its input when it is that producer's only consumer; Q/DQ pairs fold into the INT8
kernels; shape plumbing (Reshape, Flatten, Squeeze, Shape arithmetic) costs nothing. An op this
table does not know is costed by the bytes it moves and reported as unmodelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from edgekit.errors import ShapeError
from edgekit.graph.flops import node_costs
from edgekit.graph.shapes import Shape, static_shapes, symbolic_batch, with_batch
from edgekit.graph.view import attr

# op_type -> op class; the one table the fusion and the cost model read
FREE = {"Constant", "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast",
        "ConstantOfShape", "Range", "QuantizeLinear", "DequantizeLinear", "Size", "NonZero"}
POINTWISE = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add", "Sub", "Div", "BatchNormalization",
             "Tanh", "Erf", "Pow", "Sqrt", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus", "Exp", "Log", "Neg",
             "Abs", "Max", "Min", "Where", "Equal", "Not", "Reciprocal", "Gelu", "Mish", "Less", "Greater",
             "And", "Or", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "ThresholdedRelu", "Celu"}
OP_CLASS = {
    "Conv": "conv", "ConvTranspose": "conv", "Gemm": "gemm", "MatMul": "gemm",
    "MaxPool": "pool", "AveragePool": "pool", "GlobalAveragePool": "pool", "GlobalMaxPool": "pool",
    "LpPool": "pool", "ReduceMean": "reduce", "ReduceSum": "reduce", "ReduceMax": "reduce", "ReduceMin": "reduce",
    "ReduceL2": "reduce", "Softmax": "reduce", "LogSoftmax": "reduce", "LayerNormalization": "reduce",
    "InstanceNormalization": "reduce", "GroupNormalization": "reduce", "ArgMax": "reduce", "TopK": "reduce",
    "Resize": "data", "Upsample": "data", "Concat": "data", "Transpose": "data", "Slice": "data", "Split": "data",
    "Pad": "data", "Gather": "data", "Tile": "data", "Expand": "data", "DepthToSpace": "data",
    "SpaceToDepth": "data", "ScatterND": "data", "GatherElements": "data", "CumSum": "data",
}
# classes whose cost is MACs on the tensor / CUDA cores (the rest are memory-bound kernels), and the
# fitted efficiency curve each uses: 1x1 convs and weight GEMMs are the same implicit-GEMM kernels
COMPUTE_CLASSES = ("conv", "conv1x1", "depthwise", "gemm", "attention")
PARAM_CLASS = {"conv": "conv", "conv1x1": "conv1x1", "gemm": "gemm", "depthwise": "depthwise", "attention": "gemm"}
FIT_CLASSES = tuple(dict.fromkeys(PARAM_CLASS.values()))


@dataclass
class Layer:
    """One fused layer. Element counts are per engine run at the estimate's batch."""

    name: str
    op: str                         # op class (see OP_CLASS, refined: conv1x1, depthwise, attention)
    nodes: List[str]
    out_shape: List[int]
    macs: int = 0
    act_elems: int = 0              # activation elements read + written
    weight_elems: int = 0
    cin: int = 0
    cout: int = 0
    groups: int = 1
    unmodelled: bool = False
    op_types: List[str] = field(default_factory=list)


def _prod(dims: Sequence[Optional[int]]) -> int:
    p = 1
    for d in dims:
        p *= int(d) if d else 1
    return p


def _resolve(model, batch: int, shapes: Optional[Dict[str, Sequence[int]]]) -> Tuple[Dict[str, Shape], set]:
    """Static shapes at ``batch`` (a symbolic batch axis is set); other symbolic dims need ``shapes``."""
    m = model
    if shapes:
        m = with_batch(model, {}, batch)
        for vi in m.graph.input:
            if vi.name in shapes:
                dims = vi.type.tensor_type.shape.dim
                for d, v in zip(dims, shapes[vi.name]):
                    d.dim_value = int(v)
    axes = symbolic_batch(m)
    if axes:
        m = with_batch(m, axes, batch)
    inits = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        bad = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if bad:
            raise ShapeError(f"input '{vi.name}' has symbolic dimensions {bad} besides the batch axis",
                             hint=f"give its shape: --shapes {vi.name}:1x3x224x224 (your sizes)")
    return static_shapes(m)


def _weight_input(name: str, inits: set, producers: Dict[str, object]) -> bool:
    """A weight tensor: an initializer, or a DequantizeLinear / Constant of one (QDQ models)."""
    if name in inits:
        return True
    p = producers.get(name)
    return p is not None and p.op_type in ("DequantizeLinear", "QuantizeLinear", "Constant", "Transpose", "Cast") and \
        all(_weight_input(i, inits, producers) for i in p.input[:1])


def fuse_layers(model, batch: int = 1, shapes: Optional[Dict[str, Sequence[int]]] = None) -> List[Layer]:
    """The model's fused layers at ``batch`` (see the module docstring)."""
    shp, known = _resolve(model, batch, shapes)
    known = set(known)
    g = model.graph
    inits = {t.name for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    users: Dict[str, int] = {}
    pw_only: Dict[str, bool] = {}   # every consumer is pointwise: conv -> Sigmoid, Mul (SiLU) fuses whole
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
            pw_only[i] = pw_only.get(i, True) and n.op_type in POINTWISE
    costs = {c.name + "|" + (c.out or ""): c for c in node_costs(model, shp, skip=known)}
    layer_of: Dict[str, Layer] = {}       # tensor name -> the layer that produced it
    layers: List[Layer] = []

    def elems(name: str) -> int:
        s = shp.get(name)
        return _prod(s) if s else 0

    for node in g.node:
        op = node.op_type
        if op in FREE or (node.output and all(o in known for o in node.output)):
            for o in node.output:  # pass-through: Reshape keeps its input's layer for fusion purposes
                if node.input and node.input[0] in layer_of and op not in ("Shape", "Constant"):
                    layer_of[o] = layer_of[node.input[0]]
            continue
        out = node.output[0] if node.output else ""
        oshape = [int(d or 1) for d in shp.get(out, ())]
        act_in = [i for i in node.input if i and not _weight_input(i, inits, producers) and i not in known]
        if op in POINTWISE:
            src = next((layer_of[i] for i in act_in if i in layer_of and (users.get(i, 0) == 1 or pw_only.get(i))),
                       None)
            if src is not None and src.op in COMPUTE_CLASSES + ("eltwise",):
                src.nodes.append(node.name)
                src.op_types.append(op)
                extra = [i for i in act_in if layer_of.get(i) is not src]
                src.act_elems += sum(elems(i) for i in extra)
                for o in node.output:
                    layer_of[o] = src
                continue
            layer = Layer(node.name, "eltwise", [node.name], oshape, op_types=[op])
            layer.act_elems = sum(elems(i) for i in act_in) + elems(out)
        elif _fold_into_neighbour(node, act_in, layer_of, g, producers):
            # Myelin / TensorRT fold head split-transposes and softmax into the attention kernels
            src = layer_of.get(act_in[0]) if act_in else None
            if src is not None:
                src.nodes.append(node.name)
                src.op_types.append(op)
                for o in node.output:
                    layer_of[o] = src
            continue
        else:
            cls = OP_CLASS.get(op)
            layer = Layer(node.name, cls or "unmodelled", [node.name], oshape, unmodelled=cls is None, op_types=[op])
            layer.act_elems = sum(elems(i) for i in act_in) + sum(elems(o) for o in node.output)
            if cls in ("conv", "gemm"):
                _weighted(layer, node, shp, inits, producers, costs.get(node.name + "|" + out))
                src = next((layer_of[i] for i in act_in if i in layer_of), None)
                if layer.op == "attention" and src is not None and src.op == "attention" and \
                        "Softmax" in src.op_types:
                    # A.V after softmax(Q.K^T): one fused multi-head-attention kernel
                    src.macs += layer.macs
                    src.nodes.append(node.name)
                    src.op_types.append(op)
                    src.act_elems += sum(elems(i) for i in act_in if layer_of.get(i) is not src) + elems(out)
                    for o in node.output:
                        layer_of[o] = src
                    continue
        layers.append(layer)
        for o in node.output:
            layer_of[o] = layer
    return layers


_FOLDABLE = {"Transpose", "Split", "Slice", "Softmax", "Gather", "Concat", "Expand"}


def _fold_into_neighbour(node, act_in: List[str], layer_of: Dict[str, Layer], g, producers) -> bool:
    """A Softmax on an attention score, or a Transpose / Split / Slice (head reshuffle) right after a
    GEMM / attention layer: TensorRT runs it inside that layer's kernels."""
    if node.op_type not in _FOLDABLE or not act_in:
        return False
    src = layer_of.get(act_in[0])
    if src is None or src.op not in ("gemm", "attention"):
        return False
    if node.op_type == "Softmax":
        return src.op == "attention"
    if node.op_type == "Concat":
        return False
    return len(act_in) == 1


def _weighted(layer: Layer, node, shp, inits, producers, cost) -> None:
    """MACs, weights, channels and the refined class of a Conv / Gemm / MatMul layer."""
    layer.macs = (cost.flops // 2) if cost is not None else 0
    w = node.input[1] if len(node.input) > 1 else ""
    ws = [int(d or 1) for d in shp.get(w, ())]
    is_weight = _weight_input(w, inits, producers)
    if is_weight:
        layer.weight_elems = _prod(ws)
    if node.op_type in ("Conv", "ConvTranspose") and len(ws) >= 3:
        groups = int(attr(node, "group", 1))
        layer.groups = groups
        layer.cout, layer.cin = ws[0], ws[1] * groups
        if node.op_type == "ConvTranspose":
            layer.cout, layer.cin = ws[1] * groups, ws[0]
        if groups > 1 and ws[1] == 1:
            layer.op = "depthwise"
        elif _prod(ws[2:]) == 1:
            layer.op = "conv1x1"
    elif len(ws) >= 2:
        trans_b = node.op_type == "Gemm" and attr(node, "transB", 0)
        layer.cin, layer.cout = (ws[-1], ws[-2]) if trans_b else (ws[-2], ws[-1])
        if not is_weight:
            layer.op = "attention"   # activation x activation (Q.K^T, A.V)
        else:
            layer.op = "gemm"
