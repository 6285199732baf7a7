"""The inputs of obspa's statistics pass and the graph it runs them through.

By default, when the graph has BatchNorm and no ``calib`` is given, the statistics are *measured*
on synthetic inputs: smooth-noise images (:func:`smooth_noise`, box-blurred Gaussian noise, a
generic image prior) run through a copy of the graph whose BatchNorms normalise with batch
statistics (:func:`batch_stat_bn`), so every BN output has the mean ``beta`` and spread ``gamma``
its running statistics promise while the cross-channel, spatial and residual-branch correlations
are those the real weights create. That is what made the depthwise / inverted-residual nets work
(bench/prune_datafree.py: mobilenetv2 at 0.67 FLOPs 59.6% -> 96.0%). This module also checks
real calibration inputs (:func:`checked_calib`) and sizes the synthetic set. A graph without BN
(folded by a plain export, or never there) whose output is class scores gets image-prior inputs
chosen by the network instead (:mod:`edgekit.prune.obspa.priors`).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import CalibrationError
from edgekit.graph.io import input_channel_axis, model_input_specs
from edgekit.graph.shapes import infer_shapes, light_copy
from edgekit.graph.view import attr

# Synthetic inputs (graphs with BN, no --calib): how many, and their spatial smoothness (box blur
# width). Chosen by bench/prune_datafree.py; 0 samples = analytic Gaussian moments only.
DEFAULT_SYNTHETIC = 64
DEFAULT_SYNTHETIC_SMOOTH = 3
# Multiply-accumulates the synthetic forward pass may spend (samples x MACs per sample): digits-size
# models get all DEFAULT_SYNTHETIC samples, an ImageNet ResNet-18 8, a ResNet-50 MIN_SYNTHETIC.
# A trade between the statistics' quality and time: as a command, obspa then takes 2.2-4.2x l1's time
# on ImageNet ResNet-18/50 and MobileNetV2 (bench/prune_datafree.py --time-onnx), 1.2x on digits models.
SYNTHETIC_MACS_BUDGET = 16e9
MIN_SYNTHETIC = 4
# An image input whose height / width are symbolic (exported with dynamic axes) gets synthetic
# inputs of this size (the usual ImageNet resolution; a multiple of 32, as detection backbones need).
ASSUMED_IMAGE_SIZE = 224


def samples_within(n: int, macs: float, budget: float, least: int) -> int:
    """``n`` samples, or fewer when ``n * macs`` exceeds ``budget`` multiply-accumulates (at least
    ``least``; ``macs`` 0 = unknown: ``n``)."""
    if macs > 0 and n * macs > budget:
        return min(int(n), max(int(least), int(budget // macs)))
    return int(n)


def smooth_noise(rng, shape, width: int = 3, channel_axis: int = 1) -> np.ndarray:
    """Standard normal noise box-blurred over the spatial axes by ``width`` pixels (circular), then
    re-standardised: a data-free stand-in for natural images, whose neighbouring pixels are
    strongly correlated (``width=3`` gives a neighbour correlation of 2/3; ``width<=1`` is white
    noise). The blur runs in float32 as in-place shifted adds; the draws themselves are float64
    ones (the same samples as ever for a given ``rng``, so the statistics do not move).

    The spatial axes are all but the batch and ``channel_axis``. A channels-last shape gets the
    samples of its channels-first twin, transposed (an NHWC export is fed what the NCHW export of
    the same network is fed)."""
    rank = len(shape)
    cax = channel_axis % rank if rank > 2 else 1
    if cax != 1:
        first = (shape[0], shape[cax]) + tuple(shape[a] for a in range(1, rank) if a != cax)
        return np.ascontiguousarray(np.moveaxis(smooth_noise(rng, first, width, 1), 1, cax))
    x = rng.standard_normal(shape).astype(np.float32)
    if width > 1 and len(shape) > 2:
        for ax in range(2, len(shape)):
            x = np.ascontiguousarray(np.moveaxis(_box_blur_last(np.moveaxis(x, ax, -1), width), -1, ax))
        x -= x.mean(dtype=np.float64)
        x /= max(float(x.std(dtype=np.float64)), 1e-12)
    return x


def _box_blur_last(src: np.ndarray, width: int) -> np.ndarray:
    """The circular sum of ``width`` neighbours along the last axis of ``src`` (a new array)."""
    acc = src.copy()
    size = src.shape[-1]
    for tap in range(width):
        if tap == width // 2:
            continue  # the centre tap is acc's initial value
        sh = (tap - width // 2) % size
        if sh == 0:  # a shift that wraps round to the centre (width > size)
            acc += src
            continue
        # circular shift by sh: acc[i] += src[i - sh]
        acc[..., sh:] += src[..., :size - sh]
        acc[..., :sh] += src[..., size - sh:]
    return acc


def has_token_norm(model) -> bool:
    """Whether the graph normalises its activations without BatchNorm: LayerNormalization,
    GroupNormalization, InstanceNormalization, or a LayerNorm written out op by op (a ReduceMean
    whose output is subtracted from its own input). Synthetic inputs then meet the statistics the
    network was trained on after the first normalisation, so they are worth measuring."""
    kinds = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
             "SimplifiedLayerNormalization"}
    nodes = list(model.graph.node)
    if any(n.op_type in kinds for n in nodes):
        return True
    means = {n.output[0]: n.input[0] for n in nodes if n.op_type == "ReduceMean" and n.input and n.output}
    return any(n.op_type == "Sub" and len(n.input) == 2 and n.input[1] in means and means[n.input[1]] == n.input[0]
               for n in nodes)


def assumed_image_shapes(model, vi) -> Optional[Tuple[Dict[str, Tuple], Tuple, Tuple[int, ...]]]:
    """For a 4-D graph input ``vi`` whose channels are known but whose height / width are symbolic:
    ``(shapes, input shape, assumed size)``, the shapes inferred with those spatial axes taken as
    :data:`ASSUMED_IMAGE_SIZE` (the batch stays symbolic). None for any other input, or when shape
    inference fails."""
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != 4:
        return None
    known = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    cax = input_channel_axis(model, vi.name, known)
    spatial = [ax for ax in (1, 2, 3) if ax != cax]
    if not dims[cax].HasField("dim_value") or all(dims[ax].HasField("dim_value") for ax in spatial):
        return None
    lm = light_copy(model)
    for v in lm.graph.input:
        if v.name == vi.name:
            for ax in spatial:
                d = v.type.tensor_type.shape.dim[ax]
                if not d.HasField("dim_value"):
                    d.dim_value = ASSUMED_IMAGE_SIZE
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
    try:
        shapes = infer_shapes(lm)
    except Exception:
        return None
    return shapes, shape, tuple(int(shape[ax]) for ax in spatial)


def input_dtype(model, name: str):
    """NumPy element type of graph input ``name`` (float32 when it is not a float type ONNX Runtime
    would take as such): statistics inputs, synthetic or calibration ones, are fed in it (a
    float16 export takes float16)."""
    for spec in model_input_specs(model):
        if spec.name == name and spec.dtype in ("float16", "float64"):
            return np.dtype(spec.dtype).type
    return np.float32


def checked_calib(x, dtype) -> np.ndarray:
    """Calibration inputs as an array of the model input's element type, or a
    :class:`CalibrationError`: a non-numeric array, NaN or infinite values, or values that do not
    fit the input type (a float16 input holds magnitudes up to 65504; beyond, the cast gives
    infinities). Either would turn the measured moments, and then every compensated weight, into
    NaN."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise CalibrationError(f"calibration data must be numeric, got dtype {a.dtype}",
                               hint="give a float array shaped like the model input, batch first")
    if a.size == 0:
        raise CalibrationError("calibration data is empty", hint="give at least one sample, batch first")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise CalibrationError(f"calibration data has {bad} NaN or infinite value(s)",
                               hint="clean the samples (or drop the bad ones) and try again")
    out = np.asarray(a, dtype=dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        top = float(np.abs(a.astype(np.float64)).max())
        raise CalibrationError(f"calibration values overflow the model input's type {out.dtype} "
                               f"(largest magnitude {top:.4g}, the type holds {float(np.finfo(out.dtype).max):.4g})",
                               hint="preprocess the samples the way the model expects (e.g. scaled / normalised)")
    return out


def bn_prefix(k: int) -> str:
    """Prefix of the tensors :func:`batch_stat_bn` adds for the BatchNorm at node index ``k``."""
    return f"_obspa_bsbn{k}_"


def bn_batch_stat_names(k: int) -> Tuple[str, str]:
    """The batch mean and variance tensors of the BatchNorm at node index ``k`` in a
    :func:`batch_stat_bn` graph."""
    return bn_prefix(k) + "mu", bn_prefix(k) + "var"


def batch_stat_bn(model, ranks: Optional[Dict[str, int]] = None):
    """A copy in which every BatchNormalization normalises with the statistics of the batch it
    sees (over all axes but the channel axis 1) instead of its running statistics. ``ranks``:
    tensor ranks when already known (otherwise from ONNX shape inference)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=17)
    inits = {i.name: i for i in m.graph.initializer}
    if ranks is None:
        try:
            ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
                     for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
        except Exception:
            ranks = {}
    nodes = []
    for k, n in enumerate(m.graph.node):
        if n.op_type != "BatchNormalization" or n.input[1] not in inits or n.input[2] not in inits:
            nodes.append(n)
            continue
        nodes += _batch_stat_nodes(m, n, k, ranks.get(n.input[0], 4) or 4, inits, opset)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def _batch_stat_nodes(m, n, k: int, rank: int, inits, opset: int) -> list:
    """The nodes that replace BatchNormalization ``n`` (node index ``k``) by a normalisation with
    the batch's own mean and variance; its scale, shift and epsilon are added to ``m``'s
    initializers."""
    axes = [0] + list(range(2, rank))
    eps = attr(n, "epsilon", 1e-5)
    pre = bn_prefix(k)
    shape = [1, -1] + [1] * (rank - 2)
    dt = numpy_helper.to_array(inits[n.input[1]]).dtype  # float16 models stay float16
    for src, dst in ((n.input[1], pre + "g"), (n.input[2], pre + "b")):
        arr = numpy_helper.to_array(inits[src]).astype(dt).reshape(shape)
        m.graph.initializer.append(numpy_helper.from_array(arr, dst))
    m.graph.initializer.append(numpy_helper.from_array(np.array(eps, dtype=dt), pre + "eps"))
    if opset >= 18:  # the axes are an input from opset 18 on
        m.graph.initializer.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), pre + "axes"))

    def reduce_mean(i, o):
        if opset >= 18:
            return helper.make_node("ReduceMean", [i, pre + "axes"], [o], keepdims=1)
        return helper.make_node("ReduceMean", [i], [o], axes=axes, keepdims=1)

    return [reduce_mean(n.input[0], pre + "mu"),
            helper.make_node("Sub", [n.input[0], pre + "mu"], [pre + "d"]),
            helper.make_node("Mul", [pre + "d", pre + "d"], [pre + "d2"]),
            reduce_mean(pre + "d2", pre + "var"),
            helper.make_node("Add", [pre + "var", pre + "eps"], [pre + "ve"]),
            helper.make_node("Sqrt", [pre + "ve"], [pre + "sd"]),
            helper.make_node("Div", [pre + "d", pre + "sd"], [pre + "z"]),
            helper.make_node("Mul", [pre + "z", pre + "g"], [pre + "zg"]),
            helper.make_node("Add", [pre + "zg", pre + "b"], [n.output[0]])]
