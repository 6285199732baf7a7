"""Quantization-aware training for TensorRT (explicit INT8, QDQ ONNX).

What TensorRT wants (see ``edgekit.quantize.rules``): the data input and the weight of every
Conv/Gemm/MatMul quantized; activations per-tensor symmetric INT8 (zero point 0, TensorRT has no
asymmetric INT8); weights per-channel symmetric INT8 on the output-channel axis; bias float; no
QDQ on op outputs or around BN/ReLU (TensorRT fuses Conv+BN+ReLU itself); in a residual Add the skip
input is quantized and the conv branch not, so Conv+Add fuse into one INT8 kernel.

The flow::

    qmodel, report = prepare_qat(model)          # fx trace, fold BN, wrap Conv/Linear, quantize skips
    calibrate(qmodel, batches)                   # activation amax from data (max or percentile)
    digits.train(qmodel, X, y, epochs=1, lr=...) # fine-tune with fake quant (straight-through estimator)
    export_qat_onnx(qmodel, "model.qdq.onnx", example)

Export (torch 2.13, checked in tests/quantize/test_qat.py):

* TorchScript exporter (``dynamo=False``, the default here): eager fake quant
  (``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine``) becomes
  QuantizeLinear/DequantizeLinear. The quantizer's scale and zero point must be tensors (buffers);
  a zero point computed in forward shows up as a Cast chain, which :func:`fold_weight_quantizers`
  folds away.
* dynamo exporter (``dynamo=True``): works too, *provided* nothing calls ``.item()`` / ``float()``
  on a tensor in forward (``torch.export`` rejects the data-dependent value; that is why the scales
  are buffers, not Python floats). It only has opset >= 18 implementations and the down-conversion
  to 17 fails on these graphs, so the file comes out at opset 18. It also merges the duplicate Q/DQ
  pairs that a shared quantizer produces. ORT outputs match the torch fake-quant model and the QDQ
  rule checker passes on both.

After export the weight ``QuantizeLinear`` nodes are folded into int8 initializers
(``int8 W -> DequantizeLinear(axis 0) -> Conv``), so the file stores INT8 weights and the 2:4 checker
reads the exact values TensorRT will use.
"""

from __future__ import annotations

import copy
import functools
import io
import operator
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import ExportError, InputError, require
from edgekit.graph.io import save_model
from edgekit.quantize.graphutil import attr

# int8 range used by the fake quant: ONNX QuantizeLinear saturates int8 to [-128, 127]; the scale is
# amax / 127 so symmetric values land in [-127, 127].
QMIN, QMAX = -128, 127


def _torch():
    return require("torch", "torch", "run quantization-aware training")


@functools.lru_cache(maxsize=None)
def _modules():
    """The fake-quant module classes ``(TensorQuantizer, QuantLayer)``, built once on first use: they
    subclass ``torch.nn.Module`` and torch is imported lazily."""
    torch = _torch()
    return _tensor_quantizer_class(torch), _quant_layer_class(torch)


def _tensor_quantizer_class(torch):
    nn = torch.nn

    class TensorQuantizer(nn.Module):
        """Per-tensor symmetric INT8 fake quant of an activation, with a calibrated ``amax``.

        ``mode``: ``"calib"`` records statistics and passes the input through; ``"quant"`` fake
        quantizes (straight-through estimator: gradient 1 inside [-amax, amax], 0 outside);
        ``"off"`` passes through.
        """

        def __init__(self, method: str = "max", percentile: float = 99.99):
            super().__init__()
            self.register_buffer("amax", torch.tensor(0.0))
            self.register_buffer("scale", torch.tensor(1.0))
            self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
            self.method = method
            self.percentile = percentile
            self.mode = "off"
            self._stats: List[float] = []

        def forward(self, x):
            if self.mode == "calib":
                a = x.detach().abs().float().flatten()
                if self.method == "percentile":
                    if a.numel() > 200_000:
                        a = a[torch.randperm(a.numel(), device=a.device)[:200_000]]
                    self._stats.append(float(torch.quantile(a, self.percentile / 100.0)))
                else:
                    self._stats.append(float(a.max()) if a.numel() else 0.0)
                return x
            if self.mode == "quant":
                # scale and zero point as buffers: both exporters turn them into constant initializers
                # (a Python float from amax.item() would be a data-dependent value for torch.export)
                return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, QMIN, QMAX)
            return x

        def set_amax(self, value: float) -> None:
            self.amax.fill_(max(float(value), 1e-8))
            self.scale.fill_(float(self.amax) / 127.0)

        def finish_calibration(self) -> None:
            if self._stats:
                value = max(self._stats) if self.method == "max" else statistics.fmean(self._stats)
                self.set_amax(value)
            self._stats = []

    return TensorQuantizer


