"""Latency-aware pruning: which channels go is decided by what they cost on the target in ms, not
in FLOPs.

A FLOPs target treats every channel of every layer alike, but kernels run in steps: a conv with
40 output channels often takes as long as one with 48, and one with 33 as long as one with 40.
So, once per model and device, every Conv / Gemm / MatMul layer is timed alone (a one-node ONNX
graph built with ``onnx.helper``, on ONNX Runtime CPU -- or the cost model of
:mod:`edgekit.estimate` for a board that is not here) at a grid of output-channel counts (full
inputs) and of input-channel counts (full outputs). The grid steps by the multiples kernels care
about (4 / 8 / 16 / 32, by the layer's size), and the table is a JSON cache per model, device,
batch and threads. A layer at ``(cin, cout)`` is estimated as ``out(cout) * in(cin) / full``
(separable; each factor read at the next grid point up, the step a kernel shows).

The decision (:func:`greedy_counts`) is a greedy on saliency per ms, after HALP (Shen et al.,
2022): starting from the full model, repeatedly remove the block of channels (one grid step, or
several when the first would save nothing) whose summed saliency is smallest per ms it saves,
until the modelled latency is ``level`` x the full one. It plugs into the pruner through
``prune(..., keep_counts=callable)``; the counts it chose are stored in the recipe, so a replay
rebuilds the same model without re-timing anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from edgekit.errors import InputError
from edgekit.optimize.latency import estimate, measure_cpu

FORMAT = "edgekit-latency-table"
LAYER_OPS = ("Conv", "Gemm", "MatMul")
MAX_POINTS = 8           # grid points per axis and layer (the full count is always one)
GLOBAL_FLOOR = 0.1       # a group keeps at least this share of its channels (as the global scope)


def grid_step(n: int) -> int:
    """The channel step the table samples a layer of ``n`` channels at: the kernel multiples
    (4/8/16/32), coarser for wide layers so that a layer has at most :data:`MAX_POINTS` points."""
    step = 4 if n < 32 else 8
    while n / step > MAX_POINTS and step < 32:
        step *= 2
    return max(1, min(step, n))


def grid(n: int) -> List[int]:
    """The counts timed for an axis of ``n`` channels: multiples of the step, and ``n`` itself."""
    step = grid_step(n)
    pts = list(range(step, n, step))[-(MAX_POINTS - 1):] if n > step else []
    return sorted(set(pts + [n]))


@dataclass
class Layer:
    """One timed layer: its weight (the key, stable across node renames), its dims, its table."""

    weight: str
    op: str
    cin: int
    cout: int
    depthwise: bool = False
    out_ms: Dict[int, float] = field(default_factory=dict)   # cout -> ms at full cin
    in_ms: Dict[int, float] = field(default_factory=dict)    # cin -> ms at full cout

    @property
    def full_ms(self) -> float:
        return self.out_ms[self.cout]

    def ms(self, cin: int, cout: int) -> float:
        """Modelled latency at ``(cin, cout)`` (separable; each read at the next grid point up)."""
        def at(table: Dict[int, float], c: int) -> float:
            keys = sorted(table)
            up = [k for k in keys if k >= c]
            return table[up[0] if up else keys[-1]]

        if self.depthwise:
            return at(self.out_ms, cout)
        full = max(self.full_ms, 1e-9)
        return at(self.out_ms, cout) * at(self.in_ms, cin) / full


@dataclass
class LatencyTable:
    """Every prunable layer's latency against its channel counts, for one model on one device."""

    device: str
    kind: str          # measured | estimated
    batch: int
    layers: Dict[str, Layer]
    model_sha: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"format": FORMAT, "device": self.device, "kind": self.kind, "batch": self.batch,
                "model_sha": self.model_sha, "seconds": self.seconds,
                "layers": {k: {**asdict(v), "out_ms": {str(c): t for c, t in v.out_ms.items()},
                               "in_ms": {str(c): t for c, t in v.in_ms.items()}} for k, v in self.layers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        if d.get("format") != FORMAT:
            raise InputError("not an edgekit latency table")
        layers = {}
        for k, v in d["layers"].items():
            v = dict(v)
            v["out_ms"] = {int(c): float(t) for c, t in v["out_ms"].items()}
            v["in_ms"] = {int(c): float(t) for c, t in v["in_ms"].items()}
            layers[k] = Layer(**v)
        return cls(d["device"], d["kind"], int(d["batch"]), layers, d.get("model_sha", ""), d.get("seconds", 0.0))


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _one_layer(node, x_shape: List[int], w: np.ndarray, cin: int, cout: int, depthwise: bool):
    """A one-node model: ``node``'s op and attributes with the weight cut to ``cin`` x ``cout``."""
    a = _attrs(node)
    rng = np.random.default_rng(0)
    x_shape = list(x_shape)
    if node.op_type == "Conv":
        x_shape[1] = cin
        grp = cin if depthwise else 1
        if depthwise:
            a["group"] = cin
        wshape = [cout, cin // grp, *w.shape[2:]]
    elif node.op_type == "Gemm":
        x_shape[0 if a.get("transA", 0) else 1] = cin
        wshape = [cout, cin] if a.get("transB", 0) else [cin, cout]
    else:  # MatMul with a constant right operand
        x_shape[-1] = cin
        wshape = [cin, cout]
    inits = [numpy_helper.from_array(rng.standard_normal(wshape).astype(np.float32), "W")]
    inputs = ["X", "W"]
    if len(node.input) > 2 and node.input[2]:
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), "B"))
        inputs.append("B")
    n = helper.make_node(node.op_type, inputs, ["Y"], **a)
    g = helper.make_graph([n], "layer", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, {"X": rng.standard_normal(x_shape).astype(np.float32)}


def _layers(model, batch: int):
    """``(node, input shape, weight, cin, cout, depthwise)`` for every Conv / Gemm / MatMul whose
    weight is an initializer and whose input shape is known (batch set to ``batch``)."""
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.dim_value > 0 else None for d in dims]
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        shp = shapes.get(node.input[0])
        if not shp:
            continue
        shp = [batch if i == 0 and d is None else d for i, d in enumerate(shp)]
        if any(d is None for d in shp):
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        a = _attrs(node)
        if node.op_type == "Conv":
            grp = int(a.get("group", 1))
            depthwise = grp > 1 and w.shape[1] == 1 and grp == shp[1] and w.shape[0] == grp
            if grp > 1 and not depthwise:
                continue  # grouped (not depthwise): not tabled
            cin, cout = int(shp[1]), int(w.shape[0])
        elif node.op_type == "Gemm":
            if w.ndim != 2:
                continue
            depthwise = False
            cout, cin = (w.shape if a.get("transB", 0) else w.shape[::-1])
        else:
            if w.ndim != 2:
                continue
            depthwise, (cin, cout) = False, w.shape
        out.append((node, shp, w, int(cin), int(cout), depthwise))
    return out


