"""Fine-tune the weights of an ONNX graph in PyTorch, keeping its sparsity, and write them back.

Why: graph-level pruning (``edgekit.prune``) and one-shot 2:4 (``apply_nm_onnx``) happen on the ONNX
model, where the original ``nn.Module`` no longer matches the pruned shapes. A short fine-tune is
what brings the accuracy back, so this module runs the ONNX graph itself as a torch module (one
small handler per op type, in the house style of one table keyed by ``op_type``), trains the float
initializers that feed Conv/Gemm/MatMul/BatchNormalization, re-zeros the pruned weights after every
optimizer step, and copies the trained values back into a copy of the ModelProto. The graph
structure is never changed. An op missing from the table raises ``UnsupportedOpError``.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Sequence

import numpy as np
from onnx import numpy_helper

from edgekit.errors import InputError, UnsupportedOpError, require
from edgekit.graph.view import attrs, model_is_quantized


def _pads_2(pads, nd):
    """ONNX pads [b1..bn, e1..en] -> (symmetric tuple) or None when asymmetric."""
    if not pads:
        return (0,) * nd
    begin, end = list(pads[:nd]), list(pads[nd:])
    return tuple(begin) if begin == end else None


def _handlers() -> Dict[str, Callable]:
    """``{op_type: handler(inputs, attributes) -> output}`` for every op the fine-tuner runs."""
    torch = require("torch", "torch", "fine-tune ONNX weights")
    table: Dict[str, Callable] = {}
    table.update(_layer_handlers(torch))
    table.update(_pointwise_handlers(torch))
    table.update(_shape_handlers(torch))
    return table


def _layer_handlers(torch) -> Dict[str, Callable]:
    """Conv, Gemm / MatMul, pooling and BatchNormalization."""
    F = torch.nn.functional

    def _pad_input(x, pads, nd, value=0.0):
        sym = _pads_2(pads, nd)
        if sym is not None:
            return x, sym
        # F.pad wants the last dim first: (s_begin, s_end, r_begin, r_end)
        spec = []
        for i in reversed(range(nd)):
            spec += [pads[i], pads[i + nd]]
        return F.pad(x, spec, value=value), (0,) * nd

    def conv(ins, a):
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        nd = w.dim() - 2
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise UnsupportedOpError("Conv with auto_pad SAME_* is not supported by the ONNX fine-tuner")
        x, pad = _pad_input(x, a.get("pads"), nd)
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
        return fn(x, w, b, stride=tuple(a.get("strides", [1] * nd)), padding=pad,
                  dilation=tuple(a.get("dilations", [1] * nd)), groups=int(a.get("group", 1)))

    def gemm(ins, a):
        A, B = ins[0], ins[1]
        if a.get("transA", 0):
            A = A.t()
        if a.get("transB", 0):
            B = B.t()
        y = a.get("alpha", 1.0) * (A @ B)
        if len(ins) > 2 and ins[2] is not None:
            y = y + a.get("beta", 1.0) * ins[2]
        return y

    def pool(kind):
        def run(ins, a):
            x = ins[0]
            k = list(a["kernel_shape"])
            nd = len(k)
            pads = a.get("pads")
            strides = tuple(a.get("strides", [1] * nd))
            if kind == "max":
                x, pad = _pad_input(x, pads, nd, value=float("-inf"))
                fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
                return fn(x, k, strides, pad, tuple(a.get("dilations", [1] * nd)), bool(a.get("ceil_mode", 0)))
            x, pad = _pad_input(x, pads, nd)
            fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
            return fn(x, k, strides, pad, bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0)))
        return run

    def bn(ins, a):
        x, scale, bias, mean, var = ins[:5]
        mean, var = mean.detach(), var.detach()    # statistics, never trained
        stats = a.get("_stats")
        if stats is not None:
            # recalibration pass: normalise with this batch's statistics (as torch BN does in train
            # mode) and accumulate them for the new running mean / variance
            dims = [0] + list(range(2, x.dim()))
            bm = x.mean(dim=dims)
            bv = x.var(dim=dims, unbiased=False)
            stats.append((bm.detach(), bv.detach(), x.numel() // x.shape[1]))
            return F.batch_norm(x, bm, bv, scale, bias, training=False, eps=a.get("epsilon", 1e-5))
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))

    return {
        "Conv": conv,
        "Gemm": gemm,
        "MatMul": lambda i, a: i[0] @ i[1],
        "BatchNormalization": bn,
        "MaxPool": pool("max"),
        "AveragePool": pool("avg"),
        "GlobalAveragePool": lambda i, a: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
        "GlobalMaxPool": lambda i, a: i[0].amax(dim=tuple(range(2, i[0].dim())), keepdim=True),
    }


def _pointwise_handlers(torch) -> Dict[str, Callable]:
    """Arithmetic, activations, Clip, Softmax and the ops that pass their input through."""
    F = torch.nn.functional

    def clip(ins, a):
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
        lo = float(lo) if lo is not None else None
        hi = float(hi) if hi is not None else None
        return ins[0].clamp(lo, hi)

    return {
        "Add": lambda i, a: i[0] + i[1],
        "Sub": lambda i, a: i[0] - i[1],
        "Mul": lambda i, a: i[0] * i[1],
        "Div": lambda i, a: i[0] / i[1],
        "Relu": lambda i, a: torch.relu(i[0]),
        "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
        "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
        "Tanh": lambda i, a: torch.tanh(i[0]),
        "HardSigmoid": lambda i, a: (a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5)).clamp(0, 1),
        "HardSwish": lambda i, a: F.hardswish(i[0]),
        "Gelu": lambda i, a: F.gelu(i[0]),
        "Erf": lambda i, a: torch.erf(i[0]),
        "Sqrt": lambda i, a: torch.sqrt(i[0]),
        "Pow": lambda i, a: torch.pow(i[0], i[1]),
        "Clip": clip,
        "Softmax": lambda i, a: torch.softmax(i[0], dim=a.get("axis", -1)),
        "Identity": lambda i, a: i[0],
        "Dropout": lambda i, a: i[0],
        "Cast": lambda i, a: i[0],
    }


def _shape_handlers(torch) -> Dict[str, Callable]:
    """Reshaping, reductions, indexing and shape ops."""

    def flatten(ins, a):
        x = ins[0]
        axis = a.get("axis", 1) % max(x.dim(), 1)
        lead = 1
        for d in x.shape[:axis]:
            lead *= int(d)
        return x.reshape(lead, -1)

    def reshape(ins, a):
        x, shape = ins[0], [int(v) for v in ins[1].tolist()]
        if not a.get("allowzero", 0):
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)

    def reduce_mean(ins, a):
        x = ins[0]
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(v) for v in ins[1].tolist()]
        if axes is None:
            axes = list(range(x.dim()))
        return x.mean(dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))

    def unsqueeze(ins, a):
        axes = a.get("axes") or [int(v) for v in ins[1].tolist()]
        x = ins[0]
        for ax in sorted(v % (x.dim() + len(axes)) for v in axes):
            x = x.unsqueeze(ax)
        return x

    def squeeze(ins, a):
        axes = a.get("axes") or ([int(v) for v in ins[1].tolist()] if len(ins) > 1 and ins[1] is not None else None)
        x = ins[0]
        if axes is None:
            return x.squeeze()
        for ax in sorted((v % x.dim() for v in axes), reverse=True):
            x = x.squeeze(ax)
        return x

    def gather(ins, a):
        x, idx = ins[0], ins[1].long()
        axis = a.get("axis", 0) % x.dim()
        return torch.index_select(x, axis, idx.reshape(-1)).reshape(
            list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))

    def transpose(ins, a):
        x = ins[0]
        return x.permute(*a["perm"]) if "perm" in a else x.permute(*reversed(range(x.dim())))

    return {
        "ReduceMean": reduce_mean,
        "Flatten": flatten,
        "Reshape": reshape,
        "Transpose": transpose,
        "Concat": lambda i, a: torch.cat(list(i), dim=a["axis"]),
        "Shape": lambda i, a: torch.tensor(list(i[0].shape), dtype=torch.int64),
        "Gather": gather,
        "Unsqueeze": unsqueeze,
        "Squeeze": squeeze,
    }


def to_torch(model, trainable_ops: Sequence[str] = ("Conv", "Gemm", "MatMul", "BatchNormalization")):
    """Wrap an ONNX ModelProto as a ``torch.nn.Module`` whose float initializers feeding
    ``trainable_ops`` are parameters. ``module.to_onnx()`` returns a copy of the model with the
    current parameter values; ``module.keep_zeros()`` is an after-step hook that re-zeros every
    trainable weight entry that was zero at wrap time (pruned channels, 2:4 holes)."""
    torch = require("torch", "torch", "fine-tune ONNX weights")
    if model_is_quantized(model):
        raise InputError("the model is already quantized", hint="fine-tune the float model, then quantize it")
    model = _split_shared_initializers(model)
    table = _handlers()
    unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in table and n.op_type != "Constant"})
    if unknown:
        raise UnsupportedOpError(f"the ONNX fine-tuner has no handler for: {', '.join(unknown)}",
                                 hint="fine-tune the PyTorch model instead, or extend edgekit.sparsity.onnx_torch")
    return _onnx_module_class(torch)(model, table, _trainable(model, trainable_ops))


def _trainable(model, trainable_ops: Sequence[str]) -> set:
    """Names of the float32 initializers that feed ``trainable_ops`` as weights (not BN statistics)."""
    inits = {t.name: t for t in model.graph.initializer}
    trainable = set()
    for n in model.graph.node:
        if n.op_type in trainable_ops:
            # BN mean/var (inputs 3, 4) are statistics, not trainable parameters
            idx = range(1, 3) if n.op_type == "BatchNormalization" else range(1, len(n.input))
            trainable.update(n.input[i] for i in idx if n.input[i] in inits
                             and numpy_helper.to_array(inits[n.input[i]]).dtype == np.float32)
    return trainable


def _constant_arrays(model):
    """``(output name, writable array)`` of every Constant node's value."""
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    yield n.output[0], numpy_helper.to_array(a.t).copy()


