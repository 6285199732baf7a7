"""ONNX graphs that imitate what foreign converters emit for ordinary layers.

PyTorch's exporters are not the only source of ONNX: tf2onnx (TensorFlow/Keras) and paddle2onnx
(PaddlePaddle) write the same layers with different op patterns, and a graph-level pruner has to
follow channels through all of them. Each builder below returns a :class:`Pattern`: a small model
built with ``onnx.helper`` and NumPy weights, plus what the pruner should be able to do with it.

Patterns emulated (the converter they come from in brackets):
* NHWC input with Transpose around every conv and back before the head        [tf2onnx]
* Linear as MatMul + Add with a ``[in, out]`` weight instead of Gemm(transB=1) [tf2onnx, paddle2onnx]
* a Linear whose weight is a Transpose'd initializer                           [tf2onnx, older torch]
* weights given as Constant nodes                                              [paddle2onnx, tf2onnx]
* weights behind Identity, behind Cast (fp16 -> fp32), behind DequantizeLinear  [optimisers, mixed precision, QDQ]
* BatchNormalization left unfolded after a bias-free conv vs folded into it      [paddle2onnx, torch training export]
* Reshape / Flatten of a feature map straight into a Linear                     [Keras Flatten, paddle]
* Squeeze / Unsqueeze around a Linear inside squeeze-excitation gating           [tf2onnx]
* ReduceMean used as global average pooling                                     [tf2onnx, paddle2onnx]
* explicit Pad ops before convs (constant and reflect)                          [tf2onnx SAME padding, paddle]
* Resize (nearest upsampling) into a skip Concat                                [tf2onnx, paddle2onnx]
* Split with explicit sizes, Slice on the channel axis                          [tf.split, paddle]
* channel shuffle (Reshape-Transpose-Reshape)                                   [ShuffleNet in any framework]
* DepthToSpace (DCR and CRD) / SpaceToDepth                                     [tf.nn.depth_to_space]
* depthwise conv emitted as Conv(group=C) after a transposed HWCM weight        [tf2onnx DepthwiseConv2D]
* grouped conv emitted as Split -> Conv per group -> Concat                     [tf2onnx for old TF]
* LayerNorm decomposed into ReduceMean/Sub/Pow/Sqrt/Div on NHWC                  [tf2onnx Keras LayerNormalization]
* multi-head attention from MatMuls with Reshape/Transpose to heads              [tf2onnx / paddle transformer]

``Pattern.mask_equivalent`` says whether "pruned output == original output with the pruned channels
zeroed" holds for the pattern (it does not where a normalisation mixes statistics across the pruned
axis, e.g. LayerNorm over channels); ``must_prune`` says whether the issue requires the pattern to
be pruned (rather than refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class Pattern:
    name: str
    model: onnx.ModelProto
    must_prune: bool = True
    mask_equivalent: bool = True
    note: str = ""
    # stored tensors that a 0.5 ratio must shrink (the layer the pattern is about, e.g. Q/K/V weights)
    must_shrink: List[str] = field(default_factory=list)

    def feeds(self, seed: int = 0) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        out = {}
        init = {i.name for i in self.model.graph.initializer}
        for vi in self.model.graph.input:
            if vi.name in init:
                continue
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            out[vi.name] = rng.standard_normal(shape).astype(np.float32)
        return out


class GraphBuilder:
    """Tiny helper around onnx.helper: unique names, float32 random weights, initializer modes."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.outputs: List[onnx.ValueInfoProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def input(self, name: str, shape: Sequence[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def output(self, tensor: str, shape: Optional[Sequence[int]] = None) -> None:
        self.outputs.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None if shape is None else list(shape)))

    def const(self, array: np.ndarray, base: str = "w", mode: str = "init") -> str:
        """A constant tensor. mode: init | constant (Constant node) | identity (init -> Identity)."""
        n = self.name(base)
        if mode == "constant":
            self.nodes.append(helper.make_node("Constant", [], [n], value=numpy_helper.from_array(array, n + "_value")))
            return n
        self.inits.append(numpy_helper.from_array(array, n))
        if mode == "identity":
            return self.op("Identity", [n])
        return n

    def ints(self, values: Sequence[int], base: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), base)

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> str:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def rand(self, *shape: int, scale: Optional[float] = None) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return (self.rng.standard_normal(shape) * s).astype(np.float32)

    # --- layers -------------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1, bias: bool = True,
             mode: str = "init", pad: Optional[int] = None, weight: Optional[str] = None) -> str:
        w = weight if weight is not None else self.const(self.rand(cout, cin // group, k, k), "conv_w", mode)
        ins = [w]
        if bias:
            ins.append(self.const(self.rand(cout, scale=0.1), "conv_b", mode))
        p = k // 2 if pad is None else pad
        return self.op("Conv", [x] + ins, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4, group=group)

    def bn(self, x: str, c: int) -> str:
        scale = (self.rng.random(c) + 0.5).astype(np.float32)
        b = (self.rng.standard_normal(c) * 0.1).astype(np.float32)
        mean = (self.rng.standard_normal(c) * 0.1).astype(np.float32)
        var = (self.rng.random(c) + 0.5).astype(np.float32)
        ins = [self.const(a, nm) for a, nm in ((scale, "bn_scale"), (b, "bn_bias"), (mean, "bn_mean"), (var, "bn_var"))]
        return self.op("BatchNormalization", [x] + ins, epsilon=1e-5)

    def linear_matmul(self, x: str, fin: int, fout: int, mode: str = "init") -> str:
        """tf2onnx / paddle2onnx Linear: MatMul with a [in, out] weight, then Add of the bias."""
        self.last_weight = self.const(self.rand(fin, fout, scale=1 / np.sqrt(fin)), "mm_w", mode)
        y = self.op("MatMul", [x, self.last_weight])
        return self.op("Add", [y, self.const(self.rand(fout, scale=0.1), "mm_b", mode)])

    def gemm(self, x: str, fin: int, fout: int) -> str:
        return self.op("Gemm", [x, self.const(self.rand(fout, fin), "fc_w"), self.const(self.rand(fout, scale=0.1), "fc_b")],
                       transB=1)

    def build(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgekit-tests")
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        return model


# ---------------------------------------------------------------------------------------------
# builders: each returns a Pattern
# ---------------------------------------------------------------------------------------------

def tf_nhwc_convnet() -> Pattern:
    """tf2onnx Keras CNN: NHWC input, Transpose to NCHW, convs, Transpose back, ReduceMean(1,2) pool,
    Dense as MatMul + Add."""
    g = GraphBuilder(1)
    x = g.input("input_1", [1, 16, 16, 3])
    t = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    y = g.op("Relu", [g.conv(t, 3, 16)])
    y = g.op("Relu", [g.conv(y, 16, 32, stride=2)])
    y = g.op("Transpose", [y], perm=[0, 2, 3, 1])
    # Keras keeps activations NHWC between layers: the next conv gets its own Transpose in.
    y = g.op("Transpose", [y], perm=[0, 3, 1, 2])
    y = g.op("Relu", [g.conv(y, 32, 24)])
    y = g.op("Transpose", [y], perm=[0, 2, 3, 1])
    y = g.op("ReduceMean", [y], axes=[1, 2], keepdims=0)
    y = g.linear_matmul(y, 24, 10)
    g.output(y, [1, 10])
    return Pattern("tf_nhwc_convnet", g.build("tf_nhwc_convnet"))


def matmul_add_mlp() -> Pattern:
    """A Keras/Paddle MLP: every Dense is MatMul([in, out]) + Add."""
    g = GraphBuilder(2)
    x = g.input("x", [4, 32])
    y = g.op("Relu", [g.linear_matmul(x, 32, 64)])
    y = g.op("Relu", [g.linear_matmul(y, 64, 48)])
    y = g.linear_matmul(y, 48, 5)
    g.output(y, [4, 5])
    return Pattern("matmul_add_mlp", g.build("matmul_add_mlp"))


def transposed_weight_linear() -> Pattern:
    """Linear whose weight is stored [out, in] and fed through a Transpose node into MatMul, plus a
    Gemm with transB=0 on a [in, out] weight."""
    g = GraphBuilder(3)
    x = g.input("x", [2, 3, 8, 8])
    y = g.op("Relu", [g.conv(x, 3, 16)])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    wt = g.op("Transpose", [g.const(g.rand(32, 16), "fc1_w_out_in")], perm=[1, 0])
    y = g.op("Relu", [g.op("Add", [g.op("MatMul", [y, wt]), g.const(g.rand(32, scale=0.1), "fc1_b")])])
    y = g.op("Gemm", [y, g.const(g.rand(32, 6), "fc2_w_in_out"), g.const(g.rand(6, scale=0.1), "fc2_b")], transB=0)
    g.output(y, [2, 6])
    return Pattern("transposed_weight_linear", g.build("transposed_weight_linear"))


def constant_node_weights() -> Pattern:
    """paddle2onnx-style: conv and linear weights given as Constant nodes, not initializers."""
    g = GraphBuilder(4)
    x = g.input("x", [1, 3, 12, 12])
    y = g.op("Relu", [g.conv(x, 3, 16, mode="constant")])
    y = g.op("Relu", [g.conv(y, 16, 16, mode="constant")])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    y = g.linear_matmul(y, 16, 4, mode="constant")
    g.output(y, [1, 4])
    return Pattern("constant_node_weights", g.build("constant_node_weights"))


def identity_weights() -> Pattern:
    """Weights and biases reached through Identity nodes (left behind by graph optimisers)."""
    g = GraphBuilder(5)
    x = g.input("x", [1, 3, 12, 12])
    y = g.op("Relu", [g.conv(x, 3, 24, mode="identity")])
    y = g.op("Relu", [g.conv(y, 24, 16, mode="identity")])
    y = g.conv(y, 16, 8, mode="identity")
    g.output(y, [1, 8, 12, 12])
    return Pattern("identity_weights", g.build("identity_weights"))


def cast_fp16_weights() -> Pattern:
    """Mixed-precision export: fp16 weight initializers cast to fp32 right before the conv."""
    g = GraphBuilder(6)
    x = g.input("x", [1, 3, 12, 12])

    def w16(arr: np.ndarray, base: str) -> str:
        n = g.const(arr.astype(np.float16), base)
        return g.op("Cast", [n], to=TensorProto.FLOAT)

    y = g.op("Conv", [x, w16(g.rand(16, 3, 3, 3), "w16"), w16(g.rand(16, scale=0.1), "b16")], kernel_shape=[3, 3], pads=[1] * 4)
    y = g.op("Relu", [y])
    y = g.op("Conv", [y, w16(g.rand(24, 16, 3, 3), "w16"), w16(g.rand(24, scale=0.1), "b16")], kernel_shape=[3, 3], pads=[1] * 4)
    y = g.op("Relu", [y])
    y = g.op("Conv", [y, w16(g.rand(8, 24, 1, 1), "w16")], kernel_shape=[1, 1])
    g.output(y, [1, 8, 12, 12])
    return Pattern("cast_fp16_weights", g.build("cast_fp16_weights"))


def qdq_per_channel_weights() -> Pattern:
    """A QDQ graph: int8 weights with per-channel scales/zero points -> DequantizeLinear(axis=0) ->
    Conv, activations through per-tensor QuantizeLinear/DequantizeLinear pairs."""
    g = GraphBuilder(7)
    x = g.input("x", [1, 3, 12, 12])

    def qweight(cout: int, cin: int, k: int) -> str:
        w = g.rand(cout, cin, k, k)
        scale = (np.abs(w).reshape(cout, -1).max(1) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
        zp = np.zeros(cout, dtype=np.int8)
        return g.op("DequantizeLinear", [g.const(q, "wq"), g.const(scale, "wq_scale"), g.const(zp, "wq_zp")], axis=0)

    def qdq_act(t: str) -> str:
        s = g.const(np.asarray(0.05, dtype=np.float32), "act_scale")
        z = g.const(np.asarray(0, dtype=np.int8), "act_zp")
        return g.op("DequantizeLinear", [g.op("QuantizeLinear", [t, s, z]), s, z])

    y = g.op("Conv", [qdq_act(x), qweight(16, 3, 3), g.const(g.rand(16, scale=0.1), "b")], kernel_shape=[3, 3], pads=[1] * 4)
    y = qdq_act(g.op("Relu", [y]))
    y = g.op("Conv", [y, qweight(24, 16, 3), g.const(g.rand(24, scale=0.1), "b")], kernel_shape=[3, 3], pads=[1] * 4)
    y = qdq_act(g.op("Relu", [y]))
    y = g.op("Conv", [y, qweight(8, 24, 1)], kernel_shape=[1, 1])
    g.output(y, [1, 8, 12, 12])
    return Pattern("qdq_per_channel_weights", g.build("qdq_per_channel_weights"))


def bn_unfolded() -> Pattern:
    """paddle2onnx / training-mode export: bias-free Conv followed by an explicit BatchNormalization."""
    g = GraphBuilder(8)
    x = g.input("x", [1, 3, 12, 12])
    y = g.op("Relu", [g.bn(g.conv(x, 3, 16, bias=False), 16)])
    y = g.op("Relu", [g.bn(g.conv(y, 16, 32, bias=False, stride=2), 32)])
    y = g.bn(g.conv(y, 32, 16, bias=False, k=1), 16)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    y = g.gemm(y, 16, 5)
    g.output(y, [1, 5])
    return Pattern("bn_unfolded", g.build("bn_unfolded"))


def bn_folded() -> Pattern:
    """The same network with BN folded into conv weights/bias (torch eval export, tf2onnx)."""
    g = GraphBuilder(8)
    x = g.input("x", [1, 3, 12, 12])
    y = g.op("Relu", [g.conv(x, 3, 16)])
    y = g.op("Relu", [g.conv(y, 16, 32, stride=2)])
    y = g.conv(y, 32, 16, k=1)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    y = g.gemm(y, 16, 5)
    g.output(y, [1, 5])
    return Pattern("bn_folded", g.build("bn_folded"))


def reshape_into_linear() -> Pattern:
    """A conv map flattened by Reshape([N, -1]) (NCHW order) into MatMul + Add: each pruned channel
    removes H*W consecutive rows of the Linear weight."""
    g = GraphBuilder(9)
    x = g.input("x", [1, 3, 8, 8])
    y = g.op("Relu", [g.conv(x, 3, 16, stride=2)])  # [1,16,4,4]
    y = g.op("Reshape", [y, g.ints([1, -1])])
    y = g.op("Relu", [g.linear_matmul(y, 16 * 16, 32)])
    y = g.linear_matmul(y, 32, 4)
    g.output(y, [1, 4])
    return Pattern("reshape_into_linear", g.build("reshape_into_linear"))


def flatten_into_gemm() -> Pattern:
    """Flatten(axis=1) of a conv map into Gemm(transB=1) (torch nn.Flatten + nn.Linear)."""
    g = GraphBuilder(10)
    x = g.input("x", [2, 3, 8, 8])
    y = g.op("Relu", [g.conv(x, 3, 12, stride=2)])
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])  # [2,12,2,2]
    y = g.op("Flatten", [y], axis=1)
    y = g.gemm(y, 48, 7)
    g.output(y, [2, 7])
    return Pattern("flatten_into_gemm", g.build("flatten_into_gemm"))


def nhwc_flatten_into_linear() -> Pattern:
    """Keras Flatten on NHWC: Transpose to NHWC then Reshape([N,-1]): one channel maps to a strided
    (not contiguous) set of features of the Dense weight."""
    g = GraphBuilder(11)
    x = g.input("x", [1, 8, 8, 3])
    y = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    y = g.op("Relu", [g.conv(y, 3, 8, stride=2)])  # [1,8,4,4]
    y = g.op("Transpose", [y], perm=[0, 2, 3, 1])  # [1,4,4,8]
    y = g.op("Reshape", [y, g.ints([1, -1])])
    y = g.linear_matmul(y, 128, 6)
    g.output(y, [1, 6])
    return Pattern("nhwc_flatten_into_linear", g.build("nhwc_flatten_into_linear"))


def se_squeeze_unsqueeze() -> Pattern:
    """tf2onnx squeeze-excitation: ReduceMean(keepdims=0) -> MatMul+Add -> Relu -> MatMul+Add ->
    Sigmoid -> Unsqueeze(2,3) -> Mul broadcast gate; then a 1x1 conv."""
    g = GraphBuilder(12)
    x = g.input("x", [1, 3, 10, 10])
    f = g.op("Relu", [g.conv(x, 3, 32)])
    s = g.op("ReduceMean", [f], axes=[2, 3], keepdims=0)  # [1,32]
    s = g.op("Relu", [g.linear_matmul(s, 32, 8)])
    s = g.op("Sigmoid", [g.linear_matmul(s, 8, 32)])
    s = g.op("Unsqueeze", [s, g.ints([2, 3], "axes")])
    y = g.op("Mul", [f, s])
    y = g.conv(y, 32, 8, k=1)
    sq = g.op("Squeeze", [g.op("GlobalAveragePool", [y]), g.ints([2, 3], "axes")])
    g.output(sq, [1, 8])
    return Pattern("se_squeeze_unsqueeze", g.build("se_squeeze_unsqueeze"))


def se_reducemean_conv() -> Pattern:
    """paddle2onnx squeeze-excitation with 1x1 convs on a ReduceMean(keepdims=1) pool, HardSigmoid gate."""
    g = GraphBuilder(13)
    x = g.input("x", [1, 3, 10, 10])
    f = g.op("HardSwish", [g.conv(x, 3, 24)])
    s = g.op("ReduceMean", [f], axes=[2, 3], keepdims=1)
    s = g.op("Relu", [g.conv(s, 24, 8, k=1)])
    s = g.op("HardSigmoid", [g.conv(s, 8, 24, k=1)], alpha=1.0 / 6, beta=0.5)
    y = g.conv(g.op("Mul", [s, f]), 24, 6, k=1)
    g.output(y, [1, 6, 10, 10])
    return Pattern("se_reducemean_conv", g.build("se_reducemean_conv"))


def pad_ops() -> Pattern:
    """Explicit Pad before valid convs (tf SAME padding, paddle's pad2d), constant and reflect."""
    g = GraphBuilder(14)
    x = g.input("x", [1, 3, 12, 12])
    y = g.op("Pad", [x, g.ints([0, 0, 1, 1, 0, 0, 1, 1], "pads")], mode="constant")
    y = g.op("Relu", [g.conv(y, 3, 16, pad=0)])
    y = g.op("Pad", [y, g.ints([0, 0, 1, 1, 0, 0, 1, 1], "pads")], mode="reflect")
    y = g.op("Relu", [g.conv(y, 16, 16, pad=0)])
    y = g.op("Pad", [y, g.ints([0, 0, 0, 0, 0, 0, 1, 1], "pads"), g.const(np.asarray(0.0, np.float32), "pad_value")],
             mode="constant")
    y = g.conv(y, 16, 4, k=2, pad=0)
    g.output(y, [1, 4, 12, 12])
    return Pattern("pad_ops", g.build("pad_ops"))


def resize_skip_concat() -> Pattern:
    """Decoder stage: nearest Resize by scales, Concat with an encoder skip, conv."""
    g = GraphBuilder(15)
    x = g.input("x", [1, 3, 16, 16])
    skip = g.op("Relu", [g.conv(x, 3, 8)])
    low = g.op("Relu", [g.conv(skip, 8, 16, stride=2)])
    up = g.op("Resize", [low, "", g.const(np.asarray([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    y = g.op("Concat", [up, skip], axis=1)
    y = g.op("Relu", [g.conv(y, 24, 12)])
    y = g.conv(y, 12, 2, k=1)
    g.output(y, [1, 2, 16, 16])
    return Pattern("resize_skip_concat", g.build("resize_skip_concat"))


def split_sizes() -> Pattern:
    """Split with explicit (uneven) sizes as an input, two branches, Concat in swapped order."""
    g = GraphBuilder(16)
    x = g.input("x", [1, 3, 10, 10])
    y = g.op("Relu", [g.conv(x, 3, 24)])
    a, b = g.op("Split", [y, g.ints([8, 16], "split")], n_out=2, axis=1)
    a = g.op("Relu", [g.conv(a, 8, 8)])
    b = g.op("Relu", [g.conv(b, 16, 16)])
    y = g.op("Concat", [b, a], axis=1)
    y = g.conv(y, 24, 4, k=1)
    g.output(y, [1, 4, 10, 10])
    return Pattern("split_sizes", g.build("split_sizes"))


def slice_channels() -> Pattern:
    """Slice on the channel axis (GhostNet keep-first-k, CSP halves) and on a spatial axis."""
    g = GraphBuilder(17)
    x = g.input("x", [1, 3, 10, 10])
    y = g.op("Relu", [g.conv(x, 3, 32)])
    head = g.op("Slice", [y, g.ints([0], "starts"), g.ints([12], "ends"), g.ints([1], "axes")])
    tail = g.op("Slice", [y, g.ints([12], "starts"), g.ints([32], "ends"), g.ints([1], "axes")])
    tail = g.op("Relu", [g.conv(tail, 20, 20)])
    y = g.op("Concat", [head, tail], axis=1)
    y = g.op("Slice", [y, g.ints([1], "starts"), g.ints([9], "ends"), g.ints([2], "axes")])  # spatial crop
    y = g.conv(y, 32, 4, k=1)
    g.output(y, [1, 4, 8, 10])
    return Pattern("slice_channels", g.build("slice_channels"))


def channel_shuffle() -> Pattern:
    """ShuffleNet channel shuffle: Reshape [N,g,C/g,H,W] -> Transpose(0,2,1,3,4) -> Reshape [N,C,H,W]."""
    g = GraphBuilder(18)
    x = g.input("x", [1, 3, 8, 8])
    y = g.op("Relu", [g.conv(x, 3, 24)])
    y = g.op("Reshape", [y, g.ints([1, 2, 12, 8, 8])])
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = g.op("Reshape", [y, g.ints([1, 24, 8, 8])])
    y = g.op("Relu", [g.conv(y, 24, 24, k=3, group=24)])
    y = g.conv(y, 24, 6, k=1)
    g.output(y, [1, 6, 8, 8])
    return Pattern("channel_shuffle", g.build("channel_shuffle"))


def depth_to_space(mode: str = "DCR") -> Pattern:
    """DepthToSpace after a conv (sub-pixel upsampling), SpaceToDepth before one."""
    g = GraphBuilder(19)
    x = g.input("x", [1, 3, 8, 8])
    y = g.op("SpaceToDepth", [g.op("Relu", [g.conv(x, 3, 8)])], blocksize=2)  # [1,32,4,4]
    y = g.op("Relu", [g.conv(y, 32, 16)])
    y = g.conv(y, 16, 64)
    y = g.op("DepthToSpace", [y], blocksize=2, mode=mode)  # [1,16,8,8]
    y = g.conv(g.op("Relu", [y]), 16, 3)
    g.output(y, [1, 3, 8, 8])
    return Pattern(f"depth_to_space_{mode.lower()}", g.build(f"depth_to_space_{mode.lower()}"))


def tf_depthwise_hwcm() -> Pattern:
    """tf2onnx DepthwiseConv2D: the [kh,kw,C,M] Keras kernel reaches Conv(group=C) as a Transpose'd
    + Reshape'd initializer, inside an NHWC MobileNet block."""
    g = GraphBuilder(20)
    x = g.input("x", [1, 10, 10, 3])
    y = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    y = g.op("Relu", [g.conv(y, 3, 16, k=1)])
    hwcm = g.const(g.rand(3, 3, 16, 1), "dw_hwcm")
    g.last_weight = hwcm
    w = g.op("Reshape", [g.op("Transpose", [hwcm], perm=[2, 3, 0, 1]), g.ints([16, 1, 3, 3])])
    y = g.op("Relu", [g.conv(y, 16, 16, group=16, weight=w)])
    y = g.conv(y, 16, 8, k=1)
    y = g.op("Transpose", [y], perm=[0, 2, 3, 1])
    g.output(y, [1, 10, 10, 8])
    return Pattern("tf_depthwise_hwcm", g.build("tf_depthwise_hwcm"), must_shrink=[hwcm])


def split_group_conv() -> Pattern:
    """Grouped conv the old-TF way: Split the channels, one Conv per group, Concat."""
    g = GraphBuilder(21)
    x = g.input("x", [1, 3, 10, 10])
    y = g.op("Relu", [g.conv(x, 3, 32)])
    parts = g.op("Split", [y, g.ints([8, 8, 8, 8], "split")], n_out=4, axis=1)
    outs = [g.conv(p, 8, 8) for p in parts]
    y = g.op("Relu", [g.op("Concat", outs, axis=1)])
    y = g.conv(y, 32, 4, k=1)
    g.output(y, [1, 4, 10, 10])
    return Pattern("split_group_conv", g.build("split_group_conv"))


def grouped_conv() -> Pattern:
    """Native grouped conv (ResNeXt): in/out channels tied per group."""
    g = GraphBuilder(22)
    x = g.input("x", [1, 3, 10, 10])
    y = g.op("Relu", [g.conv(x, 3, 32)])
    y = g.op("Relu", [g.conv(y, 32, 32, group=4)])
    y = g.conv(y, 32, 4, k=1)
    g.output(y, [1, 4, 10, 10])
    return Pattern("grouped_conv", g.build("grouped_conv"))


def tf_layernorm_decomposed() -> Pattern:
    """Keras LayerNormalization as tf2onnx writes it for opsets without LayerNormalization:
    ReduceMean / Sub / Mul / ReduceMean / Add eps / Sqrt / Div / Mul gamma / Add beta over the last
    (channel) axis, around Dense layers as MatMul+Add. Statistics mix channels, so mask
    equivalence does not hold; pruning the MLP hidden width does."""
    g = GraphBuilder(23)
    x = g.input("x", [1, 16, 32])
    mu = g.op("ReduceMean", [x], axes=[-1], keepdims=1)
    d = g.op("Sub", [x, mu])
    var = g.op("ReduceMean", [g.op("Mul", [d, d])], axes=[-1], keepdims=1)
    n = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(1e-5, np.float32), "eps")])])])
    n = g.op("Add", [g.op("Mul", [n, g.const((g.rng.random(32) + 0.5).astype(np.float32), "gamma")]),
                     g.const(g.rand(32, scale=0.1), "beta")])
    h = g.op("Relu", [g.linear_matmul(n, 32, 64)])
    y = g.op("Add", [x, g.linear_matmul(h, 64, 32)])
    g.output(y, [1, 16, 32])
    return Pattern("tf_layernorm_decomposed", g.build("tf_layernorm_decomposed"), mask_equivalent=True,
                   note="only the hidden width between the two Dense layers can be pruned")


