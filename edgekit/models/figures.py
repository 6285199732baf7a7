"""Architectures named by the published Jetson latency figures (``shared/reference/latency``):
the classifiers (MobileNetV3, MixNet, EfficientFormer-L1, MobileViT-S). Detection and segmentation
models are in :mod:`edgekit.models.figures_dense`. ``FIGURE_MODELS`` maps a figure's model name to
``(factory, input shape)``.

They exist so the latency estimator can be calibrated: random weights, layer structure (widths,
depths, kernel sizes, strides, activations) as the papers / reference code define them, which is
all a latency model needs. They are not meant to be trained or to load pretrained weights.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _div(v: float, d: int = 8) -> int:
    """Round a channel count to a multiple of ``d`` (as the reference implementations do)."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def conv_bn(cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: object = nn.ReLU) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, mid: int, gate: object = nn.Sigmoid, act: object = nn.ReLU):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


# ---------------------------------------------------------------- MobileNetV3 (Howard et al. 2019)
# (kernel, expanded, out, SE, activation, stride), the paper's tables 1 and 2
_V3_LARGE = [(3, 16, 16, 0, "re", 1), (3, 64, 24, 0, "re", 2), (3, 72, 24, 0, "re", 1), (5, 72, 40, 1, "re", 2),
             (5, 120, 40, 1, "re", 1), (5, 120, 40, 1, "re", 1), (3, 240, 80, 0, "hs", 2), (3, 200, 80, 0, "hs", 1),
             (3, 184, 80, 0, "hs", 1), (3, 184, 80, 0, "hs", 1), (3, 480, 112, 1, "hs", 1),
             (3, 672, 112, 1, "hs", 1), (5, 672, 160, 1, "hs", 2), (5, 960, 160, 1, "hs", 1),
             (5, 960, 160, 1, "hs", 1)]
_V3_SMALL = [(3, 16, 16, 1, "re", 2), (3, 72, 24, 0, "re", 2), (3, 88, 24, 0, "re", 1), (5, 96, 40, 1, "hs", 2),
             (5, 240, 40, 1, "hs", 1), (5, 240, 40, 1, "hs", 1), (5, 120, 48, 1, "hs", 1), (5, 144, 48, 1, "hs", 1),
             (5, 288, 96, 1, "hs", 2), (5, 576, 96, 1, "hs", 1), (5, 576, 96, 1, "hs", 1)]