def _pooled_stats(items):
    """Mean and variance over all recalibration batches from ``(mean, var, count)`` per batch: the
    pooled variance is the within-batch variance plus the spread of the batch means."""
    total = sum(c for _, _, c in items)
    mean = sum(m * c for m, _, c in items) / total
    var = sum((v + (m - mean) ** 2) * c for m, v, c in items) / total
    return mean, var


def _onnx_module_class(torch):
    """The ``torch.nn.Module`` class that runs an ONNX graph with a handler table."""

    class OnnxModule(torch.nn.Module):
        """An ONNX graph run node by node; its trainable initializers are ``params``."""

        def __init__(self, model, table: Dict[str, Callable], trainable: set):
            super().__init__()
            self.model = model
            self.table = table
            self.params = torch.nn.ParameterDict()
            self.consts: Dict[str, object] = {}
            self._key = {}
            inits = {t.name: t for t in model.graph.initializer}
            for name, t in inits.items():
                value = torch.from_numpy(numpy_helper.to_array(t).copy())
                if name in trainable:
                    key = f"p{len(self._key)}"
                    self._key[name] = key
                    self.params[key] = torch.nn.Parameter(value)
                else:
                    self.consts[name] = value
            for name, arr in _constant_arrays(model):
                self.consts[name] = torch.from_numpy(arr)
            self.inputs = [i.name for i in model.graph.input if i.name not in inits]
            self.outputs = [o.name for o in model.graph.output]
            self._bn_stats = None
            self._bn_names = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization"
                              for i in (3, 4) if len(n.input) > i and n.input[i] in inits}
            self._zero = {k: (p.detach() == 0) for k, p in self.params.items() if (p.detach() == 0).any()}

        def forward(self, *xs):
            env = dict(self.consts)
            for name, key in self._key.items():
                env[name] = self.params[key]
            for name, x in zip(self.inputs, xs):
                env[name] = x
            for n in self.model.graph.node:
                if n.op_type == "Constant":
                    continue
                ins = [env[i] if i else None for i in n.input]
                a = attrs(n)
                if self._bn_stats is not None and n.op_type == "BatchNormalization":
                    a["_stats"] = self._bn_stats.setdefault(n.output[0], [])
                env[n.output[0]] = self.table[n.op_type](ins, a)
            res = [env[o] for o in self.outputs]
            return res[0] if len(res) == 1 else tuple(res)

        def recalibrate_bn(self, batches) -> int:
            """Re-estimate every BatchNormalization mean/variance from ``batches`` (forward only).

            After pruning or 2:4 the stored statistics are stale; this is the cheap first step of
            recovery. Returns the number of batches seen."""
            self._bn_stats = {}
            seen = 0
            try:
                with torch.no_grad():
                    for batch in batches:
                        self(batch[0] if isinstance(batch, (tuple, list)) else batch)
                        seen += 1
                stats = self._bn_stats
            finally:
                self._bn_stats = None
            if seen == 0:
                raise InputError("no batches given to recalibrate BatchNorm")
            for n in self.model.graph.node:
                if n.op_type != "BatchNormalization" or n.output[0] not in stats:
                    continue
                mean, var = _pooled_stats(stats[n.output[0]])
                for name, value in ((n.input[3], mean), (n.input[4], var)):
                    if name in self.consts:
                        self.consts[name] = value.to(self.consts[name].dtype)
            return seen

        def keep_zeros(self):
            """After-step hook: re-zero the weights that were zero when the graph was wrapped."""
            def hook(_model=None):
                with torch.no_grad():
                    for key, zero in self._zero.items():
                        self.params[key].masked_fill_(zero, 0.0)
            return hook

        def to_onnx(self):
            """A copy of the model with the current parameter values and BatchNorm statistics."""
            out = copy.deepcopy(self.model)
            for t in out.graph.initializer:
                if t.name in self._key:
                    arr = self.params[self._key[t.name]].detach().cpu().numpy().astype(np.float32)
                    t.CopyFrom(numpy_helper.from_array(arr, t.name))
                elif t.name in self._bn_names:
                    arr = self.consts[t.name].detach().cpu().numpy()
                    t.CopyFrom(numpy_helper.from_array(arr, t.name))
            return out

    return OnnxModule


def _split_shared_initializers(model):
    """Copy of ``model`` where ``Identity(initializer)`` nodes become initializers of their own.

    The TorchScript exporter de-duplicates equal initializers that way (a fresh BN's weight of ones
    and another BN's running_var of ones end up as one tensor); training them as one parameter, or
    writing refreshed statistics into it, would silently couple unrelated tensors.
    """
    out = copy.deepcopy(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    keep = []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            t = copy.deepcopy(inits[n.input[0]])
            t.name = n.output[0]
            g.initializer.append(t)
            inits[t.name] = t
            continue
        keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    return out
