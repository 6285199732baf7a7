"""A small YOLO-style detector: CSP backbone, PAN-style neck (Upsample + Concat), and an anchor-free
decoupled head that emits raw per-cell predictions ``[B, 4 + num_classes, N]`` (box ltrb distances
and class logits), decoded by the box-decode + NMS post-processing (``kernels/``).
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 3)
        self.cv2 = ConvBNAct(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block: split into two halves, run n bottlenecks on one, concat every intermediate."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvBNAct(cin, 2 * self.c, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * self.c, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5):
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBNAct(cin, hidden, 1)
        self.cv2 = ConvBNAct(hidden * 4, cout, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class Head(nn.Module):
    def __init__(self, chs: List[int], num_classes: int):
        super().__init__()
        self.nc = num_classes
        c2 = max(16, chs[0] // 4)
        c3 = max(chs[0], num_classes)
        self.box = nn.ModuleList(nn.Sequential(ConvBNAct(c, c2), ConvBNAct(c2, c2), nn.Conv2d(c2, 4, 1)) for c in chs)
        self.cls = nn.ModuleList(nn.Sequential(ConvBNAct(c, c3), ConvBNAct(c3, c3), nn.Conv2d(c3, num_classes, 1))
                                 for c in chs)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        outs = []
        for i, f in enumerate(feats):
            y = torch.cat([self.box[i](f), self.cls[i](f)], 1)
            outs.append(y.flatten(2))
        return torch.cat(outs, 2)


class YoloTiny(nn.Module):
    def __init__(self, num_classes: int = 80, width: int = 16, in_channels: int = 3):
        super().__init__()
        w = width
        self.stem = ConvBNAct(in_channels, w, 3, 2)                   # /2
        self.s1 = nn.Sequential(ConvBNAct(w, 2 * w, 3, 2), C2f(2 * w, 2 * w, 1))       # /4
        self.s2 = nn.Sequential(ConvBNAct(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 2))   # /8  -> P3
        self.s3 = nn.Sequential(ConvBNAct(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 2))   # /16 -> P4
        self.s4 = nn.Sequential(ConvBNAct(8 * w, 16 * w, 3, 2), C2f(16 * w, 16 * w, 1), SPPF(16 * w, 16 * w))  # /32
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = C2f(16 * w + 8 * w, 8 * w, 1, shortcut=False)
        self.n2 = C2f(8 * w + 4 * w, 4 * w, 1, shortcut=False)       # P3 out
        self.d1 = ConvBNAct(4 * w, 4 * w, 3, 2)
        self.n3 = C2f(4 * w + 8 * w, 8 * w, 1, shortcut=False)       # P4 out
        self.d2 = ConvBNAct(8 * w, 8 * w, 3, 2)
        self.n4 = C2f(8 * w + 16 * w, 16 * w, 1, shortcut=False)     # P5 out
        self.head = Head([4 * w, 8 * w, 16 * w], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.s2(self.s1(self.stem(x)))
        p4 = self.s3(p3)
        p5 = self.s4(p4)
        t4 = self.n1(torch.cat([self.up(p5), p4], 1))
        o3 = self.n2(torch.cat([self.up(t4), p3], 1))
        o4 = self.n3(torch.cat([self.d1(o3), t4], 1))
        o5 = self.n4(torch.cat([self.d2(o4), p5], 1))
        return self.head([o3, o4, o5])


def yolo_tiny(num_classes: int = 80, width: int = 16, **kw: int) -> YoloTiny:
    return YoloTiny(num_classes, width, **kw)
