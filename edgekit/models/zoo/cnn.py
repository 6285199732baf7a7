"""Convolutional families for the pruning corpus, written small (random init, 64x64 inputs).

Each class imitates the structural trait that matters to a graph-level pruner, not the exact
published configuration: grouped convs (ResNeXt, RegNet), dense concatenation (DenseNet), channel
split + shuffle (ShuffleNetV2), SE gating with broadcasting Mul (EfficientNet, MobileNetV3),
channels-last LayerNorm and Linear MLPs behind permutes (ConvNeXt), fire-module concat (SqueezeNet),
multi-branch concat (Inception), dilated parallel branches (ASPP), multi-resolution exchange (HRNet).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1, act: nn.Module = None, d: int = 1) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, d * (k // 2), dilation=d, groups=g, bias=False), nn.BatchNorm2d(cout)]
    layers.append(act if act is not None else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Random BN statistics, so the BN-scale criterion and mask checks see non-trivial numbers."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


# --- ResNeXt -------------------------------------------------------------------------------------
class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int = 8, width: int = 4):
        super().__init__()
        mid = groups * width
        self.body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, g=groups),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


class ResNeXt(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2)
        self.stages = nn.Sequential(ResNeXtBlock(32, 64, 1), ResNeXtBlock(64, 64, 1),
                                    ResNeXtBlock(64, 128, 2, width=8), ResNeXtBlock(128, 128, 1, width=8),
                                    ResNeXtBlock(128, 256, 2, width=16))
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- DenseNet ------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                               nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


class DenseNet(nn.Module):
    def __init__(self, growth: int = 16, blocks=(3, 3, 3), num_classes: int = 10):
        super().__init__()
        c = 2 * growth
        layers: List[nn.Module] = [nn.Conv2d(3, c, 3, 2, 1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i != len(blocks) - 1:
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --- ShuffleNetV2 --------------------------------------------------------------------------------
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        branch = cout // 2
        bin_ = cin if stride > 1 else branch
        if stride > 1:
            self.left = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                      conv_bn(cin, branch, 1))
        self.right = nn.Sequential(conv_bn(bin_, branch, 1),
                                   nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False),
                                   nn.BatchNorm2d(branch), conv_bn(branch, branch, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 96, 2),
                                    ShuffleUnit(96, 96, 1), ShuffleUnit(96, 96, 1), ShuffleUnit(96, 192, 2))
        self.last = conv_bn(192, 256, 1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.last(self.stages(self.stem(x)))
        return self.fc(x.mean([2, 3]))


# --- EfficientNet / MobileNetV3 ------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, act: nn.Module, gate: nn.Module):
        super().__init__()
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act, gate

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, act_cls, gate_cls, se: bool = True):
        super().__init__()
        mid = cin * expand
        layers: List[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, mid, 1, act=act_cls()))
        layers.append(conv_bn(mid, mid, k, stride, g=mid, act=act_cls()))
        if se:
            layers.append(SqueezeExcite(mid, max(4, cin // 4), act_cls(), gate_cls()))
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNet(nn.Module):
    # (expand, channels, repeats, stride, kernel)
    CFG = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 2, 2, 3), (6, 112, 1, 1, 5)]

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: List[nn.Module] = [conv_bn(3, 32, 3, 2, act=nn.SiLU())]
        c = 32
        for e, co, n, s, k in self.CFG:
            for i in range(n):
                layers.append(MBConv(c, co, k, s if i == 0 else 1, e, nn.SiLU, nn.Sigmoid))
                c = co
        layers.append(conv_bn(c, 320, 1, act=nn.SiLU()))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(320, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class MobileNetV3(nn.Module):
    # (kernel, expand, out, se, act, stride)
    CFG = [(3, 1, 16, True, "relu", 2), (3, 4, 24, False, "relu", 2), (3, 3, 24, False, "relu", 1),
           (5, 3, 40, True, "hs", 2), (5, 3, 40, True, "hs", 1), (5, 3, 48, True, "hs", 1), (5, 3, 96, True, "hs", 2)]

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: List[nn.Module] = [conv_bn(3, 16, 3, 2, act=nn.Hardswish())]
        c = 16
        for k, e, co, se, a, s in self.CFG:
            act = nn.ReLU if a == "relu" else nn.Hardswish
            layers.append(MBConv(c, co, k, s, e, act, nn.Hardsigmoid, se=se))
            c = co
        layers.append(conv_bn(c, 288, 1, act=nn.Hardswish()))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(288, 512), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# --- ConvNeXt ------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor (permute to NHWC and back)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) * 0.5 + 0.5)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(32, 64, 128), depths=(1, 2, 1), num_classes: int = 10):
        super().__init__()
        layers: List[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (d, n) in enumerate(zip(dims, depths)):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
            layers += [ConvNeXtBlock(d) for _ in range(n)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        return self.fc(self.norm(self.features(x).mean([-2, -1])))


# --- RegNet --------------------------------------------------------------------------------------
class RegNetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 16, se: bool = False):
        super().__init__()
        g = cout // group_width
        layers = [conv_bn(cin, cout, 1), conv_bn(cout, cout, 3, stride, g=g)]
        if se:
            layers.append(SqueezeExcite(cout, cin // 4, nn.ReLU(), nn.Sigmoid()))
        layers += [nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.f = nn.Sequential(*layers)
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x):
        s = x if self.proj is None else self.proj(x)
        return F.relu(s + self.f(x))


class RegNet(nn.Module):
    def __init__(self, widths=(32, 64, 128), depths=(1, 2, 2), se: bool = True, num_classes: int = 10):
        super().__init__()
        layers: List[nn.Module] = [conv_bn(3, 32, 3, 2)]
        c = 32
        for w, d in zip(widths, depths):
            for i in range(d):
                layers.append(RegNetBlock(c, w, 2 if i == 0 else 1, se=se))
                c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# --- SqueezeNet ----------------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.s = nn.Conv2d(cin, squeeze, 1)
        self.e1 = nn.Conv2d(squeeze, expand, 1)
        self.e3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.s(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(64, 16, 64), Fire(128, 16, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(128, 32, 128), Fire(256, 48, 192))
        # SqueezeNet's classifier is a conv producing class maps, pooled to logits.
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(384, num_classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- Inception -----------------------------------------------------------------------------------
class InceptionBlock(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int):
        super().__init__()
        self.b1 = conv_bn(cin, c1, 1)
        self.b2 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        # factorised 5x5 as 1x5 + 5x1 (Inception-v3 style asymmetric kernels)
        self.b3 = nn.Sequential(conv_bn(cin, c5r, 1),
                                nn.Conv2d(c5r, c5r, (1, 5), padding=(0, 2), bias=False), nn.BatchNorm2d(c5r), nn.ReLU(),
                                nn.Conv2d(c5r, c5, (5, 1), padding=(2, 0), bias=False), nn.BatchNorm2d(c5), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, cp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Inception(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 64, 3), nn.MaxPool2d(2))
        self.a = InceptionBlock(64, 32, 32, 48, 16, 24, 24)
        self.b = InceptionBlock(128, 48, 48, 64, 16, 32, 32)
        self.pool = nn.MaxPool2d(2)
        self.c = InceptionBlock(176, 64, 48, 96, 24, 48, 48)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.c(self.pool(self.b(self.a(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- VGG / normalisation variants / heads --------------------------------------------------------
class VGGBN(nn.Module):
    """VGG with BatchNorm and the classic Flatten -> Linear head on a 2x2 map (one channel -> 4 features)."""

    def __init__(self, cfg=(32, "M", 64, "M", 128, 128, "M", 128, "M"), num_classes: int = 10):
        super().__init__()
        layers: List[nn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn(c, v, 3))
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(c * 4, 256), nn.ReLU(), nn.Dropout(), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class GroupNormNet(nn.Module):
    """Residual net normalised with GroupNorm (8 groups): channel groups must stay whole."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        def gn_block(ci, co, s):
            return nn.Sequential(nn.Conv2d(ci, co, 3, s, 1, bias=False), nn.GroupNorm(8, co), nn.ReLU())
        self.stem = gn_block(3, 32, 2)
        self.b1 = nn.Sequential(gn_block(32, 64, 1), nn.Conv2d(64, 32, 3, 1, 1), nn.GroupNorm(8, 32))
        self.down = gn_block(32, 64, 2)
        self.b2 = nn.Sequential(gn_block(64, 128, 1), nn.Conv2d(128, 64, 3, 1, 1), nn.GroupNorm(8, 64))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b1(x))
        x = self.down(x)
        x = F.relu(x + self.b2(x))
        return self.fc(x.mean([2, 3]))