class _V3Block(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: int, act: str, s: int):
        super().__init__()
        a = nn.Hardswish if act == "hs" else nn.ReLU
        layers: List[nn.Module] = []
        if exp != cin:
            layers.append(conv_bn(cin, exp, 1, act=a))
        layers.append(conv_bn(exp, exp, k, s, groups=exp, act=a))
        if se:
            layers.append(SqueezeExcite(exp, _div(exp // 4), gate=nn.Hardsigmoid))
        layers.append(conv_bn(exp, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.res else y


class MobileNetV3(nn.Module):
    def __init__(self, cfg: Sequence[tuple], last: int, head: int, num_classes: int = 1000):
        super().__init__()
        layers: List[nn.Module] = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
        c = 16
        for k, exp, out, se, act, s in cfg:
            layers.append(_V3Block(c, k, exp, out, se, act, s))
            c = out
        layers.append(conv_bn(c, last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(last, head), nn.Hardswish(), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def mobilenetv3_large(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(_V3_LARGE, 960, 1280, num_classes)


def mobilenetv3_small(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(_V3_SMALL, 576, 1024, num_classes)


# ---------------------------------------------------------------- MixNet (Tan & Le 2019)
class MixConv(nn.Module):
    """Depthwise convolution whose channels are split into groups with different kernel sizes."""

    def __init__(self, c: int, kernels: Sequence[int], s: int):
        super().__init__()
        n = len(kernels)
        self.splits = [c // n + (1 if i < c % n else 0) for i in range(n)]
        self.convs = nn.ModuleList(nn.Conv2d(ci, ci, k, s, k // 2, groups=ci, bias=False)
                                   for ci, k in zip(self.splits, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        return torch.cat([conv(p) for conv, p in zip(self.convs, torch.split(x, self.splits, 1))], 1)


class GroupedPW(nn.Module):
    """A 1x1 convolution split into ``g`` groups of channels (MixNet's a1.1 / p1.1)."""

    def __init__(self, cin: int, cout: int, g: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, groups=g, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _MixBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: Sequence[int], s: int, e: int, se: float, swish: bool,
                 ga: int, gp: int):
        super().__init__()
        a = nn.SiLU if swish else nn.ReLU
        mid = cin * e
        layers: List[nn.Module] = []
        if e != 1:
            layers += [GroupedPW(cin, mid, ga), nn.BatchNorm2d(mid), a()]
        layers += [MixConv(mid, kernels, s), nn.BatchNorm2d(mid), a()]
        if se:
            layers.append(SqueezeExcite(mid, max(1, int(cin * se)), act=a))
        layers += [GroupedPW(mid, cout, gp), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.res else y


# (repeats, kernels, stride, expansion, out, se, swish, expand groups, project groups), timm's arch_def
_MIX_S = [(1, (3,), 1, 1, 16, 0, 0, 1, 1), (1, (3,), 2, 6, 24, 0, 0, 2, 2), (1, (3,), 1, 3, 24, 0, 0, 2, 2),
          (1, (3, 5, 7), 2, 6, 40, .5, 1, 1, 1), (3, (3, 5), 1, 6, 40, .5, 1, 2, 2),
          (1, (3, 5, 7), 2, 6, 80, .25, 1, 1, 2), (2, (3, 5), 1, 6, 80, .25, 1, 1, 2),
          (1, (3, 5, 7), 1, 6, 120, .5, 1, 2, 2), (2, (3, 5, 7, 9), 1, 3, 120, .5, 1, 2, 2),
          (1, (3, 5, 7, 9, 11), 2, 6, 200, .5, 1, 1, 1), (2, (3, 5, 7, 9), 1, 6, 200, .5, 1, 1, 2)]
_MIX_M = [(1, (3,), 1, 1, 24, 0, 0, 1, 1), (1, (3, 5, 7), 2, 6, 32, 0, 0, 2, 2), (1, (3,), 1, 3, 32, 0, 0, 2, 2),
          (1, (3, 5, 7, 9), 2, 6, 40, .5, 1, 1, 1), (3, (3, 5), 1, 6, 40, .5, 1, 2, 2),
          (1, (3, 5, 7), 2, 6, 80, .25, 1, 1, 1), (3, (3, 5, 7, 9), 1, 6, 80, .25, 1, 2, 2),
          (1, (3,), 1, 6, 120, .5, 1, 1, 1), (3, (3, 5, 7, 9), 1, 3, 120, .5, 1, 2, 2),
          (1, (3, 5, 7, 9), 2, 6, 200, .5, 1, 1, 1), (3, (3, 5, 7, 9), 1, 6, 200, .5, 1, 1, 2)]


class MixNet(nn.Module):
    def __init__(self, cfg: Sequence[tuple], stem: int, width: float = 1.0, depth: float = 1.0,
                 num_classes: int = 1000):
        super().__init__()
        c = _div(stem * width)
        layers: List[nn.Module] = [conv_bn(3, c, 3, 2)]
        for r, ks, s, e, out, se, sw, ga, gp in cfg:
            out = _div(out * width)
            for i in range(int(round(r * depth)) if r > 1 else r):
                layers.append(_MixBlock(c, out, ks, s if i == 0 else 1, e, se, bool(sw), ga, gp))
                c = out
        layers.append(conv_bn(c, 1536, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1536, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def mixnet_s() -> MixNet:
    return MixNet(_MIX_S, 16)


def mixnet_m() -> MixNet:
    return MixNet(_MIX_M, 24)


def mixnet_l() -> MixNet:
    return MixNet(_MIX_M, 24, width=1.3)


# ---------------------------------------------------------------- transformer pieces
class MHSA(nn.Module):
    """Multi-head self-attention on (B, N, C) tokens, written out as MatMul / Softmax."""

    def __init__(self, dim: int, heads: int, key_dim: int = 0, value_dim: int = 0):
        super().__init__()
        self.h = heads
        self.kd = key_dim or dim // heads
        self.vd = value_dim or dim // heads
        self.qkv = nn.Linear(dim, heads * (2 * self.kd + self.vd))
        self.proj = nn.Linear(heads * self.vd, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.h, -1).split([self.kd, self.kd, self.vd], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        a = torch.softmax((q @ k.transpose(-2, -1)) * self.kd ** -0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, -1))


class TBlock(nn.Module):
    """Pre-norm transformer block (attention + MLP)."""

    def __init__(self, dim: int, heads: int, mlp: float = 4.0, key_dim: int = 0, value_dim: int = 0):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MHSA(dim, heads, key_dim, value_dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp)), nn.GELU(), nn.Linear(int(dim * mlp), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


# ---------------------------------------------------------------- EfficientFormer-L1 (Li et al. 2022)
class _Meta4D(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp = nn.Sequential(conv_bn(c, 4 * c, 1, act=nn.GELU), conv_bn(4 * c, c, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + (self.pool(x) - x)
        return x + self.mlp(x)


class EfficientFormerL1(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        dims, depths = [48, 96, 224, 448], [3, 2, 6, 4]
        layers: List[nn.Module] = [conv_bn(3, 24, 3, 2), conv_bn(24, 48, 3, 2)]
        for i, (d, n) in enumerate(zip(dims, depths)):
            if i:
                layers.append(conv_bn(dims[i - 1], d, 3, 2, act=None))
            layers += [_Meta4D(d) for _ in range(n - (1 if i == 3 else 0))]
        self.features = nn.Sequential(*layers)
        self.meta3d = TBlock(448, 8, 4.0, key_dim=32, value_dim=128)
        self.norm = nn.LayerNorm(448)
        self.fc = nn.Linear(448, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.meta3d(self.features(x).flatten(2).transpose(1, 2))
        return self.fc(self.norm(t).mean(1))


# ---------------------------------------------------------------- MobileViT-S (Mehta & Rastegari 2021)
class _MV2(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, e: int = 4):
        super().__init__()
        m = cin * e
        self.body = nn.Sequential(conv_bn(cin, m, 1, act=nn.SiLU), conv_bn(m, m, 3, s, groups=m, act=nn.SiLU),
                                  conv_bn(m, cout, 1, act=None))
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.res else self.body(x)


class _MViTBlock(nn.Module):
    def __init__(self, c: int, d: int, depth: int):
        super().__init__()
        self.local = nn.Sequential(conv_bn(c, c, 3, act=nn.SiLU), nn.Conv2d(c, d, 1, bias=False))
        self.blocks = nn.Sequential(*[TBlock(d, 4, 2.0) for _ in range(depth)], nn.LayerNorm(d))
        self.proj = conv_bn(d, c, 1, act=nn.SiLU)
        self.fuse = conv_bn(2 * c, c, 3, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        # unfold into 2x2 patches: (B*4, N, d), attention runs within each patch position
        t = y.reshape(b, d, h // 2, 2, w // 2, 2).permute(0, 3, 5, 2, 4, 1).reshape(b * 4, (h // 2) * (w // 2), d)
        t = self.blocks(t)
        y = t.reshape(b, 2, 2, h // 2, w // 2, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.proj(y)], 1))


class MobileViTS(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.SiLU), _MV2(16, 32, 1), _MV2(32, 64, 2), _MV2(64, 64, 1), _MV2(64, 64, 1),
            _MV2(64, 96, 2), _MViTBlock(96, 144, 2), _MV2(96, 128, 2), _MViTBlock(128, 192, 4),
            _MV2(128, 160, 2), _MViTBlock(160, 240, 3), conv_bn(160, 640, 1, act=nn.SiLU))
        self.fc = nn.Linear(640, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


_D = "edgekit.models.figures_dense:"
_C = "edgekit.models.figures:"
# figure model name -> (factory "module:function", input shape at batch 1); BERT takes token ids
FIGURE_MODELS = {
    "ResNet18": ("edgekit.models.resnet:resnet18", (1, 3, 224, 224)),
    "ResNet34": ("edgekit.models.resnet:resnet34", (1, 3, 224, 224)),
    "ResNet50": ("edgekit.models.resnet:resnet50", (1, 3, 224, 224)),
    "ResNet-50 v1.5": ("edgekit.models.resnet:resnet50", (1, 3, 224, 224)),
    "MobileNetV3-large": (_C + "mobilenetv3_large", (1, 3, 224, 224)),
    "MobileNetV3-small": (_C + "mobilenetv3_small", (1, 3, 224, 224)),
    "MixNet-s": (_C + "mixnet_s", (1, 3, 224, 224)),
    "MixNet-m": (_C + "mixnet_m", (1, 3, 224, 224)),
    "MixNet-l": (_C + "mixnet_l", (1, 3, 224, 224)),
    "EfficientFormer-l1": (_C + "EfficientFormerL1", (1, 3, 224, 224)),
    "MovileViT-s": (_C + "MobileViTS", (1, 3, 256, 256)),
    "ViT-tiny": ("edgekit.models.vit:vit_tiny", (1, 3, 224, 224)),
    "SegFormet-b0": (_D + "SegFormerB0", (1, 3, 512, 512)),
    "PIDNet-s": (_D + "PIDNetS", (1, 3, 512, 512)),
    "YOLOX-s": (_D + "yolox_s", (1, 3, 640, 640)),
    "YOLOX-m": (_D + "yolox_m", (1, 3, 640, 640)),
    "YOLOX-l": (_D + "yolox_l", (1, 3, 640, 640)),
    "FCN-ResNet18": (_D + "FCNResNet18", (1, 3, 512, 512)),   # input size comes from each figure
    "RetinaNet (MLPerf retinanet, OpenImages)": (_D + "RetinaNet", (1, 3, 800, 800)),
    "SSD-MobileNet-v1 (MLPerf)": (_D + "ssd_mobilenet_v1", (1, 3, 300, 300)),
    "SSD-ResNet34 (MLPerf)": (_D + "ssd_resnet34", (1, 3, 1200, 1200)),
    "BERT-Large (SQuAD v1.1, 99% accuracy target)": (_D + "BertLarge", (1, 384)),
}