def build_table(model, device: str = "cpu", kind: str = "measured", batch: int = 1, threads: Optional[int] = 1,
                duration_s: float = 0.06, progress=None) -> LatencyTable:
    """Time (``kind="measured"``: ONNX Runtime CPU here) or estimate (``"estimated"``: the cost model
    for ``device``) every tabled layer of ``model`` on its channel grid."""
    t0 = time.perf_counter()
    found = _layers(model, batch)
    layers: Dict[str, Layer] = {}
    if progress is not None:
        progress(total=len(found), completed=0, description="latency table")

    def time_it(m, feeds) -> float:
        if kind == "measured":
            return measure_cpu(m, feeds, duration_s, threads, warmup_ms=10.0).median_ms
        return estimate(m, device, "fp16", batch).median_ms

    for node, shp, w, cin, cout, dw in found:
        lay = Layer(node.input[1], node.op_type, cin, cout, dw)
        for c in grid(cout):
            m, feeds = _one_layer(node, shp, w, c if dw else cin, c, dw)
            lay.out_ms[c] = time_it(m, feeds)
        if not dw:
            for c in grid(cin):
                m, feeds = (None, None) if c == cin else _one_layer(node, shp, w, c, cout, dw)
                lay.in_ms[c] = lay.out_ms[cout] if c == cin else time_it(m, feeds)
        layers[lay.weight] = lay
        if progress is not None:
            progress(advance=1)
    sha = hashlib.sha1(model.SerializeToString()).hexdigest()[:16]
    return LatencyTable(device, kind, batch, layers, sha, round(time.perf_counter() - t0, 2))