class InstanceNormNet(nn.Module):
    """Style-transfer-like image-to-image net: InstanceNorm (affine), reflection pad, upsampling."""

    def __init__(self):
        super().__init__()
        def block(ci, co, k, s):
            return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(ci, co, k, s), nn.InstanceNorm2d(co, affine=True), nn.ReLU())
        self.enc = nn.Sequential(block(3, 32, 9, 1), block(32, 64, 3, 2), block(64, 128, 3, 2))
        self.res = nn.Sequential(block(128, 128, 3, 1), nn.ReflectionPad2d(1), nn.Conv2d(128, 128, 3), nn.InstanceNorm2d(128, affine=True))
        self.dec = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), block(128, 64, 3, 1),
                                 nn.Upsample(scale_factor=2, mode="nearest"), block(64, 32, 3, 1),
                                 nn.ReflectionPad2d(4), nn.Conv2d(32, 3, 9))

    def forward(self, x):
        y = self.enc(x)
        y = y + self.res(y)
        return torch.tanh(self.dec(y))


class PixelShuffleSR(nn.Module):
    """ESPCN-style super-resolution: conv features -> conv to C*r^2 -> PixelShuffle (DepthToSpace)."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 64, 5, 1, 2), nn.Tanh(), nn.Conv2d(64, 64, 3, 1, 1), nn.Tanh(),
                               nn.Conv2d(64, 32 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale), nn.ReLU(),
                               nn.Conv2d(32, 3, 3, 1, 1))
        self.down = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.PixelUnshuffle(2), nn.Conv2d(64, 3, 3, 1, 1))

    def forward(self, x):
        return self.f(self.down(x))


class ConvFlattenLinear(nn.Module):
    """LeNet-style: convs, then Flatten of a 8x8 map straight into a Linear (one channel -> 64 features)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.f = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 64, 3, 2), conv_bn(64, 48, 3, 2))
        self.fc1 = nn.Linear(48 * 8 * 8, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.f(x)
        return self.fc2(F.relu(self.fc1(x.reshape(x.shape[0], -1))))


class SplitSliceNet(nn.Module):
    """Uneven channel split (CSP-style), tensor slicing, and re-concatenation in another order."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 64, 3, 2)
        self.a = conv_bn(16, 16, 3)
        self.b = conv_bn(48, 48, 3)
        self.mix = conv_bn(64, 96, 3, 2)
        self.c = conv_bn(32, 32, 3)
        self.out = conv_bn(96, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.stem(x)
        p, q = torch.split(x, [16, 48], dim=1)
        x = self.mix(torch.cat([self.b(q), self.a(p)], 1))
        head, tail = x[:, :32], x[:, 32:]
        x = self.out(torch.cat([tail, self.c(head)], 1))
        return self.fc(x.mean([2, 3]))


class SubDivResNet(nn.Module):
    """Residual net whose merges use Sub and Div (and a broadcast per-channel scale)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 48, 3, 2)
        self.b1 = nn.Sequential(conv_bn(48, 96, 3), nn.Conv2d(96, 48, 3, 1, 1), nn.BatchNorm2d(48))
        self.b2 = nn.Sequential(conv_bn(48, 96, 3), nn.Conv2d(96, 48, 3, 1, 1), nn.BatchNorm2d(48))
        self.scale = nn.Parameter(torch.rand(1, 48, 1, 1) + 1.0)
        self.down = conv_bn(48, 96, 3, 2)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x - self.b1(x))
        x = F.relu(self.b2(x) / self.scale + x)
        x = self.down(x)
        return self.fc(x.mean([2, 3]))


