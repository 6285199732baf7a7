"""Detection, segmentation and language architectures named by the published Jetson latency
figures: YOLOX, FCN-ResNet18, SegFormer-B0, PIDNet-S, RetinaNet (MLPerf, ResNeXt50-FPN),
SSD-MobileNet-v1, SSD-ResNet34 (MLPerf) and BERT-Large. Random weights, structure only (see
:mod:`edgekit.models.figures`); heads stop at the raw network outputs (no NMS / box decoding,
which run outside the TensorRT engine in the benchmarks)."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from edgekit.models.figures import TBlock, conv_bn, upsample
from edgekit.models.resnet import BasicBlock, Bottleneck, resnet18, resnet34


# ---------------------------------------------------------------- YOLOX (Ge et al. 2021)
class _CSP(nn.Module):
    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True):
        super().__init__()
        m = cout // 2
        self.a, self.b = conv_bn(cin, m, 1, act=nn.SiLU), conv_bn(cin, m, 1, act=nn.SiLU)
        self.m = nn.ModuleList(nn.Sequential(conv_bn(m, m, 1, act=nn.SiLU), conv_bn(m, m, 3, act=nn.SiLU))
                               for _ in range(n))
        self.shortcut = shortcut
        self.out = conv_bn(2 * m, cout, 1, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        for blk in self.m:
            y = y + blk(y) if self.shortcut else blk(y)
        return self.out(torch.cat([y, self.b(x)], 1))


class YOLOX(nn.Module):
    def __init__(self, depth: float, width: float, num_classes: int = 80):
        super().__init__()
        c = [int(v * width) for v in (64, 128, 256, 512, 1024)]
        n = max(round(3 * depth), 1)
        s = nn.SiLU
        self.stem = conv_bn(12, c[0], 3, act=s)  # Focus: space-to-depth then conv
        self.d2 = nn.Sequential(conv_bn(c[0], c[1], 3, 2, act=s), _CSP(c[1], c[1], n))
        self.d3 = nn.Sequential(conv_bn(c[1], c[2], 3, 2, act=s), _CSP(c[2], c[2], 3 * n))
        self.d4 = nn.Sequential(conv_bn(c[2], c[3], 3, 2, act=s), _CSP(c[3], c[3], 3 * n))
        self.d5a = nn.Sequential(conv_bn(c[3], c[4], 3, 2, act=s), conv_bn(c[4], c[4] // 2, 1, act=s))
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.d5b = nn.Sequential(conv_bn(c[4] * 2, c[4], 1, act=s), _CSP(c[4], c[4], n, False))
        self.lat0, self.c3p4 = conv_bn(c[4], c[3], 1, act=s), _CSP(2 * c[3], c[3], n, False)
        self.red1, self.c3p3 = conv_bn(c[3], c[2], 1, act=s), _CSP(2 * c[2], c[2], n, False)
        self.bu2, self.c3n3 = conv_bn(c[2], c[2], 3, 2, act=s), _CSP(2 * c[2], c[3], n, False)
        self.bu1, self.c3n4 = conv_bn(c[3], c[3], 3, 2, act=s), _CSP(2 * c[3], c[4], n, False)
        hw = int(256 * width)
        self.heads = nn.ModuleList()
        for cin in (c[2], c[3], c[4]):
            stem = conv_bn(cin, hw, 1, act=s)
            cls = nn.Sequential(conv_bn(hw, hw, 3, act=s), conv_bn(hw, hw, 3, act=s), nn.Conv2d(hw, num_classes, 1))
            reg = nn.Sequential(conv_bn(hw, hw, 3, act=s), conv_bn(hw, hw, 3, act=s))
            self.heads.append(nn.ModuleList([stem, cls, reg, nn.Conv2d(hw, 4, 1), nn.Conv2d(hw, 1, 1)]))

    def forward(self, x: torch.Tensor):
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        x3 = self.d3(self.d2(self.stem(x)))
        x4 = self.d4(x3)
        y = self.d5a(x4)
        x5 = self.d5b(torch.cat([y] + [p(y) for p in self.pools], 1))
        f0 = self.lat0(x5)
        p4 = self.c3p4(torch.cat([upsample(f0, x4.shape[2:]), x4], 1))
        f1 = self.red1(p4)
        p3 = self.c3p3(torch.cat([upsample(f1, x3.shape[2:]), x3], 1))
        n3 = self.c3n3(torch.cat([self.bu2(p3), f1], 1))
        n4 = self.c3n4(torch.cat([self.bu1(n3), f0], 1))
        outs = []
        for f, (stem, cls, reg, box, obj) in zip((p3, n3, n4), self.heads):
            f = stem(f)
            r = reg(f)
            outs.append(torch.cat([box(r), obj(r), cls(f)], 1).flatten(2))
        return torch.cat(outs, 2)


def yolox_s() -> YOLOX:
    return YOLOX(0.33, 0.50)


def yolox_m() -> YOLOX:
    return YOLOX(0.67, 0.75)


def yolox_l() -> YOLOX:
    return YOLOX(1.0, 1.0)


# ---------------------------------------------------------------- FCN-ResNet18 (jetson-inference segNet)
class FCNResNet18(nn.Module):
    """ResNet-18 backbone at stride 32 (BasicBlocks take no dilation), FCN head, bilinear upsample."""

    def __init__(self, num_classes: int = 21):
        super().__init__()
        r = resnet18()
        self.body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
        self.head = nn.Sequential(conv_bn(512, 128, 3), nn.Conv2d(128, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(self.head(self.body(x)), x.shape[2:])


# ---------------------------------------------------------------- SegFormer-B0 (Xie et al. 2021)
class _MiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.srn = nn.LayerNorm(dim) if sr > 1 else None
        self.h = heads
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.dw = nn.Conv2d(4 * dim, 4 * dim, 3, 1, 1, groups=4 * dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        b, n, c = x.shape
        y = self.n1(x)
        q = self.q(y).view(b, n, self.h, -1).transpose(1, 2)
        if self.sr is not None:
            y = self.srn(self.sr(y.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2))
        k, v = self.kv(y).view(b, -1, 2, self.h, c // self.h).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (c // self.h) ** -0.5, -1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(b, n, c))
        y = self.fc1(self.n2(x))
        y = self.dw(y.transpose(1, 2).reshape(b, -1, *hw)).flatten(2).transpose(1, 2)
        return x + self.fc2(self.act(y))


class SegFormerB0(nn.Module):
    def __init__(self, num_classes: int = 150):
        super().__init__()
        dims, heads, srs = [32, 64, 160, 256], [1, 2, 5, 8], [8, 4, 2, 1]
        self.embeds, self.stages, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = 3
        for i, (d, h, sr) in enumerate(zip(dims, heads, srs)):
            k, s = (7, 4) if i == 0 else (3, 2)
            self.embeds.append(nn.Sequential(nn.Conv2d(cin, d, k, s, k // 2)))
            self.stages.append(nn.ModuleList([_MiTBlock(d, h, sr) for _ in range(2)]))
            self.norms.append(nn.LayerNorm(d))
            cin = d
        self.lin = nn.ModuleList(nn.Linear(d, 256) for d in dims)
        self.fuse = conv_bn(1024, 256, 1)
        self.cls = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for emb, blocks, norm, lin in zip(self.embeds, self.stages, self.norms, self.lin):
            x = emb(x)
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            for blk in blocks:
                t = blk(t, (h, w))
            t = norm(t)
            x = t.transpose(1, 2).reshape(b, c, h, w)
            feats.append(lin(t).transpose(1, 2).reshape(b, 256, h, w))
        size = feats[0].shape[2:]
        return self.cls(self.fuse(torch.cat([upsample(f, size) for f in reversed(feats)], 1)))


# ---------------------------------------------------------------- PIDNet-S (Xu et al. 2023), simplified fusions
def _stage(block, cin: int, c: int, n: int, s: int = 1) -> nn.Sequential:
    layers: List[nn.Module] = [block(cin, c, s)]
    layers += [block(c * block.expansion, c) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class PIDNetS(nn.Module):
    """Three branches (P: detail, I: context, D: boundary) of PIDNet-S's widths and depths; the
    Pag / Bag fusion modules are written as their 1x1 convs, sigmoid gates and upsamples."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        p = 32
        self.stem = nn.Sequential(conv_bn(3, p, 3, 2), conv_bn(p, p, 3, 2), _stage(BasicBlock, p, p, 2),
                                  _stage(BasicBlock, p, 2 * p, 2, 2))
        self.i3, self.i4 = _stage(BasicBlock, 2 * p, 4 * p, 3, 2), _stage(BasicBlock, 4 * p, 8 * p, 3, 2)
        self.i5 = _stage(Bottleneck, 8 * p, 8 * p, 2, 2)
        self.p3, self.p4 = _stage(BasicBlock, 2 * p, 2 * p, 2), _stage(BasicBlock, 2 * p, 2 * p, 2)
        self.p5 = _stage(Bottleneck, 2 * p, 2 * p, 1)
        self.d3, self.d4 = _stage(BasicBlock, 2 * p, p, 1), _stage(Bottleneck, p, p, 1)
        self.d5 = _stage(Bottleneck, 2 * p, 2 * p, 1)
        self.dproj = conv_bn(4 * p, 2 * p, 1, act=None)
        self.pag3, self.pag4 = conv_bn(4 * p, 2 * p, 1, act=None), conv_bn(8 * p, 2 * p, 1, act=None)
        self.dg3, self.dg4 = conv_bn(4 * p, p, 1, act=None), conv_bn(8 * p, 2 * p, 1, act=None)
        self.ppm = nn.ModuleList(conv_bn(32 * p, 96, 1) for _ in range(5))
        self.ppm_out = conv_bn(96 * 5, 8 * p, 1)
        self.bag = conv_bn(8 * p, 4 * p, 3)
        self.head = nn.Sequential(conv_bn(4 * p, 128, 3), nn.Conv2d(128, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        i3 = self.i3(x)
        xp, xd = self.p3(x), self.d3(x)
        size = xp.shape[2:]
        xp = xp + upsample(self.pag3(i3), size) * torch.sigmoid(xp)
        xd = torch.cat([xd, upsample(self.dg3(i3), size)], 1)[:, :32]
        i4 = self.i4(i3)
        xp, xd = self.p4(torch.relu(xp)), self.d4(torch.relu(xd))
        xp = xp + upsample(self.pag4(i4), size) * torch.sigmoid(xp)
        xd = self.dproj(xd) + upsample(self.dg4(i4), size)
        xp, xd = self.p5(torch.relu(xp)), self.d5(torch.relu(xd))
        i5 = self.i5(i4)
        ctx = torch.cat([upsample(m(i5.mean((2, 3), keepdim=True) if j else i5), i5.shape[2:])
                         for j, m in enumerate(self.ppm)], 1)
        ctx = upsample(self.ppm_out(ctx), size)
        g = torch.sigmoid(xd)
        return self.head(self.bag(g * xp + (1 - g) * ctx))


# ---------------------------------------------------------------- RetinaNet (MLPerf: ResNeXt50-32x4d FPN)
class _XBlock(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, s: int = 1):
        super().__init__()
        w = c * 2  # 32 groups x 4d widths: 128 / 256 / 512 / 1024
        self.body = nn.Sequential(conv_bn(cin, w, 1), conv_bn(w, w, 3, s, groups=32), conv_bn(w, 4 * c, 1, act=None))
        self.down = conv_bn(cin, 4 * c, 1, s, act=None) if s != 1 or cin != 4 * c else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


class RetinaNet(nn.Module):
    def __init__(self, num_classes: int = 264, anchors: int = 9):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.l1, self.l2 = _stage(_XBlock, 64, 64, 3), _stage(_XBlock, 256, 128, 4, 2)
        self.l3, self.l4 = _stage(_XBlock, 512, 256, 6, 2), _stage(_XBlock, 1024, 512, 3, 2)
        self.lat = nn.ModuleList(nn.Conv2d(c, 256, 1) for c in (512, 1024, 2048))
        self.smooth = nn.ModuleList(nn.Conv2d(256, 256, 3, 1, 1) for _ in range(3))
        self.p6, self.p7 = nn.Conv2d(2048, 256, 3, 2, 1), nn.Conv2d(256, 256, 3, 2, 1)

        def tower(out: int) -> nn.Sequential:
            layers: List[nn.Module] = []
            for _ in range(4):
                layers += [nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU()]
            return nn.Sequential(*layers, nn.Conv2d(256, out, 3, 1, 1))

        self.cls, self.box = tower(anchors * num_classes), tower(anchors * 4)

    def forward(self, x: torch.Tensor):
        c3 = self.l2(self.l1(self.stem(x)))
        c4 = self.l3(c3)
        c5 = self.l4(c4)
        p5 = self.lat[2](c5)
        p4 = self.lat[1](c4) + upsample(p5, c4.shape[2:])
        p3 = self.lat[0](c3) + upsample(p4, c3.shape[2:])
        p6 = self.p6(c5)
        feats = [self.smooth[0](p3), self.smooth[1](p4), self.smooth[2](p5), p6, self.p7(torch.relu(p6))]
        return (torch.cat([self.cls(f).flatten(2) for f in feats], 2),
                torch.cat([self.box(f).flatten(2) for f in feats], 2))


# ---------------------------------------------------------------- SSD-MobileNet-v1 (300) / SSD-ResNet34 (1200)
def _dw_sep(cin: int, cout: int, s: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cin, 3, s, groups=cin, act=nn.ReLU6), conv_bn(cin, cout, 1, act=nn.ReLU6))


class _SSD(nn.Module):
    def __init__(self, body: nn.Module, tap: nn.Module, chans: List[int], extras: List[int], anchors: List[int],
                 num_classes: int, head_k: int = 3):
        super().__init__()
        self.body, self.tap = body, tap
        self.extras = nn.ModuleList()
        c = chans[-1]
        for out in extras:
            self.extras.append(nn.Sequential(conv_bn(c, out // 2, 1), conv_bn(out // 2, out, 3, 2)))
            c = out
        outs = chans + extras
        self.cls = nn.ModuleList(nn.Conv2d(c, a * num_classes, head_k, 1, head_k // 2) for c, a in zip(outs, anchors))
        self.box = nn.ModuleList(nn.Conv2d(c, a * 4, head_k, 1, head_k // 2) for c, a in zip(outs, anchors))

    def forward(self, x: torch.Tensor):
        f1 = self.body(x)
        feats = [f1, self.tap(f1)]
        for e in self.extras:
            feats.append(e(feats[-1]))
        return (torch.cat([h(f).flatten(1) for h, f in zip(self.cls, feats)], 1),
                torch.cat([h(f).flatten(1) for h, f in zip(self.box, feats)], 1))


def ssd_mobilenet_v1() -> _SSD:
    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5
    body = nn.Sequential(conv_bn(3, 32, 3, 2, act=nn.ReLU6), *[_dw_sep(a, b, s) for a, b, s in cfg])
    tap = nn.Sequential(_dw_sep(512, 1024, 2), _dw_sep(1024, 1024, 1))
    return _SSD(body, tap, [512, 1024], [512, 256, 256, 128], [3, 6, 6, 6, 6, 6], 91, head_k=1)


def ssd_resnet34() -> _SSD:
    """MLPerf SSD-ResNet34: ResNet-34 to layer3 with layer3's stride removed, at 1200x1200."""
    r = resnet34()
    l3 = r.layer3
    l3[0].conv1.stride = (1, 1)
    l3[0].downsample[0].stride = (1, 1)
    body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, l3)
    tap = nn.Sequential(conv_bn(256, 256, 1), conv_bn(256, 512, 3, 2))
    return _SSD(body, tap, [256, 512], [512, 256, 256, 256], [4, 6, 6, 6, 4, 4], 81)


# ---------------------------------------------------------------- BERT-Large encoder (seq 384)
class BertLarge(nn.Module):
    def __init__(self, layers: int = 24, dim: int = 1024, heads: int = 16):
        super().__init__()
        self.emb = nn.Embedding(30522, dim)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*[TBlock(dim, heads) for _ in range(layers)])
        self.qa = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qa(self.blocks(self.norm(self.emb(ids))))