def layernorm_mlp(form: str = "Pow") -> Pattern:
    """Dense -> LayerNorm -> Dense -> Relu -> Dense, the LayerNorm's channels produced by a prunable
    layer. ``form``: "Pow" / "Mul" write the LayerNorm as ops (ReduceMean / Sub / Pow or Mul /
    ReduceMean / Add eps / Sqrt / Div / Mul gamma / Add beta, as tf2onnx and older exporters do),
    "fused" as one LayerNormalization; every form has the same weights."""
    g = GraphBuilder(31)
    x = g.input("x", [1, 8, 24])
    h = g.linear_matmul(x, 24, 32)
    gamma = (g.rng.random(32) + 0.5).astype(np.float32)
    beta = g.rand(32, scale=0.1)
    if form == "fused":
        n = g.op("LayerNormalization", [h, g.const(gamma, "gamma"), g.const(beta, "beta")], axis=-1, epsilon=1e-5)
    else:
        d = g.op("Sub", [h, g.op("ReduceMean", [h], axes=[-1], keepdims=1)])
        sq = g.op("Pow", [d, g.const(np.asarray(2.0, np.float32), "two")]) if form == "Pow" else g.op("Mul", [d, d])
        var = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        n = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(1e-5, np.float32), "eps")])])])
        n = g.op("Add", [g.op("Mul", [n, g.const(gamma, "gamma")]), g.const(beta, "beta")])
    y = g.linear_matmul(g.op("Relu", [g.linear_matmul(n, 32, 48)]), 48, 10)
    g.output(y, [1, 8, 10])
    return Pattern(f"layernorm_mlp_{form}", g.build(f"layernorm_mlp_{form}"),
                   note="the first Dense width passes through the LayerNorm (refused unless opted in)")


