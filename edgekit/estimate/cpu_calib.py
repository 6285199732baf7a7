"""Calibrating the CPU cost model on this host: a short run of micro-benchmark graphs, a fit, a cache.

Each micro-benchmark is a small ONNX graph (built with ``onnx.helper``) that repeats one kernel
class at one shape: 3x3 / 1x1 / grouped / depthwise convolutions, GEMMs and batched MatMuls,
elementwise, transcendental, normalisation, pooling, reduction and data-movement ops, graphs
of many tiny ops that pin the per-kernel and per-run overheads, and the layers of 224-px models at
their real sizes (working sets beyond L2), which pin the spill terms. Every graph goes through the same
featurizer as a user's model (:func:`edgekit.estimate.cpu_fuse.featurize`), so the fit sees
exactly the features the estimate will use; ONNX Runtime times it with the session options
``edgekit profile`` uses. The coefficients (microseconds per feature unit) come from a
non-negative least-squares fit on relative error, so every work term only adds time.

The result is cached per host under ``$EDGEKIT_CACHE_DIR`` (default ``~/.cache/edgekit``), keyed by
CPU model, core count, ONNX Runtime version, thread count and the suite's version; a change in any
of them makes a new calibration.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit import _resources
from edgekit.estimate.cpu_fuse import FEATURES, feature_row, featurize
from edgekit.graph.io import atomic_output
from edgekit.runtime.onnxruntime import ort_session

SUITE_VERSION = "cpu-suite-6"  # 6: 224-px layers, L2-spill feature
Progress = Optional[Callable[[int, int, str], None]]
_RNG = np.random.default_rng(0)
_F = TensorProto.FLOAT
BUDGET_S = 0.25  # seconds each micro-benchmark is timed for (at least 7 runs)


@dataclass
class Calibration:
    """Fitted coefficients for one host key, and how well they fit the micro-benchmarks."""

    key: Dict[str, object]
    params: Dict[str, float]          # feature -> microseconds per unit
    fit_median_abs_pct: float         # on the micro-benchmarks themselves (in-sample)
    seconds: float                    # how long the calibration run took
    path: Optional[str] = None
    from_cache: bool = False

    @property
    def version(self) -> str:
        return f"{SUITE_VERSION}/{key_hash(self.key)}"


# --- the host key and the cache ------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_key(threads: Optional[int]) -> Dict[str, object]:
    import onnxruntime as ort  # lazy: keeps importing edgekit.estimate light

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "onnxruntime": ort.__version__,
            "threads": int(threads) if threads else "default", "suite": SUITE_VERSION}


def key_hash(key: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return _resources.cache_root()


def cache_path(key: Dict[str, object], cache_dir: Optional[os.PathLike] = None) -> Path:
    return cache_root(cache_dir) / "estimate" / f"cpu-{key_hash(key)}.json"


def load_cached(key: Dict[str, object], cache_dir: Optional[os.PathLike] = None) -> Optional[Calibration]:
    """The cached calibration for ``key``, or None (missing, unreadable or for another key)."""
    path = cache_path(key, cache_dir)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key or not isinstance(data.get("params"), dict):
        return None
    return Calibration(key=key, params={k: float(v) for k, v in data["params"].items()},
                       fit_median_abs_pct=float(data.get("fit_median_abs_pct", 0.0)),
                       seconds=float(data.get("seconds", 0.0)), path=str(path), from_cache=True)


def save(cal: Calibration, rows: List[Dict], cache_dir: Optional[os.PathLike] = None) -> Path:
    path = cache_path(cal.key, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"key": cal.key, "params": cal.params, "fit_median_abs_pct": cal.fit_median_abs_pct,
            "seconds": cal.seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "measurements": rows}
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1))
    return path


# --- micro-benchmark graphs ----------------------------------------------------------------------
def _w(name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array((_RNG.standard_normal(shape) * 0.1).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "microbench", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _vi(name: str, shape):
    return helper.make_tensor_value_info(name, _F, list(shape))


def conv_chain(c: int, hw: int, k: int = 3, group: int = 1, reps: int = 4, cout: Optional[int] = None):
    """``reps`` Conv+Relu layers at ``hw`` x ``hw``, alternating c -> cout -> c channels."""
    cout = cout or c
    nodes, inits, cur, ch = [], [], "x", c
    for i in range(reps):
        co = cout if i % 2 == 0 else c
        inits += [_w(f"w{i}", (co, ch // group, k, k)), _w(f"b{i}", (co,))]
        nodes += [helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[k // 2] * 4, group=group),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        cur, ch = f"r{i}", co
    return _model(nodes, [_vi("x", (1, c, hw, hw))], [_vi(cur, (1, ch, hw, hw))], inits)


def gemm_chain(t: int, k: int, n: int, reps: int = 4, batch_dims: Tuple[int, ...] = ()):
    """``reps`` MatMul+bias layers on a (batch_dims.., t, k) input, alternating k -> n -> k."""
    nodes, inits, cur, dim = [], [], "x", k
    for i in range(reps):
        d = n if i % 2 == 0 else k
        inits += [_w(f"w{i}", (dim, d)), _w(f"b{i}", (d,))]
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        cur, dim = f"a{i}", d
    shape = tuple(batch_dims) + (t, k)
    return _model(nodes, [_vi("x", shape)], [_vi(cur, tuple(batch_dims) + (t, dim))], inits)


def bmm_chain(h: int, t: int, d: int, reps: int = 2):
    """Attention-shaped batched MatMuls: (h, t, d) @ (h, d, t) -> (h, t, t) @ (h, t, d)."""
    nodes, cur = [], "q"
    for i in range(reps):
        nodes += [helper.make_node("MatMul", [cur, "kt"], [f"s{i}"]), helper.make_node("MatMul", [f"s{i}", "v"], [f"o{i}"])]
        cur = f"o{i}"
    return _model(nodes, [_vi("q", (h, t, d)), _vi("kt", (h, d, t)), _vi("v", (h, t, d))], [_vi(cur, (h, t, d))], [])


def unary_chain(op: str, shape, reps: int = 6, **attrs):
    nodes, cur = [], "x"
    for i in range(reps):
        nodes.append(helper.make_node(op, [cur], [f"y{i}"], **attrs))
        cur = f"y{i}"
    return _model(nodes, [_vi("x", shape)], [_vi(cur, shape)], [])


def binary_chain(op: str, shape, reps: int = 6, view: bool = False):
    """y = op(y, x) repeated (never fused); ``view``: a Reshape to a flat vector and back between."""
    nodes, inits, cur = [], [], "x"
    flat = int(np.prod(shape))
    if view:
        inits = [numpy_helper.from_array(np.array([flat], np.int64), "flat"),
                 numpy_helper.from_array(np.array(shape, np.int64), "shape")]
    for i in range(reps):
        nodes.append(helper.make_node(op, [cur, "x"], [f"y{i}"]))
        cur = f"y{i}"
        if view:
            nodes += [helper.make_node("Reshape", [cur, "flat"], [f"f{i}"]), helper.make_node("Reshape", [f"f{i}", "shape"], [f"g{i}"])]
            cur = f"g{i}"
    return _model(nodes, [_vi("x", shape)], [_vi(cur, shape)], inits)


def layernorm_chain(t: int, d: int, reps: int = 4):
    inits = [_w("g", (d,)), _w("b", (d,))]
    nodes, cur = [], "x"
    for i in range(reps):
        nodes.append(helper.make_node("LayerNormalization", [cur, "g", "b"], [f"y{i}"], axis=-1))
        cur = f"y{i}"
    return _model(nodes, [_vi("x", (t, d))], [_vi(cur, (t, d))], inits)


def fanout(op: str, shape, variants: List[Dict], out_shapes: List[Tuple[int, ...]], extra_inputs=None, inits=None):
    """Several ``op`` nodes reading one input, each a graph output (no chaining possible)."""
    nodes, outs = [], []
    for i, (kw, osh) in enumerate(zip(variants, out_shapes)):
        ins = ["x"] + list((extra_inputs or {}).get(i, []))
        nodes.append(helper.make_node(op, ins, [f"y{i}"], **kw))
        outs.append(_vi(f"y{i}", osh))
    return _model(nodes, [_vi("x", shape)], outs, inits or [])


def _transposes(shape):
    perms = [(0, 2, 3, 1), (0, 3, 1, 2), (0, 1, 3, 2), (0, 2, 1, 3)]
    return fanout("Transpose", shape, [{"perm": list(p)} for p in perms], [tuple(shape[j] for j in p) for p in perms])


def _pools(c: int, hw: int):
    return fanout("MaxPool", (1, c, hw, hw), [{"kernel_shape": [k, k], "pads": [k // 2] * 4} for k in (3, 5, 3)],
                  [(1, c, hw, hw)] * 3)


def _gap(c: int, hw: int):
    return fanout("GlobalAveragePool", (1, c, hw, hw), [{}], [(1, c, 1, 1)])


def _reduces(t: int, d: int):
    return fanout("ReduceMean", (t, d), [{"axes": [1], "keepdims": 1}, {"axes": [0], "keepdims": 1}],
                  [(t, 1), (1, d)])


def _concats(c: int, hw: int):
    s = (1, c, hw, hw)
    outs = [(1, 2 * c, hw, hw), (1, c, 2 * hw, hw), (1, c, hw, 2 * hw)]
    return fanout("Concat", s, [{"axis": a} for a in (1, 2, 3)], outs, extra_inputs={0: ["x"], 1: ["x"], 2: ["x"]})


def _full_size() -> List[Tuple[str, Callable[[], onnx.ModelProto]]]:
    """The layers of 224-px ImageNet models at their real sizes, whose activations or weights
    outgrow L2: the small shapes above alone predict them several times too fast."""
    return [("conv3x3 64x112 224px", lambda: conv_chain(64, 112, 3, reps=1)),
            ("conv1x1 64->256x56 224px", lambda: conv_chain(64, 56, 1, reps=2, cout=256)),
            ("conv1x1 512->128x28 224px", lambda: conv_chain(512, 28, 1, reps=2, cout=128)),
            ("conv1x1 1024x14 224px", lambda: conv_chain(1024, 14, 1, reps=1)),
            ("conv1x1 2048->512x7 224px", lambda: conv_chain(2048, 7, 1, reps=2, cout=512)),
            ("dwconv3 32x112 224px", lambda: conv_chain(32, 112, 3, group=32, reps=2)),
            ("dwconv3 144x56 224px", lambda: conv_chain(144, 56, 3, group=144, reps=2)),
            ("gemm 197x768x768 224px", lambda: gemm_chain(197, 768, 768, reps=2)),
            ("add 64x112 224px", lambda: binary_chain("Add", (1, 64, 112, 112), reps=3))]


def suite() -> List[Tuple[str, Callable[[], onnx.ModelProto]]]:
    """``(label, builder)`` of every micro-benchmark, cheap kernels first."""
    s: List[Tuple[str, Callable[[], onnx.ModelProto]]] = [
        ("tiny add x1", lambda: binary_chain("Add", (1, 16), reps=1)),
        ("tiny add x48", lambda: binary_chain("Add", (1, 16), reps=48)),
        ("tiny view x24", lambda: binary_chain("Add", (1, 16), reps=12, view=True)),
        ("add 64k", lambda: binary_chain("Add", (1, 64, 32, 32))),
        ("mul 1M", lambda: binary_chain("Mul", (1, 64, 128, 128))),
        ("add 256k view", lambda: binary_chain("Add", (1, 64, 64, 64), view=True)),
        ("sigmoid 256k", lambda: unary_chain("Sigmoid", (1, 64, 64, 64))),
        ("erf 1M", lambda: unary_chain("Erf", (1, 64, 128, 128), reps=3)),
        ("softmax 197x197x3", lambda: unary_chain("Softmax", (3, 197, 197), axis=-1)),
        ("layernorm 197x192", lambda: layernorm_chain(197, 192)),
        ("layernorm 3136x96", lambda: layernorm_chain(3136, 96)),
        ("maxpool 64x56", lambda: _pools(64, 56)),
        ("gap 256x28", lambda: _gap(256, 28)),
        ("reduce 1024x512", lambda: _reduces(1024, 512)),
        ("transpose 64x56", lambda: _transposes((1, 64, 56, 56))),
        ("transpose 16x16", lambda: _transposes((1, 16, 16, 16))),
        ("concat 64x32", lambda: _concats(64, 32)),
    ]
    s += [("small conv x16", lambda: conv_chain(16, 8, 3, reps=16)),
          ("small conv1x1 x16", lambda: conv_chain(32, 4, 1, reps=16)),
          ("small gemm x16", lambda: gemm_chain(4, 64, 64, reps=16)),
          ("small dwconv x16", lambda: conv_chain(32, 8, 3, group=32, reps=16))]
    for c, hw in ((16, 64), (32, 56), (64, 28), (128, 14), (256, 7)):
        s.append((f"conv3x3 {c}x{hw}", lambda c=c, hw=hw: conv_chain(c, hw, 3)))
    s.append(("conv3x3 8->16x64", lambda: conv_chain(8, 64, 3, cout=16)))
    # full-resolution layers (ResNet at 224): activations far beyond the caches
    s.append(("conv3x3 64x56 big", lambda: conv_chain(64, 56, 3, reps=2)))
    s.append(("conv1x1 256->64x56 big", lambda: conv_chain(256, 56, 1, reps=2, cout=64)))
    s += _full_size()
    for c, hw in ((32, 56), (64, 28), (256, 14), (512, 7)):
        s.append((f"conv1x1 {c}x{hw}", lambda c=c, hw=hw: conv_chain(c, hw, 1)))
    s.append(("conv1x1 24->144x32", lambda: conv_chain(24, 32, 1, cout=144)))
    for c, hw, g in ((64, 28, 8), (128, 14, 16)):
        s.append((f"conv g{g} {c}x{hw}", lambda c=c, hw=hw, g=g: conv_chain(c, hw, 3, group=g)))
    for c, hw, k in ((32, 56, 3), (96, 28, 3), (256, 14, 3), (64, 28, 5), (384, 7, 7)):
        s.append((f"dwconv{k} {c}x{hw}", lambda c=c, hw=hw, k=k: conv_chain(c, hw, k, group=c)))
    for t, k, n in ((1, 512, 512), (64, 256, 256), (197, 192, 768), (8, 768, 3072), (49, 768, 3072)):
        s.append((f"gemm {t}x{k}x{n}", lambda t=t, k=k, n=n: gemm_chain(t, k, n)))
    s.append(("gemm3d 197x192x576", lambda: gemm_chain(197, 192, 576, batch_dims=(1,))))
    s.append(("bmm 3x197x64", lambda: bmm_chain(3, 197, 64)))
    s.append(("bmm 12x49x32", lambda: bmm_chain(12, 49, 32)))
    return s


# --- timing and the fit --------------------------------------------------------------------------
def time_graph(model: onnx.ModelProto, threads: Optional[int], budget_s: float = 0.25, min_runs: int = 7) -> float:
    """Fastest wall time of one ``session.run`` (microseconds), with ``edgekit profile``'s options.

    The minimum, not the median: on a shared machine the median follows whatever else runs, and
    a calibration taken under load would bake that load into every later estimate. The estimate
    is therefore the latency of a quiet machine (a quiet machine's median is within a few percent)."""
    sess = ort_session(model, intra_threads=threads, inter_threads=1 if threads else None, optimization="all")
    feeds = {i.name: _RNG.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    for _ in range(2):
        sess.run(names, feeds)
    times: List[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < end:
        t0 = time.perf_counter()
        sess.run(names, feeds)
        times.append(time.perf_counter() - t0)
        if len(times) >= 400:
            break
    return float(np.min(times) * 1e6)


def fit(rows: List[Dict]) -> Tuple[Dict[str, float], float]:
    """Non-negative coefficients minimising the relative error over ``rows`` (``features``, ``us``);
    returns ``(params, median |error| %)``. Data movement keeps a small positive floor, so an op
    costed by bytes alone (an unmodelled one) never comes out free."""
    from scipy.optimize import lsq_linear  # lazy: scipy is only needed when calibrating

    names = list(FEATURES)
    a = np.array([[r["features"].get(f, 0.0) for f in names] for r in rows])
    t = np.array([r["us"] for r in rows])
    w = 1.0 / t
    lb = np.zeros(len(names))
    lb[names.index("move.mb")] = 1e-2  # 100 GB/s: faster than any CPU copies memory
    res = lsq_linear(a * w[:, None], t * w, bounds=(lb, np.inf), method="bvls")
    params = {f: float(c) for f, c in zip(names, res.x)}
    pred = a @ res.x
    return params, float(np.median(np.abs(pred - t) / t) * 100)


def calibrate(threads: Optional[int] = None, progress: Progress = None,
              budget_s: Optional[float] = None) -> Tuple[Calibration, List[Dict]]:
    """Run the micro-benchmark suite on this host and fit the coefficients."""
    budget_s = BUDGET_S if budget_s is None else budget_s
    t0 = time.perf_counter()
    benches = suite()
    rows: List[Dict] = []
    for i, (label, build) in enumerate(benches):
        if progress is not None:
            progress(i, len(benches), label)
        model = build()
        feats = feature_row(featurize(model, threads=threads))
        rows.append({"label": label, "features": feats, "us": time_graph(model, threads, budget_s)})
    if progress is not None:
        progress(len(benches), len(benches), "fit")
    params, err = fit(rows)
    cal = Calibration(key=host_key(threads), params=params, fit_median_abs_pct=err,
                      seconds=time.perf_counter() - t0)
    return cal, rows


def calibration(threads: Optional[int] = None, cache_dir: Optional[os.PathLike] = None, recalibrate: bool = False,
                progress: Progress = None) -> Calibration:
    """The cached calibration for this host and thread count, running (and caching) one if needed."""
    key = host_key(threads)
    if not recalibrate:
        cached = load_cached(key, cache_dir)
        if cached is not None:
            return cached
    cal, rows = calibrate(threads, progress)
    cal.path = str(save(cal, rows, cache_dir))
    return cal