def cached_table(model, cache_dir, device: str = "cpu", kind: str = "measured", batch: int = 1,
                 threads: Optional[int] = 1, progress=None) -> LatencyTable:
    """The table of ``model`` for this device / batch / threads from ``cache_dir`` (built and
    written there, temp file + rename, the first time)."""
    sha = hashlib.sha1(model.SerializeToString()).hexdigest()[:16]
    path = Path(cache_dir) / f"latency-table-{sha}-{device}-{kind}-b{batch}-t{threads}.json"
    if path.is_file():
        try:
            return LatencyTable.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, InputError):
            pass  # a damaged cache is rebuilt
    table = build_table(model, device, kind, batch, threads, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(table.to_dict(), f)
    os.replace(tmp, path)
    return table


def _wiring(groups, table: LatencyTable) -> Dict[str, Tuple[Optional[int], Optional[int]]]:
    """Weight name -> (group of its output channels, group of its input channels) from the
    pruner's groups (a depthwise conv's input group is its output group)."""
    wiring: Dict[str, List[Optional[int]]] = {k: [None, None] for k in table.layers}
    for g in groups:
        for m in g.members:
            if m.tensor not in wiring or m.node is None or m.array.ndim < 2:
                continue
            wiring[m.tensor][0 if m.role == "out" else 1] = g.id
    return {k: (o, i) for k, (o, i) in wiring.items()}


def modelled_ms(table: LatencyTable, wiring, counts: Dict[int, int]) -> float:
    """The summed modelled latency of the tabled layers at ``counts`` (a group left out: full)."""
    tot = 0.0
    for k, lay in table.layers.items():
        og, ig = wiring.get(k, (None, None))
        cout = counts.get(og, lay.cout) if og is not None else lay.cout
        cin = counts.get(ig, lay.cin) if ig is not None else lay.cin
        tot += lay.ms(cin, cout)
    return tot


def greedy_counts(groups, scores: Dict[int, np.ndarray], table: LatencyTable, level: float, round_to: int = 1,
                  min_channels: int = 1) -> Dict[int, int]:
    """Channels each group keeps so that the modelled latency is at most ``level`` x the full one,
    removing the least saliency per ms saved first (scores: comparable across groups, as the
    global scope normalises them). Blocks are the grid step of the group's widest layer (or
    ``round_to`` if larger); a move may take several blocks when the first saves nothing."""
    wiring = _wiring(groups, table)
    touched: Dict[int, List[str]] = {}
    for k, (o, i) in wiring.items():
        for gid in {o, i} - {None}:
            touched.setdefault(gid, []).append(k)
    counts = {g.id: g.size for g in groups}
    csum = {g.id: np.concatenate([[0.0], np.cumsum(np.sort(np.asarray(scores[g.id], dtype=np.float64)))])
            for g in groups}
    block = {g.id: max(round_to, grid_step(g.size)) for g in groups}
    floor = {g.id: max(min_channels, int(math.ceil(g.size * GLOBAL_FLOOR))) for g in groups}
    part = {k: table.layers[k] for ks in touched.values() for k in ks}

    def local(gid: int, c: int) -> float:
        trial = dict(counts)
        trial[gid] = c
        sub = LatencyTable(table.device, table.kind, table.batch, {k: part[k] for k in touched[gid]})
        return modelled_ms(sub, wiring, trial)

    target = level * modelled_ms(table, wiring, counts)
    now = modelled_ms(table, wiring, counts)
    while now > target:
        best = None
        for g in groups:
            if g.id not in touched:
                continue
            n, base = counts[g.id], local(g.id, counts[g.id])
            c = n - block[g.id]
            while c >= floor[g.id]:
                saved = base - local(g.id, c)
                if saved > 1e-6:
                    cost = csum[g.id][g.size - c] - csum[g.id][g.size - n]
                    ratio = cost / saved
                    if best is None or ratio < best[0]:
                        best = (ratio, g.id, c, saved)
                    break  # the first count that saves time is this group's move
                c -= block[g.id]
        if best is None:
            break  # nothing left that the table says is faster
        _, gid, c, saved = best
        counts[gid] = c
        now -= saved
    return counts