# --- HRNet-like multi-resolution -----------------------------------------------------------------
class HRModule(nn.Module):
    def __init__(self, c_hi: int, c_lo: int):
        super().__init__()
        self.hi = nn.Sequential(conv_bn(c_hi, c_hi, 3), conv_bn(c_hi, c_hi, 3))
        self.lo = nn.Sequential(conv_bn(c_lo, c_lo, 3), conv_bn(c_lo, c_lo, 3))
        self.lo2hi = nn.Sequential(nn.Conv2d(c_lo, c_hi, 1, bias=False), nn.BatchNorm2d(c_hi))
        self.hi2lo = nn.Sequential(nn.Conv2d(c_hi, c_lo, 3, 2, 1, bias=False), nn.BatchNorm2d(c_lo))

    def forward(self, hi, lo):
        hi, lo = self.hi(hi), self.lo(lo)
        up = F.interpolate(self.lo2hi(lo), scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.relu(hi + up), F.relu(lo + self.hi2lo(hi))


class HRNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 32, 3, 2))
        self.to_lo = conv_bn(32, 64, 3, 2)
        self.m1 = HRModule(32, 64)
        self.m2 = HRModule(32, 64)
        self.final = conv_bn(32 + 64, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        hi = self.stem(x)
        lo = self.to_lo(hi)
        hi, lo = self.m1(hi, lo)
        hi, lo = self.m2(hi, lo)
        lo = F.interpolate(lo, size=hi.shape[-2:], mode="nearest")
        x = self.final(torch.cat([hi, lo], 1))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- DeepLab ASPP --------------------------------------------------------------------------------
class ASPP(nn.Module):
    def __init__(self, cin: int, c: int, rates=(2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, c, 1)] + [conv_bn(cin, c, 3, d=r) for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, c, 1, bias=False), nn.ReLU())
        self.project = conv_bn(c * (len(rates) + 2), c, 1)

    def forward(self, x):
        feats = [b(x) for b in self.branches]
        pooled = self.image_pool(x)
        feats.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(feats, 1))


class DeepLabASPP(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 64, 3, 2), conv_bn(64, 96, 3, 1, d=2))
        self.aspp = ASPP(96, 64)
        self.head = nn.Conv2d(64, num_classes, 1)

    def forward(self, x):
        y = self.head(self.aspp(self.backbone(x)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _make(cls, **kw):
    def factory() -> nn.Module:
        torch.manual_seed(0)
        return randomize_bn(cls(**kw))
    factory.__name__ = cls.__name__.lower()
    return factory