def sub_div_broadcast() -> Pattern:
    """Per-channel normalisation constants [1,C,1,1] with Sub and Div, plus a residual Sub."""
    g = GraphBuilder(24)
    x = g.input("x", [1, 3, 10, 10])
    y = g.op("Relu", [g.conv(x, 3, 16)])
    y = g.op("Sub", [y, g.const(g.rand(1, 16, 1, 1, scale=0.1), "mean")])
    y = g.op("Div", [y, g.const((g.rng.random((1, 16, 1, 1)) + 1).astype(np.float32), "std")])
    r = g.conv(g.op("Relu", [g.conv(y, 16, 24)]), 24, 16)
    y = g.op("Sub", [y, r])
    y = g.conv(y, 16, 4, k=1)
    g.output(y, [1, 4, 10, 10])
    return Pattern("sub_div_broadcast", g.build("sub_div_broadcast"))


def multi_head_attention(heads: int = 4, dim: int = 32, tokens: int = 8) -> Pattern:
    """Attention as tf2onnx / paddle2onnx write it: Q, K, V each MatMul([D, D]) + Add, Reshape to
    [B, N, h, d], Transpose to [B, h, N, d] (K to [B, h, d, N]), MatMul, scale by Mul, Softmax,
    MatMul with V, Transpose/Reshape back, output projection MatMul + Add, residual, MLP."""
    g = GraphBuilder(25)
    hd = dim // heads
    x = g.input("x", [1, tokens, dim])

    def heads_of(t: str, perm: List[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, g.ints([1, tokens, heads, hd])])], perm=perm)

    qkv = []
    q = heads_of(g.linear_matmul(x, dim, dim), [0, 2, 1, 3])
    qkv.append(g.last_weight)
    k = heads_of(g.linear_matmul(x, dim, dim), [0, 2, 3, 1])
    qkv.append(g.last_weight)
    v = heads_of(g.linear_matmul(x, dim, dim), [0, 2, 1, 3])
    qkv.append(g.last_weight)
    a = g.op("Mul", [g.op("MatMul", [q, k]), g.const(np.asarray(hd ** -0.5, np.float32), "scale")])
    a = g.op("Softmax", [a], axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [a, v])], perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.ints([1, tokens, dim])])
    y = g.op("Add", [x, g.linear_matmul(o, dim, dim)])
    h = g.op("Relu", [g.linear_matmul(y, dim, 2 * dim)])
    y = g.op("Add", [y, g.linear_matmul(h, 2 * dim, dim)])
    g.output(y, [1, tokens, dim])
    return Pattern("multi_head_attention", g.build("multi_head_attention"), must_shrink=qkv,
                   note="Q/K/V projections must lose whole heads or the same head dims")


