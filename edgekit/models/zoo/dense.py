"""Dense-prediction and extra convolutional families for the pruning corpus: U-Net (ConvTranspose
+ skip concat), an FPN, a YOLO-style PAN neck (Upsample + Concat), GhostNet (cheap-op concat then
slice), Res2Net (hierarchical split / add / concat) and a 1-D keyword-spotting net (Conv1d)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.models.zoo.cnn import conv_bn


class UNet(nn.Module):
    def __init__(self, base: int = 16, out_channels: int = 2):
        super().__init__()
        c = [base, 2 * base, 4 * base, 8 * base]
        self.e0 = nn.Sequential(conv_bn(3, c[0]), conv_bn(c[0], c[0]))
        self.e1 = nn.Sequential(conv_bn(c[0], c[1]), conv_bn(c[1], c[1]))
        self.e2 = nn.Sequential(conv_bn(c[1], c[2]), conv_bn(c[2], c[2]))
        self.mid = nn.Sequential(conv_bn(c[2], c[3]), conv_bn(c[3], c[3]))
        self.up2 = nn.ConvTranspose2d(c[3], c[2], 2, 2)
        self.d2 = nn.Sequential(conv_bn(2 * c[2], c[2]), conv_bn(c[2], c[2]))
        self.up1 = nn.ConvTranspose2d(c[2], c[1], 2, 2)
        self.d1 = nn.Sequential(conv_bn(2 * c[1], c[1]), conv_bn(c[1], c[1]))
        self.up0 = nn.ConvTranspose2d(c[1], c[0], 2, 2)
        self.d0 = nn.Sequential(conv_bn(2 * c[0], c[0]), conv_bn(c[0], c[0]))
        self.out = nn.Conv2d(c[0], out_channels, 1)

    def forward(self, x):
        s0 = self.e0(x)
        s1 = self.e1(F.max_pool2d(s0, 2))
        s2 = self.e2(F.max_pool2d(s1, 2))
        m = self.mid(F.max_pool2d(s2, 2))
        y = self.d2(torch.cat([self.up2(m), s2], 1))
        y = self.d1(torch.cat([self.up1(y), s1], 1))
        y = self.d0(torch.cat([self.up0(y), s0], 1))
        return self.out(y)


class FPN(nn.Module):
    """Backbone C3..C5, lateral 1x1 convs, top-down nearest upsampling + Add, 3x3 output convs and a
    shared head (the same conv weights applied at every level)."""

    def __init__(self, c: int = 48, num_outputs: int = 6):
        super().__init__()
        self.c2 = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 48, 3, 2))
        self.c3 = conv_bn(48, 64, 3, 2)
        self.c4 = conv_bn(64, 96, 3, 2)
        self.c5 = conv_bn(96, 128, 3, 2)
        self.lat = nn.ModuleList([nn.Conv2d(ci, c, 1) for ci in (64, 96, 128)])
        self.smooth = nn.ModuleList([nn.Conv2d(c, c, 3, 1, 1) for _ in range(3)])
        self.head = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, num_outputs, 1))

    def forward(self, x):
        c3 = self.c3(self.c2(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p5 = self.lat[2](c5)
        p4 = self.lat[1](c4) + F.interpolate(p5, scale_factor=2.0, mode="nearest")
        p3 = self.lat[0](c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        outs = [self.head(s(p)) for s, p in zip(self.smooth, (p3, p4, p5))]
        return tuple(outs)


class YoloNeck(nn.Module):
    """YOLOv5-style CSP backbone + PAN neck (Upsample/Concat top-down, strided conv/Concat bottom-up)
    with three detection outputs."""

    class CSP(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            h = cout // 2
            self.a = conv_bn(cin, h, 1, act=nn.SiLU())
            self.b = conv_bn(cin, h, 1, act=nn.SiLU())
            self.m = nn.Sequential(conv_bn(h, h, 1, act=nn.SiLU()), conv_bn(h, h, 3, act=nn.SiLU()))
            self.out = conv_bn(2 * h, cout, 1, act=nn.SiLU())

        def forward(self, x):
            a = self.a(x)
            return self.out(torch.cat([a + self.m(a), self.b(x)], 1))

    def __init__(self, w: int = 16, num_outputs: int = 3 * (5 + 4)):
        super().__init__()
        S = nn.SiLU
        self.p3 = nn.Sequential(conv_bn(3, w, 3, 2, act=S()), conv_bn(w, 2 * w, 3, 2, act=S()), self.CSP(2 * w, 2 * w),
                                conv_bn(2 * w, 4 * w, 3, 2, act=S()), self.CSP(4 * w, 4 * w))
        self.p4 = nn.Sequential(conv_bn(4 * w, 8 * w, 3, 2, act=S()), self.CSP(8 * w, 8 * w))
        self.p5 = nn.Sequential(conv_bn(8 * w, 16 * w, 3, 2, act=S()), self.CSP(16 * w, 16 * w))
        self.lat5 = conv_bn(16 * w, 8 * w, 1, act=S())
        self.td4 = self.CSP(16 * w, 8 * w)
        self.lat4 = conv_bn(8 * w, 4 * w, 1, act=S())
        self.td3 = self.CSP(8 * w, 4 * w)
        self.down3 = conv_bn(4 * w, 4 * w, 3, 2, act=S())
        self.bu4 = self.CSP(8 * w, 8 * w)
        self.down4 = conv_bn(8 * w, 8 * w, 3, 2, act=S())
        self.bu5 = self.CSP(16 * w, 16 * w)
        self.detect = nn.ModuleList([nn.Conv2d(c, num_outputs, 1) for c in (4 * w, 8 * w, 16 * w)])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t5 = self.lat5(p5)
        t4 = self.td4(torch.cat([self.up(t5), p4], 1))
        t4l = self.lat4(t4)
        o3 = self.td3(torch.cat([self.up(t4l), p3], 1))
        o4 = self.bu4(torch.cat([self.down3(o3), t4l], 1))
        o5 = self.bu5(torch.cat([self.down4(o4), t5], 1))
        return tuple(d(o) for d, o in zip(self.detect, (o3, o4, o5)))


class GhostModule(nn.Module):
    def __init__(self, cin: int, cout: int, relu: bool = True):
        super().__init__()
        self.cout = cout
        init = (cout + 1) // 2
        act = nn.ReLU() if relu else nn.Identity()
        self.primary = nn.Sequential(nn.Conv2d(cin, init, 1, bias=False), nn.BatchNorm2d(init), act)
        act2 = nn.ReLU() if relu else nn.Identity()
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False), nn.BatchNorm2d(init), act2)

    def forward(self, x):
        a = self.primary(x)
        return torch.cat([a, self.cheap(a)], 1)[:, : self.cout]


class GhostNet(nn.Module):
    class Bottleneck(nn.Module):
        def __init__(self, cin: int, mid: int, cout: int, stride: int):
            super().__init__()
            layers: List[nn.Module] = [GhostModule(cin, mid)]
            if stride > 1:
                layers += [nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid)]
            layers.append(GhostModule(mid, cout, relu=False))
            self.f = nn.Sequential(*layers)
            self.short = (nn.Identity() if stride == 1 and cin == cout else
                          nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return self.f(x) + self.short(x)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        B = self.Bottleneck
        self.features = nn.Sequential(conv_bn(3, 16, 3, 2), B(16, 16, 16, 1), B(16, 48, 24, 2), B(24, 72, 24, 1),
                                      B(24, 72, 40, 2), B(40, 120, 40, 1), B(40, 240, 80, 2), conv_bn(80, 240, 1))
        self.fc = nn.Linear(240, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class Res2Net(nn.Module):
    class Block(nn.Module):
        def __init__(self, c: int, scales: int = 4):
            super().__init__()
            w = c // scales
            self.scales = scales
            self.reduce = conv_bn(c, c, 1)
            self.convs = nn.ModuleList([conv_bn(w, w, 3) for _ in range(scales - 1)])
            self.expand = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            parts = torch.chunk(self.reduce(x), self.scales, 1)
            outs = [parts[0]]
            prev = None
            for i, conv in enumerate(self.convs):
                inp = parts[i + 1] if prev is None else parts[i + 1] + prev
                prev = conv(inp)
                outs.append(prev)
            return F.relu(x + self.expand(torch.cat(outs, 1)))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 64, 3, 2), self.Block(64), conv_bn(64, 128, 3, 2), self.Block(128),
                                      self.Block(128))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean([2, 3]))


class KWSConv1d(nn.Module):
    """Keyword-spotting net over MFCC frames [B, 40, T]: Conv1d + BatchNorm1d, residuals, GlobalAvgPool."""

    def __init__(self, num_classes: int = 12):
        super().__init__()
        def c1(ci, co, k, s=1):
            return nn.Sequential(nn.Conv1d(ci, co, k, s, k // 2, bias=False), nn.BatchNorm1d(co), nn.ReLU())
        self.stem = c1(40, 96, 3)
        self.b1 = nn.Sequential(c1(96, 96, 9), nn.Conv1d(96, 96, 9, 1, 4, bias=False), nn.BatchNorm1d(96))
        self.down = c1(96, 128, 3, 2)
        self.b2 = nn.Sequential(c1(128, 128, 9), nn.Conv1d(128, 128, 9, 1, 4, bias=False), nn.BatchNorm1d(128))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b1(x))
        x = self.down(x)
        x = F.relu(x + self.b2(x))
        return self.fc(x.mean(-1))