def _quant_layer_class(torch):
    nn = torch.nn

    class QuantLayer(nn.Module):
        """A Conv/Linear with fake-quantized input (per-tensor) and weight (per-channel, axis 0).

        The weight amax is the live per-output-channel max |w| (TensorRT derives weight scales from
        the weights themselves); the bias stays float.
        """

        def __init__(self, layer, input_quantizer):
            super().__init__()
            self.layer = layer
            self.input_quantizer = input_quantizer
            self.quant_weight = True
            # set by export: the scales as a buffer so they become ONNX initializers, not a subgraph
            self.register_buffer("frozen_scale", None)

        def weight_scale(self):
            if self.frozen_scale is not None:
                return self.frozen_scale
            amax = self.layer.weight.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8)
            return (amax / 127.0).float()

        def quantized_weight(self):
            w = self.layer.weight
            if not self.quant_weight:
                return w
            scale = self.weight_scale()
            zp = torch.zeros(scale.shape, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, QMIN, QMAX)

        def forward(self, x):
            x = self.input_quantizer(x)
            w = self.quantized_weight()
            if isinstance(self.layer, nn.Linear):
                return nn.functional.linear(x, w, self.layer.bias)
            return self.layer._conv_forward(x, w, self.layer.bias)

    return QuantLayer


@dataclass
class QatReport:
    """What ``prepare_qat`` changed: quantized and float layers, quantized residual skips, BN folding."""

    quantized: List[str] = field(default_factory=list)
    float_layers: List[Dict[str, str]] = field(default_factory=list)   # {"layer", "reason"}
    skip_quantizers: List[str] = field(default_factory=list)          # residual Adds whose skip is quantized
    bn_folded: bool = False
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"quantized": list(self.quantized), "float_layers": list(self.float_layers),
                "skip_quantizers": list(self.skip_quantizers), "bn_folded": self.bn_folded, "notes": list(self.notes)}


def _channels(mod) -> Tuple[int, int]:
    w = mod.weight
    if w.dim() == 2:
        return int(w.shape[1]), int(w.shape[0])
    return int(w.shape[1]) * int(getattr(mod, "groups", 1)), int(w.shape[0])


def prepare_qat(model, fold_bn: bool = True, min_channels: int = 16, exclude: Sequence[str] = (),
                method: str = "max", quantize_residual: bool = True):
    """Return ``(qmodel, report)``: an fx GraphModule copy of ``model`` with fake quant inserted.

    * BN folded into the preceding conv (``fold_bn``; needs eval-mode statistics, the copy is put in
      eval mode first). TensorRT fuses Conv+BN itself, so folding only changes where it happens.
    * Conv1d/2d/3d and Linear with ``min(C_in, C_out) >= min_channels`` get a per-tensor input
      quantizer and per-channel weight fake quant; thinner ones stay float (they rarely gain from
      INT8 and the rule checker only warns about them).
    * Residual ``add``: the skip input gets a quantizer (shared with a conv reading the same tensor
      when there is one), the conv branch does not.
    The input model is not modified.
    """
    _torch()  # DependencyMissingError without torch
    if method not in ("max", "percentile"):
        raise InputError(f"unknown calibration method '{method}'", hint="use 'max' or 'percentile'")
    TensorQuantizer, QuantLayer = _modules()
    report = QatReport()
    gm = _trace(copy.deepcopy(model).eval(), fold_bn, report)
    quantizers = _Quantizers(gm, lambda: TensorQuantizer(method))
    quantized_nodes = _wrap_layers(gm, QuantLayer, quantizers, set(exclude), min_channels, report)
    _quantize_matmuls(gm, quantizers, report)
    if quantize_residual:
        _quantize_residual_skips(gm, quantized_nodes, quantizers, report)
    gm.recompile()
    gm.graph.lint()
    return gm, report