def tf_same_autopad_relu6() -> Pattern:
    """tf2onnx Keras Conv2D(padding="same") + ReLU6: Conv with auto_pad=SAME_UPPER (no pads) and
    Clip with min/max given as inputs; a stride-2 SAME conv pads asymmetrically."""
    g = GraphBuilder(26)
    x = g.input("x", [1, 3, 11, 11])
    lo = g.const(np.asarray(0.0, np.float32), "clip_min")
    hi = g.const(np.asarray(6.0, np.float32), "clip_max")
    y = g.op("Conv", [x, g.const(g.rand(16, 3, 3, 3), "w"), g.const(g.rand(16, scale=0.1), "b")],
             kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    y = g.op("Clip", [y, lo, hi])
    y = g.op("Conv", [y, g.const(g.rand(24, 16, 3, 3), "w"), g.const(g.rand(24, scale=0.1), "b")],
             kernel_shape=[3, 3], auto_pad="SAME_UPPER")
    y = g.op("Clip", [y, lo, hi])
    y = g.conv(y, 24, 4, k=1)
    g.output(y, [1, 4, 6, 6])
    return Pattern("tf_same_autopad_relu6", g.build("tf_same_autopad_relu6"))


def prelu_addn() -> Pattern:
    """Keras/Paddle PReLU with a per-channel slope [C,1,1] (the slope is pruned with the channel),
    LeakyRelu, and tf.add_n written as a variadic Sum of three branches."""
    g = GraphBuilder(27)
    x = g.input("x", [1, 3, 10, 10])
    y = g.conv(x, 3, 16)
    y = g.op("PRelu", [y, g.const((g.rng.random((16, 1, 1)) * 0.3).astype(np.float32), "slope")])
    a = g.conv(y, 16, 24)
    b = g.conv(y, 16, 24, k=1)
    c = g.conv(y, 16, 24, k=5)
    y = g.op("LeakyRelu", [g.op("Sum", [a, b, c])], alpha=0.1)
    y = g.conv(y, 24, 4, k=1)
    g.output(y, [1, 4, 10, 10])
    return Pattern("prelu_addn", g.build("prelu_addn"))


BUILDERS: Dict[str, Callable[[], Pattern]] = {
    "tf_nhwc_convnet": tf_nhwc_convnet,
    "matmul_add_mlp": matmul_add_mlp,
    "transposed_weight_linear": transposed_weight_linear,
    "constant_node_weights": constant_node_weights,
    "identity_weights": identity_weights,
    "cast_fp16_weights": cast_fp16_weights,
    "qdq_per_channel_weights": qdq_per_channel_weights,
    "bn_unfolded": bn_unfolded,
    "bn_folded": bn_folded,
    "reshape_into_linear": reshape_into_linear,
    "flatten_into_gemm": flatten_into_gemm,
    "nhwc_flatten_into_linear": nhwc_flatten_into_linear,
    "se_squeeze_unsqueeze": se_squeeze_unsqueeze,
    "se_reducemean_conv": se_reducemean_conv,
    "pad_ops": pad_ops,
    "resize_skip_concat": resize_skip_concat,
    "split_sizes": split_sizes,
    "slice_channels": slice_channels,
    "channel_shuffle": channel_shuffle,
    "depth_to_space_dcr": lambda: depth_to_space("DCR"),
    "depth_to_space_crd": lambda: depth_to_space("CRD"),
    "tf_depthwise_hwcm": tf_depthwise_hwcm,
    "split_group_conv": split_group_conv,
    "grouped_conv": grouped_conv,
    "tf_layernorm_decomposed": tf_layernorm_decomposed,
    "sub_div_broadcast": sub_div_broadcast,
    "multi_head_attention": multi_head_attention,
    "tf_same_autopad_relu6": tf_same_autopad_relu6,
    "prelu_addn": prelu_addn,
}


def build(name: str) -> Pattern:
    return BUILDERS[name]()


# ---------------------------------------------------------------------------------------------
# helpers shared by test_patterns.py and test_corpus.py
# ---------------------------------------------------------------------------------------------

def run_ort(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_valid(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.checker (full) and strict shape inference; returns the inferred model."""
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def _stored_arrays(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _kept_positions(orig: np.ndarray, pruned: np.ndarray, axis: int) -> Optional[np.ndarray]:
    """Which positions along ``axis`` of ``orig`` survive in ``pruned`` (values are copied, not
    changed, by structural pruning). Found by exact value look-up, so it also works when other axes
    were pruned too. None when the values do not identify the positions (e.g. repeated values)."""
    if pruned.shape == orig.shape:
        return np.arange(orig.shape[axis])
    if pruned.ndim != orig.ndim or not np.issubdtype(orig.dtype, np.floating):
        return None
    kept = []
    a = np.moveaxis(orig, axis, 0).reshape(orig.shape[axis], -1)
    b = np.moveaxis(pruned, axis, 0).reshape(pruned.shape[axis], -1)
    for row in b:
        nz = row[row != 0]
        if nz.size == 0:
            return None
        hits = None
        for v in nz[:4]:
            rows = set(np.nonzero((a == v).any(axis=1))[0].tolist())
            hits = rows if hits is None else hits & rows
        if not hits or len(hits) != 1:
            return None
        kept.append(hits.pop())
    return np.asarray(kept)


def _split_use(name: str):
    """The pruner names the per-use copy of a shared weight ``TENSOR::NODE:INPUT_INDEX``."""
    # (TorchScript's own names contain '::' too, e.g. 'onnx::Conv_12': only a ':<digits>' tail marks a use)
    if "::" not in name:
        return name, None, None
    base, use = name.rsplit("::", 1)
    node, _, idx = use.rpartition(":")
    if not node or not idx.isdigit():
        return name, None, None
    return base, node, int(idx)


def _after_array(pruned: onnx.ModelProto, after: Dict[str, np.ndarray], name: str, member=None) -> Optional[np.ndarray]:
    """The pruned counterpart of a member's stored tensor: same name, or else (the pruner gave a
    shared weight a private copy) the tensor the same node reads at the same input slot."""
    base, node_name, idx = _split_use(name)
    if node_name is None:
        if base in after:
            return after[base]
        node = getattr(member, "node", None)
        if node is None or base not in node.input:
            return None
        node_name, idx = node.name, list(node.input).index(base)
    for node in pruned.graph.node:
        if node.name == node_name and idx < len(node.input):
            return after.get(node.input[idx])
    return None


def removed_channels(dg, original: onnx.ModelProto, pruned: onnx.ModelProto) -> Dict[int, np.ndarray]:
    """For each group of ``dg`` (analysis of ``original``): the group channel ids that ``pruned`` no
    longer has, recovered from the pruned tensors' values — an oracle independent of the pruner's
    own bookkeeping. Raises AssertionError when a shrunk group cannot be located."""
    before, after = _stored_arrays(original), _stored_arrays(pruned)
    removed: Dict[int, np.ndarray] = {}
    for g in dg.groups:
        found = None
        shrunk_seen = located = False
        # 1-D members (bias, BN, scales) first: cheapest and most reliable look-up.
        for m in sorted(g.members, key=lambda m: np.ndim(m.array)):
            o = before.get(_split_use(m.tensor)[0])
            p = _after_array(pruned, after, m.tensor, m)
            if o is None or p is None:
                continue
            located = True
            if o.shape[m.axis] != p.shape[m.axis]:
                shrunk_seen = True
            kept_pos = _kept_positions(o, p, m.axis)
            if kept_pos is None:
                continue
            idx = np.asarray(m.index)
            ids = set(idx[idx >= 0].tolist())
            kept_ids = set(idx[kept_pos][idx[kept_pos] >= 0].tolist())
            found = np.asarray(sorted(ids - kept_ids), dtype=np.int64)
            break
        if found is None:
            assert not shrunk_seen, f"group {g.id}: pruned tensors found but their positions could not be matched"
            assert located or not any(_split_use(m.tensor)[0] in before for m in g.members), \
                f"group {g.id}: none of its tensors can be found in the pruned model"
            found = np.zeros(0, dtype=np.int64)
        removed[g.id] = found
    return removed


def masked_original(dg, original: onnx.ModelProto, removed: Dict[int, np.ndarray]) -> onnx.ModelProto:
    """The original model with the removed group channels zeroed: every weight row producing them
    and every weight column reading them (per-channel divisors are left alone). A weight shared by
    several nodes is first given one private copy per node, as the pruner may prune each use apart."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    arrays = _stored_arrays(model)
    nodes = {n.name: n for n in model.graph.node if n.name}
    uses: Dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    zp_of: Dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2:
            zp_of[node.input[0]] = node.input[2]
    private: Dict[tuple, str] = {}

    def storage(m) -> Optional[str]:
        base, node_name, idx = _split_use(m.tensor)
        if base not in arrays:
            return None
        node = nodes.get(node_name) if node_name else None
        if node is None and uses.get(base, 0) > 1 and m.node is not None and base in m.node.input:
            node = nodes.get(m.node.name)
            idx = list(m.node.input).index(base)
        if node is None:
            return base
        key = (node.name, idx)
        if key not in private:
            private[key] = f"{base}__mask_{len(private)}"
            arrays[private[key]] = arrays[base].copy()
            node.input[idx] = private[key]
            model.graph.initializer.append(numpy_helper.from_array(arrays[base], private[key]))
        return private[key]

    changed: Dict[str, np.ndarray] = {}
    for g in dg.groups:
        gone = removed.get(g.id)
        if gone is None or gone.size == 0:
            continue
        for m in g.members:
            if m.role == "elementwise":
                continue
            if m.node is not None and m.node.op_type in ("Div",):
                continue
            name = storage(m)
            if name is None:
                continue
            arr = changed.get(name, arrays[name].copy())
            pos = np.nonzero(np.isin(np.asarray(m.index), gone))[0]
            if pos.size == 0:
                continue
            sl = [slice(None)] * arr.ndim
            sl[m.axis] = pos
            if np.issubdtype(arr.dtype, np.integer):
                zp = arrays.get(zp_of.get(name, ""))
                if zp is None or zp.ndim == 0:
                    arr[tuple(sl)] = 0 if zp is None else zp
                else:  # per-channel zero point along axis 0 of the weight
                    shape = [1] * arr.ndim
                    shape[0] = -1
                    arr[tuple(sl)] = np.broadcast_to(zp.reshape(shape), arr.shape)[tuple(sl)]
            else:
                arr[tuple(sl)] = 0
            changed[name] = arr
    for t in model.graph.initializer:
        if t.name in changed:
            t.CopyFrom(numpy_helper.from_array(changed[t.name], t.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in changed:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(changed[node.output[0]], a.t.name))
    return model


def touches_cross_channel_norm(dg) -> bool:
    """True when a pruned group passes through an op whose statistics mix the group's channels
    (LayerNorm over the channel axis): there the mask identity does not hold."""
    for g in dg.groups:
        if g.approx:  # LayerNorm over the group's channels, fused or written as ops (opt-in)
            return True
        for m in g.members:
            if m.node is not None and m.node.op_type in ("LayerNormalization",):
                return True
    return False
