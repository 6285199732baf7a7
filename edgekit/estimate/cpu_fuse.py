"""The kernels ONNX Runtime's CPU provider actually runs for a graph, as cost-model features.

ORT at ``ORT_ENABLE_ALL`` folds constants, drops Identity / Dropout, and fuses: Conv with a
following BatchNormalization, constant Add / Mul, a residual Add and an activation (ConvBN,
ConvAdd, ConvActivation and the NCHWc transformer's Sum fusion); MatMul with its bias Add
(Gemm / MatMulAdd), a scalar Mul / Div (MatMulScale) and a Transpose on an input (FusedMatMul);
the Erf-based GELU, the ReduceMean..Sqrt..Div LayerNorm chain and a residual Add in front of a
LayerNorm (SkipLayerNorm). Attention is not fused for the torch-style exports of our corpus
(three MatMuls and a Softmax stay separate kernels), so none is modelled.

The pass marks which nodes each kernel absorbs (handlers mark, :func:`kernels` applies), then
turns each kernel into a feature vector: a node count per class plus the work that scales its
time (padded GMACs for convolutions and GEMMs, MB moved for memory-bound ops, million elements
for transcendental ones) and, for a kernel whose bytes outgrow the L2 of the cores it runs on,
the MB beyond it (``dram.mb``) and, for convolutions and GEMMs, the share of their GMACs whose
operands come from beyond L2 (``spill.gmac``): full-size 224-px layers run far slower per MAC
than small ones. An op missing from ``OP_CLASS`` is costed by the bytes it moves with
the data-movement coefficients and reported as unmodelled, never silently free.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Set, Tuple

from edgekit.errors import InputError, ShapeError
from edgekit.graph.shapes import light_copy, static_shapes
from edgekit.graph.view import attr

ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish"}
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
REMOVED_OPS = {"Identity", "Dropout"}

# op_type -> cost class (the classes' features: see _features)
OP_CLASS: Dict[str, str] = {}
for _ops, _cls in (
    (("Add", "Sub", "Mul", "Div", "Relu", "Clip", "LeakyRelu", "PRelu", "Max", "Min", "Neg", "Abs", "Where",
      "Equal", "Less", "Greater", "Not", "And", "Or", "Sum", "Mean", "BatchNormalization", "Floor", "Ceil",
      "Round", "Sign", "Cast", "HardSigmoid", "Reciprocal", "Sqrt", "Pow", "Elu", "Selu", "Celu"), "eltwise"),
    (("Sigmoid", "Tanh", "Erf", "Exp", "Log", "Softmax", "LogSoftmax", "Gelu", "HardSwish", "Softplus",
      "Mish", "Sin", "Cos"), "transc"),
    (("LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
      "MeanVarianceNormalization"), "norm"),
    (("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool"), "pool"),
    (("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare",
      "ArgMax", "ArgMin", "TopK"), "reduce"),
    (("Transpose", "Concat", "Split", "Slice", "Gather", "Pad", "Resize", "Upsample", "Expand", "Tile",
      "DepthToSpace", "SpaceToDepth", "GatherElements", "ScatterND", "ConstantOfShape", "Range"), "move"),
    (("Conv", "ConvTranspose"), "conv"),
    (("MatMul", "Gemm"), "gemm"),
):
    for _op in _ops:
        OP_CLASS[_op] = _cls

# every feature the cost model knows (calibration fits one coefficient each, microseconds per unit)
WORK = {"conv3": "gmac", "conv1": "gmac", "convg": "gmac", "dwconv": "mb", "gemm": "gmac", "eltwise": "mb",
        "transc": "melem", "norm": "mb", "pool": "mb", "reduce": "mb", "move": "mb"}
FEATURES: Tuple[str, ...] = ("run", "kernel", "view") + tuple(f"{c}.{u}" for c, u in WORK.items()) + (
    "conv3.mb", "conv1.mb", "gemm.mb", "dwconv.gmac", "dram.mb", "spill.gmac", "par")
# kernels ORT splits over the intra-op pool pay a hand-off per run ("par"); tiny elementwise ops don't
PARALLEL = {"conv3", "conv1", "convg", "dwconv", "gemm", "norm", "pool", "transc"}
PARALLEL_BYTES = 256 * 1024
FALLBACK_L2 = 2 * 1024 * 1024
_MATMUL_CLASSES = {"conv3", "conv1", "convg", "gemm"}


def _size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    return int(text.rstrip("KMGB") or 0) * mult


@lru_cache(maxsize=1)
def _l2_instances() -> Tuple[int, ...]:
    """The size of each distinct L2 of this host (sysfs; hyperthreads sharing one count once)."""
    seen: Dict[str, int] = {}
    for d in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cache/index[0-9]*"):
        try:
            with open(os.path.join(d, "level")) as fh:
                if fh.read().strip() != "2":
                    continue
            with open(os.path.join(d, "shared_cpu_list")) as fh:
                who = fh.read().strip()
            with open(os.path.join(d, "size")) as fh:
                seen[who] = _size(fh.read())
        except (OSError, ValueError):
            continue
    return tuple(sorted(seen.values(), reverse=True))


def cache_bytes(threads: Optional[int] = None) -> int:
    """The L2 a kernel can keep its working set in when ORT runs it on ``threads`` cores (None:
    ORT's default, every core): beyond it, activations and weights stream from L3 / DRAM and a
    convolution runs well below its small-shape speed (measured here on one thread: a 64-channel
    3x3 conv at 112x112 runs ~1.5x slower per MAC than at 56x56)."""
    sizes = _l2_instances()
    n = len(sizes) if not threads else max(1, min(int(threads), len(sizes)))
    return sum(sizes[:n]) or FALLBACK_L2


@dataclass
class Kernel:
    """One kernel ORT runs: its main node, the nodes fused into it and its cost features."""

    name: str
    cls: str                     # cost class (a key of WORK, "view" or "unmodelled")
    op_type: str
    nodes: List[str]
    out_shape: List[int]
    macs: int = 0
    bytes_moved: int = 0
    features: Dict[str, float] = field(default_factory=dict)
    inputs: List[str] = field(default_factory=list)    # tensors read from outside the kernel
    outputs: List[str] = field(default_factory=list)
    channels: Tuple[int, int] = (0, 0)                  # conv (input, output) channels: NCHWc layout


def _numel(shape) -> int:
    n = 1
    for d in shape or ():
        n *= int(d) if d else 1
    return n


def _pad(n: int, block: int = 16) -> int:
    return -(-max(int(n), 1) // block) * block


class _Graph:
    """Producers, consumers and constant-ness of the tensors of one (shape-inferred) graph."""

    def __init__(self, model, shapes, known: Sequence[str]):
        g = model.graph
        self.nodes = list(g.node)
        self.shapes = shapes
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.users: Dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.const: Set[str] = {t.name for t in g.initializer} | set(known)
        self.folded: Set[int] = set()
        for n in self.nodes:  # constant folding, as ORT does before anything else
            ins = [i for i in n.input if i]
            static_shape = n.op_type == "Shape" and ins and all(self.shapes.get(ins[0]) or [None])
            if n.op_type == "Constant" or (ins and all(i in self.const for i in ins)) or static_shape:
                self.const.update(n.output)
                self.folded.add(id(n))

    def only_user(self, tensor: str):
        us = self.users.get(tensor, [])
        return us[0] if len(us) == 1 and tensor not in self.outputs else None

    def is_const(self, tensor: str) -> bool:
        return tensor in self.const

    def other_input(self, node, tensor: str) -> Optional[str]:
        rest = [i for i in node.input if i and i != tensor]
        return rest[0] if rest else None


def _absorb_chain(gr: _Graph, start, steps) -> List:
    """Follow single-user edges from ``start`` while each next node passes one of ``steps`` (in
    order, each step at most once unless repeatable); the absorbed nodes."""
    out, cur = [], start
    for ops, pred, repeat in steps:
        while True:
            nxt = gr.only_user(cur.output[0]) if cur.output else None
            if nxt is None or nxt.op_type not in ops or id(nxt) in gr.folded or not pred(nxt, cur.output[0]):
                break
            out.append(nxt)
            cur = nxt
            if not repeat:
                break
    return out


def _mark_conv(gr: _Graph, node) -> List:
    def const_other(n, t):
        o = gr.other_input(n, t)
        return o is not None and gr.is_const(o)

    def residual(n, t):
        o = gr.other_input(n, t)
        return o is not None and not gr.is_const(o) and gr.shapes.get(o) == gr.shapes.get(t)

    return _absorb_chain(gr, node, [({"BatchNormalization"}, lambda n, t: True, True),
                                    ({"Add", "Mul"}, const_other, True),
                                    ({"Add"}, residual, False),
                                    (ACTIVATIONS, lambda n, t: True, False)])


def _mark_gemm(gr: _Graph, node) -> List:
    def scalar(n, t):
        o = gr.other_input(n, t)
        return o is not None and gr.is_const(o) and _numel(gr.shapes.get(o)) == 1

    def bias(n, t):
        o = gr.other_input(n, t)
        s = gr.shapes.get(o) if o else None
        return o is not None and gr.is_const(o) and s is not None and len([d for d in s if d != 1]) <= 1

    before = []
    for i in node.input[:2]:
        p = gr.producer.get(i)
        if p is None or gr.only_user(i) is not node or id(p) in gr.folded:
            continue
        if p.op_type == "Transpose" and _swaps_last_two(attr(p, "perm")):
            before.append(p)  # FusedMatMul's transA / transB
        elif p.op_type in ("Mul", "Div") and scalar(p, p.input[0]):
            before.append(p)  # MatMulScaleFusion on an input
    after = _absorb_chain(gr, node, [({"Mul", "Div"}, scalar, False), ({"Add"}, bias, False),
                                     (ACTIVATIONS, lambda n, t: node.op_type == "Gemm", False)])
    return before + after


def _swaps_last_two(perm) -> bool:
    perm = list(perm or [])
    n = len(perm)
    return n >= 2 and perm == list(range(n - 2)) + [n - 1, n - 2]


def _mark_gelu(gr: _Graph, erf) -> Optional[List]:
    """Div(x, sqrt2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5) (any order of the two Muls)."""
    div = gr.producer.get(erf.input[0])
    if div is None or div.op_type not in ("Div", "Mul") or gr.only_user(erf.input[0]) is not erf:
        return None
    rest = _absorb_chain(gr, erf, [({"Add"}, lambda n, t: True, False), ({"Mul"}, lambda n, t: True, True)])
    return [div] + rest if len(rest) >= 2 else None


def _mark_swish(gr: _Graph, sig) -> Optional[List]:
    """x * Sigmoid(x) -> one QuickGelu kernel."""
    mul = gr.only_user(sig.output[0])
    if mul is not None and mul.op_type == "Mul" and gr.other_input(mul, sig.output[0]) == sig.input[0]:
        return [mul]
    return None


def _mark_layernorm(gr: _Graph, rm) -> Optional[List]:
    """ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div -> [Mul] -> [Add]."""
    subs = [u for u in gr.users.get(rm.output[0], []) if u.op_type == "Sub"]
    if not subs:
        return None
    sub = subs[0]
    chain = [sub]
    pows = [u for u in gr.users.get(sub.output[0], []) if u.op_type in ("Pow", "Mul")]
    if not pows:
        return None
    tail = _absorb_chain(gr, pows[0], [({"ReduceMean"}, lambda n, t: True, False), ({"Add"}, lambda n, t: True, False),
                                       ({"Sqrt"}, lambda n, t: True, False), ({"Div"}, lambda n, t: True, False),
                                       ({"Mul"}, lambda n, t: True, False), ({"Add"}, lambda n, t: True, False)])
    if len(tail) < 4:
        return None
    return chain + [pows[0]] + tail


def _mark(gr: _Graph) -> Tuple[Dict[int, List], Set[int]]:
    """``({id(main node): [absorbed nodes]}, ids of absorbed nodes)``; absorbed nodes run inside
    their main node's kernel."""
    fused: Dict[int, List] = {}
    taken: Set[int] = set()
    for n in gr.nodes:
        if id(n) in gr.folded or id(n) in taken:
            continue
        got = None
        if n.op_type == "Conv":
            got = _mark_conv(gr, n)
        elif n.op_type in ("MatMul", "Gemm"):
            got = _mark_gemm(gr, n)
        elif n.op_type == "Erf":
            got = _mark_gelu(gr, n)
        elif n.op_type == "ReduceMean":
            got = _mark_layernorm(gr, n)
        elif n.op_type == "Sigmoid":
            got = _mark_swish(gr, n)
        if got:
            got = [m for m in got if id(m) not in taken and id(m) not in gr.folded]
            fused[id(n)] = got
            taken.update(id(m) for m in got)
    # a residual Add in front of a LayerNorm runs inside it (SkipLayerNormalization)
    for n in gr.nodes:
        if n.op_type == "LayerNormalization" or (n.op_type == "ReduceMean" and len(fused.get(id(n), [])) > 4):
            p = gr.producer.get(n.input[0])
            if p is not None and p.op_type == "Add" and id(p) not in taken and id(p) not in fused \
                    and id(p) not in gr.folded and gr.only_user(p.output[0]) is n \
                    and not any(gr.is_const(i) for i in p.input):
                fused.setdefault(id(n), []).append(p)
                taken.add(id(p))
    return fused, taken


def _conv_kernel(gr: _Graph, n, k: Kernel) -> None:
    w = gr.shapes.get(n.input[1]) if len(n.input) > 1 else None
    out = gr.shapes.get(n.output[0])
    if not w or not out:
        return
    g = int(attr(n, "group", 1))
    cin_g, cout = int(w[1]), int(w[0])
    if n.op_type == "ConvTranspose":
        x = gr.shapes.get(n.input[0])
        k.macs = _numel(x) * _numel(w[1:])
        cin_g, cout = int(w[0]) // g, int(w[1]) * g
    else:
        k.macs = _numel(out) * _numel(w[1:])
    ksize = _numel(w[2:])
    k.channels = (cin_g * g, cout)
    gmac = k.macs / 1e9
    mb = k.bytes_moved / 1e6
    if g > 1 and cin_g == 1:
        k.cls = "dwconv"
        k.features = {"dwconv.mb": mb, "dwconv.gmac": gmac}
        return
    k.cls = "convg" if g > 1 else ("conv1" if ksize == 1 else "conv3")
    padded = gmac * _pad(cout // g) / max(cout // g, 1) * _pad(cin_g, 8) / max(cin_g, 1)
    k.features = {f"{k.cls}.gmac": padded}
    if k.cls != "convg":
        k.features[f"{k.cls}.mb"] = mb


def _gemm_kernel(gr: _Graph, n, k: Kernel) -> None:
    a = gr.shapes.get(n.input[0])
    out = gr.shapes.get(n.output[0])
    if not a or not out:
        return
    kdim = int(a[0] if (n.op_type == "Gemm" and attr(n, "transA", 0)) else a[-1]) if a else 1
    k.macs = _numel(out) * kdim
    ncols = int(out[-1]) if out else 1
    padded = k.macs / 1e9 * _pad(ncols) / max(ncols, 1)
    k.features = {"gemm.gmac": padded, "gemm.mb": k.bytes_moved / 1e6}


def _io(gr: _Graph, nodes: Sequence, elem: int = 4) -> Tuple[int, List[str], List[str]]:
    """``(bytes, inputs, outputs)`` of a fused kernel: it reads its inputs from outside the group
    and writes its last node's outputs."""
    produced = {o for n in nodes for o in n.output}
    ins: List[str] = []
    for n in nodes:
        for i in n.input:
            if i and i not in produced and i not in ins:
                ins.append(i)
    outs = [o for o in nodes[-1].output if o]
    total = sum(_numel(gr.shapes.get(t)) for t in ins + outs if gr.shapes.get(t) is not None)
    return total * elem, ins, outs


def kernels(model, shapes, known: Sequence[str] = (), threads: Optional[int] = None) -> List[Kernel]:
    """The kernels ORT runs for ``model`` (shape-inferred ``shapes``) on ``threads`` intra-op
    threads, each with its features."""
    gr = _Graph(model, shapes, known)
    fused, taken = _mark(gr)
    out: List[Kernel] = []
    where = {id(n): i for i, n in enumerate(gr.nodes)}
    order: List[int] = []
    for n in gr.nodes:
        if id(n) in gr.folded or id(n) in taken or n.op_type in REMOVED_OPS:
            continue
        group = [n] + fused.get(id(n), [])
        order.append(max(where[id(m)] for m in group))  # a fused kernel runs when its last input is ready
        main_out = group[-1].output[0] if group[-1].output else None
        oshape = [int(d or 1) for d in (gr.shapes.get(main_out) or ())] if main_out else []
        nbytes, ins, outs = _io(gr, group)
        k = Kernel(name=n.name or f"{n.op_type}:{main_out}", cls="", op_type=n.op_type,
                   nodes=[m.name or m.op_type for m in group], out_shape=oshape, bytes_moved=nbytes,
                   inputs=[i for i in ins if not gr.is_const(i)], outputs=outs)
        mb = k.bytes_moved / 1e6
        if n.op_type in VIEW_OPS:
            k.cls, k.bytes_moved = "view", 0
        elif n.op_type in ("Conv", "ConvTranspose"):
            _conv_kernel(gr, n, k)
        elif n.op_type in ("MatMul", "Gemm"):
            k.cls = "gemm"
            _gemm_kernel(gr, n, k)
            a = gr.shapes.get(n.input[0]) or ()
            if len(a) > 2 and any(m.op_type == "Add" for m in group[1:]):
                k.features["view"] = 2.0  # MatMul+Add on a 3-D input runs as Reshape, Gemm, Reshape
        elif n.op_type in ("Erf", "Sigmoid") and len(group) > 1:
            k.cls, k.op_type = "transc", "Gelu" if n.op_type == "Erf" else "QuickGelu"
            k.features = {"transc.melem": _numel(oshape) / 1e6}
        elif n.op_type == "ReduceMean" and len(group) > 4:
            k.cls, k.op_type = "norm", "LayerNormalization"
            k.features = {"norm.mb": mb}
        elif n.op_type in OP_CLASS:
            k.cls = OP_CLASS[n.op_type]
            unit = WORK[k.cls]
            k.features = {f"{k.cls}.{unit}": _numel(oshape) / 1e6 if unit == "melem" else mb}
        else:
            k.cls = "unmodelled"
            k.features = {"move.mb": mb}
        if not k.cls:  # a conv / gemm whose shapes inference could not give: bytes only
            k.cls = "unmodelled"
            k.features = {"move.mb": mb}
        k.features["view" if k.cls == "view" else "kernel"] = k.features.get("kernel", 0.0) + 1.0
        if k.cls in PARALLEL or k.bytes_moved > PARALLEL_BYTES:
            k.features["par"] = 1.0
        cache = cache_bytes(threads)
        if k.bytes_moved > cache:
            k.features["dram.mb"] = (k.bytes_moved - cache) / 1e6
            gmac = k.features.get(f"{k.cls}.gmac", 0.0)
            if k.cls in _MATMUL_CLASSES and gmac:  # the share of the MACs whose operands miss L2
                k.features["spill.gmac"] = gmac * (k.bytes_moved - cache) / k.bytes_moved
        out.append(k)
    out = [k for _, k in sorted(zip(order, out), key=lambda p: p[0])]
    return _with_reorders(gr, out)


_NCHWC_FOLLOW = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Sigmoid", "Tanh",
                 "LeakyRelu", "BatchNormalization", "Resize", "Upsample"}


def _nchwc(k: Kernel, layout: Dict[str, bool], gr: _Graph) -> bool:
    """Whether ORT's NCHWc transformer (x86, ORT_ENABLE_ALL) runs this kernel in the blocked layout."""
    ins = [layout.get(i, False) for i in k.inputs]
    if k.cls in ("conv3", "conv1", "convg", "dwconv") and k.op_type == "Conv":
        cin, cout = k.channels
        return cout % 16 == 0 and (cin % 16 == 0 or (k.cls != "convg" and k.cls != "dwconv"))
    if (k.op_type in _NCHWC_FOLLOW and len(k.nodes) == 1) or k.op_type in ("QuickGelu", "HardSwish", "HardSigmoid"):
        return bool(ins) and ins[0]
    if k.op_type in ("Add", "Sum", "Mul") and len(k.nodes) == 1 and ins and all(ins):
        return len({gr.shapes.get(i) for i in k.inputs}) == 1
    if k.op_type == "Concat" and ins and all(ins):
        return all(len(gr.shapes.get(i) or ()) == 4 and (gr.shapes[i][1] or 1) % 16 == 0 for i in k.inputs)
    return False


def _reorder(gr: _Graph, t: str, op: str) -> Kernel:
    nbytes = 2 * 4 * _numel(gr.shapes.get(t))
    return Kernel(name=f"{op}:{t}", cls="move", op_type=op, nodes=[], out_shape=list(gr.shapes.get(t) or ()),
                  bytes_moved=nbytes, features={"move.mb": nbytes / 1e6, "kernel": 1.0}, inputs=[t], outputs=[t])


def _with_reorders(gr: _Graph, ks: List[Kernel]) -> List[Kernel]:
    """Insert the ReorderInput / ReorderOutput kernels ORT adds where the blocked layout meets a
    plain one (a conv chain's end, an SE block's broadcast Mul, the graph outputs)."""
    layout: Dict[str, bool] = {}
    done: Set[str] = set()
    out: List[Kernel] = []
    for k in ks:
        mine = _nchwc(k, layout, gr)
        for t in k.inputs:
            if t in done:
                continue
            if layout.get(t, False) and not mine:
                out.append(_reorder(gr, t, "ReorderOutput"))
                done.add(t)
            elif mine and not layout.get(t, False) and t in gr.producer and (k.channels[0] % 16 == 0):
                out.append(_reorder(gr, t, "ReorderInput"))
                done.add(t)
        out.append(k)
        for t in k.outputs:
            layout[t] = mine
    for t in gr.outputs:
        if layout.get(t, False) and t not in done:
            out.append(_reorder(gr, t, "ReorderOutput"))
    return out


def feature_row(ks: Sequence[Kernel]) -> Dict[str, float]:
    """The features of a whole graph run: the kernels' features summed, plus one run."""
    row: Dict[str, float] = {"run": 1.0}
    for k in ks:
        for f, v in k.features.items():
            row[f] = row.get(f, 0.0) + v
    return row


def static_copy(model, batch: int = 1, shapes: Optional[Dict[str, Sequence[int]]] = None):
    """A weight-free copy of ``model`` whose graph inputs all have static shapes: ``shapes[name]``
    where given, else a symbolic axis 0 becomes ``batch``. Any other symbolic axis is an
    :class:`InputError` naming the input, as is a fixed batch that ``batch`` contradicts."""
    shapes = dict(shapes or {})
    inits = {t.name for t in model.graph.initializer}
    lm = light_copy(model)
    inputs = [vi for vi in lm.graph.input if vi.name not in inits]
    unknown = set(shapes) - {vi.name for vi in inputs}
    if unknown:
        raise InputError(f"--shapes names {sorted(unknown)}, which are not model inputs",
                         hint="model inputs: " + ", ".join(vi.name for vi in inputs))
    for vi in inputs:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in shapes:
            want = [int(d) for d in shapes[vi.name]]
            if len(want) != len(dims):
                raise ShapeError(f"--shapes gives input '{vi.name}' {len(want)} dims; the model has {len(dims)}")
            for d, v in zip(dims, want):
                d.dim_value = v
            continue
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                if i == 0 and batch != 1 and d.dim_value != batch:
                    raise ShapeError(f"input '{vi.name}' has a fixed batch of {d.dim_value}; --batch {batch} does not fit",
                                     hint="re-export with a dynamic batch, or give --shapes")
                continue
            if i == 0:
                d.dim_value = batch
                continue
            sym = d.dim_param or "?"
            raise InputError(f"input '{vi.name}' has a symbolic dimension {i} ('{sym}'): the estimate needs its size",
                             hint=f"give --shapes {vi.name}:" + "x".join(
                                 str(x.dim_value) if x.HasField("dim_value") else "N" for x in dims))
    return lm


def featurize(model, batch: int = 1, shapes: Optional[Dict[str, Sequence[int]]] = None,
              threads: Optional[int] = None) -> List[Kernel]:
    """The kernels of ``model`` at static input shapes (:func:`static_copy`), with features for a
    run on ``threads`` intra-op threads (they set how much L2 the kernels share)."""
    lm = static_copy(model, batch, shapes)
    inferred, known = static_shapes(lm)
    # constants are the original model's initializers (the light copy turned big ones into inputs)
    return kernels(model, inferred, known=list(known), threads=threads)