class _Quantizers:
    """The activation quantizers added to a traced model: one per source tensor (fx node), shared
    by every quantized op that reads it."""

    def __init__(self, gm, make: Callable[[], object]):
        self.gm = gm
        self.make = make
        self.of_node: Dict[object, str] = {}

    def for_input(self, src) -> str:
        """The submodule name of the quantizer of tensor ``src``, added on first request."""
        qname = self.of_node.get(src)
        if qname is None:
            qname = f"_qat_act{len(self.of_node) + 1}"
            self.gm.add_submodule(qname, self.make())
            self.of_node[src] = qname
        return qname


def _trace(model, fold_bn: bool, report: QatReport):
    """fx-trace ``model`` (an eval-mode copy), folding BN into the preceding convs when asked."""
    import torch  # lazy: torch is optional
    import torch.fx as fx  # lazy: torch is optional

    try:
        if fold_bn:
            from torch.fx.experimental.optimization import fuse  # lazy: torch is optional

            gm = fuse(model)
            report.bn_folded = True
        else:
            gm = fx.symbolic_trace(model)
    except Exception as exc:  # tracing failures come in many types
        raise InputError(f"the model cannot be traced by torch.fx ({type(exc).__name__}: {str(exc)[:160]})",
                         hint="QAT rewrites the traced graph; make forward() fx-traceable") from exc
    if any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in gm.modules()):
        report.notes.append("some BatchNorm layers were not folded (BN not directly after a conv); "
                            "TensorRT fuses them at build time")
    return gm


def _wrap_layers(gm, quant_layer, quantizers: _Quantizers, excluded: set, min_channels: int, report: QatReport) -> set:
    """Replace every Conv/Linear wide enough and not excluded by a QuantLayer; returns their fx nodes."""
    import torch  # lazy: torch is optional

    nn = torch.nn
    mods = dict(gm.named_modules())
    quantized_nodes = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        mod = mods.get(node.target)
        if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        cin, cout = _channels(mod)
        if node.target in excluded:
            report.float_layers.append({"layer": node.target, "reason": "excluded by request"})
            continue
        if min(cin, cout) < min_channels:
            report.float_layers.append({"layer": node.target,
                                        "reason": f"thin (C_in={cin}, C_out={cout} < {min_channels}): left float"})
            continue
        wrapped = quant_layer(mod, gm.get_submodule(quantizers.for_input(node.args[0])))
        parent, _, leaf = node.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, wrapped)
        report.quantized.append(node.target)
        quantized_nodes.add(node)
    return quantized_nodes


def _quantize_matmuls(gm, quantizers: _Quantizers, report: QatReport) -> None:
    """Activation x activation matmuls (attention): both inputs per-tensor INT8, as TensorRT's rule
    for MatMul asks; there is no weight to quantize per channel."""
    import torch.fx as fx  # lazy: torch is optional

    for node in list(gm.graph.nodes):
        if not _is_matmul(node) or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not isinstance(a, fx.Node) or not isinstance(b, fx.Node):
            continue
        new_args = []
        for src in (a, b):
            qname = quantizers.for_input(src)
            with gm.graph.inserting_before(node):
                new_args.append(gm.graph.call_module(qname, (src,)))
        node.args = tuple(new_args) + tuple(node.args[2:])
        report.quantized.append(node.name)


def _is_matmul(node) -> bool:
    import torch  # lazy: torch is optional

    if node.op == "call_function" and node.target in (operator.matmul, torch.matmul, torch.bmm):
        return True
    return node.op == "call_method" and node.target in ("matmul", "bmm", "__matmul__")


def _is_add(node) -> bool:
    if node.op == "call_function" and node.target in (operator.add, operator.iadd):
        return True
    import torch  # lazy: torch is optional

    if node.op == "call_function" and node.target is torch.add:
        return True
    return node.op == "call_method" and node.target in ("add", "add_", "__add__")


def _quantize_residual_skips(gm, quantized_nodes, quantizers: _Quantizers, report: QatReport) -> None:
    """Give the skip input of each residual add a quantizer when its conv branch is quantized."""
    import torch.fx as fx  # lazy: torch is optional

    depth: Dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        ins = [a for a in node.all_input_nodes]
        depth[node] = max((depth.get(a, 0) for a in ins), default=0) + 1
    for node in list(gm.graph.nodes):
        if not _is_add(node) or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not isinstance(a, fx.Node) or not isinstance(b, fx.Node):
            continue
        branch = [a in quantized_nodes, b in quantized_nodes]
        convs = [_produced_by_layer(gm, a), _produced_by_layer(gm, b)]
        if not any(convs):
            continue
        if all(convs):
            skip_idx = 0 if depth[a] < depth[b] else 1
        else:
            skip_idx = 1 if convs[0] else 0
        if not branch[1 - skip_idx]:
            continue  # the fusing conv runs in float: nothing to line up with
        skip = node.args[skip_idx]
        qname = quantizers.for_input(skip)
        with gm.graph.inserting_before(node):
            qnode = gm.graph.call_module(qname, (skip,))
        args = list(node.args)
        args[skip_idx] = qnode
        node.args = tuple(args)
        report.skip_quantizers.append(node.name)


def _produced_by_layer(gm, node) -> bool:
    """True when ``node`` is the output of a Conv/Linear (wrapped or not), possibly through BN."""
    import torch  # lazy: torch is optional

    nn = torch.nn
    mods = dict(gm.named_modules())
    while node is not None and node.op == "call_module":
        mod = mods.get(node.target)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            node = node.args[0] if node.args else None
            continue
        return isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or type(mod).__name__ == "QuantLayer"
    return False


def _quantizers(model):
    return [m for m in model.modules() if type(m).__name__ == "TensorQuantizer"]


def calibrate(model, batches: Iterable, method: Optional[str] = None) -> int:
    """Run ``batches`` (tensors, or tuples whose first item is the input) through the model in
    calibration mode, set every activation quantizer's amax, then switch fake quant on.

    Returns the number of batches seen. Raises InputError for an empty iterable.
    """
    torch = _torch()
    qs = _quantizers(model)
    if not qs:
        raise InputError("the model has no activation quantizers", hint="call prepare_qat(model) first")
    for q in qs:
        q.mode = "calib"
        if method:
            q.method = method
    was_training = model.training
    model.eval()
    seen = 0
    with torch.no_grad():
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
            seen += 1
    model.train(was_training)
    if seen == 0:
        for q in qs:
            q.mode = "off"
        raise InputError("no calibration batches were given")
    for q in qs:
        q.finish_calibration()
        q.mode = "quant"
    return seen


def export_qat_onnx(model, path, example_input, opset: int = 17, dynamo: bool = False,
                    input_names: Sequence[str] = ("images",), output_names: Sequence[str] = ("logits",),
                    dynamic_batch: bool = True):
    """Export a calibrated QAT model to a QDQ ONNX file (written atomically) and return the path.

    The weight QuantizeLinear nodes are folded into int8 initializers afterwards.
    """
    torch = _torch()
    if opset < 13:
        raise InputError(f"opset {opset} < 13", hint="per-channel QuantizeLinear needs opset 13 or newer")
    qs = _quantizers(model)
    if any(float(q.amax) <= 0 for q in qs):
        raise InputError("some activation quantizers are not calibrated", hint="run calibrate(model, batches) first")
    model = model.eval()
    layers = [m for m in model.modules() if type(m).__name__ == "QuantLayer"]
    for layer in layers:
        layer.frozen_scale = layer.weight_scale().clone()
    buf = io.BytesIO()
    kwargs = dict(input_names=list(input_names), output_names=list(output_names), opset_version=opset)
    if dynamic_batch and not dynamo:
        kwargs["dynamic_axes"] = {input_names[0]: {0: "batch"}, output_names[0]: {0: "batch"}}
    try:
        with torch.no_grad():
            if dynamo:
                prog = torch.onnx.export(model, (example_input,), dynamo=True, **{k: v for k, v in kwargs.items()})
                proto = prog.model_proto
            else:
                torch.onnx.export(model, (example_input,), buf, dynamo=False, do_constant_folding=True, **kwargs)
                proto = onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        raise ExportError(f"QAT export failed ({'dynamo' if dynamo else 'torchscript'} exporter): "
                          f"{type(exc).__name__}: {str(exc)[:200]}",
                          hint="try the other exporter (dynamo=True/False)") from exc
    finally:
        for layer in layers:
            layer.frozen_scale = None
    proto = fold_weight_quantizers(proto)
    save_model(proto, path)
    return path


def fold_weight_quantizers(model):
    """Replace ``QuantizeLinear(const W)`` (and ``Cast(const)`` zero points) with int8 initializers.

    TensorRT folds these itself, but storing INT8 weights makes the file smaller and lets the 2:4
    checker read the quantized values TensorRT will use. Returns a new model.
    """
    out = copy.deepcopy(model)
    g = out.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.output and attr(n, "value") is not None:
            consts[n.output[0]] = numpy_helper.to_array(attr(n, "value"))
    graph_outputs = {o.name for o in g.output}
    consumers: Dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    new_nodes = []
    new_inits = []
    for n in g.node:
        if n.op_type in ("Cast", "Identity") and n.input[0] in consts and n.output[0] not in graph_outputs:
            value = consts[n.input[0]]
            if n.op_type == "Cast":
                value = value.astype(helper.tensor_dtype_to_np_dtype(attr(n, "to")))
            consts[n.output[0]] = value
            new_inits.append(numpy_helper.from_array(consts[n.output[0]], n.output[0]))
            continue
        if (n.op_type == "QuantizeLinear" and n.input[0] in consts and len(n.input) > 2 and n.input[1] in consts
                and n.input[2] in consts):
            x, s, zp = consts[n.input[0]].astype(np.float32), consts[n.input[1]], consts[n.input[2]]
            axis = int(attr(n, "axis", 1))
            if s.size > 1:
                shape = [1] * x.ndim
                shape[axis % x.ndim] = -1
                s = s.reshape(shape)
                zp = zp.reshape(shape)
            info = np.iinfo(zp.dtype)
            q = np.clip(np.rint(x / s) + zp.astype(np.int32), info.min, info.max).astype(zp.dtype)
            consts[n.output[0]] = q
            new_inits.append(numpy_helper.from_array(q, n.output[0]))
            continue
        new_nodes.append(n)
    new_nodes = _fold_weight_transposes(new_nodes, consts, new_inits, consumers, graph_outputs)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    # drop initializers nobody reads any more (the float weights)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    inits = {t.name for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in inits or i.name in used]
    del g.input[:]
    g.input.extend(graph_inputs)
    onnx.checker.check_model(out)
    return out


def _fold_weight_transposes(nodes, consts, new_inits, consumers, graph_outputs):
    """``int8 W -> DequantizeLinear(axis a) -> Transpose(perm)`` becomes ``int8 W^T -> DequantizeLinear``
    with the axis mapped through ``perm``. The TorchScript exporter writes Linear on 3-D inputs as
    MatMul(x, Transpose(W)); with the weight behind a DQ the Transpose is no longer constant-folded,
    and TensorRT's rules (and the checkers) want the DequantizeLinear right at the MatMul."""
    producer = {n.output[0]: n for n in nodes if n.output}
    drop = set()
    out = []
    for n in nodes:
        if n.op_type != "Transpose" or n.output[0] in graph_outputs:
            out.append(n)
            continue
        dq = producer.get(n.input[0])
        if (dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in consts
                or consumers.get(dq.output[0], 0) != 1):
            out.append(n)
            continue
        q = consts[dq.input[0]]
        perm = attr(n, "perm")
        perm = list(perm) if perm is not None else list(reversed(range(q.ndim)))
        axis = int(attr(dq, "axis", 1)) % q.ndim
        qt = np.ascontiguousarray(np.transpose(q, perm))
        name = dq.input[0] + "_t"
        consts[name] = qt
        new_inits.append(numpy_helper.from_array(qt, name))
        inputs = [name] + list(dq.input[1:])
        out.append(helper.make_node("DequantizeLinear", inputs, [n.output[0]], name=(dq.name or "dq") + "_t",
                                    axis=perm.index(axis)))
        drop.add(id(dq))
    return [n for n in out if id(n) not in drop]
