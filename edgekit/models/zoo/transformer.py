"""Attention and token-mixing families for the pruning corpus: a ViT built on
``nn.MultiheadAttention`` (fused in-projection), a Swin-like block (window partition with
view/permute, shifted windows via roll, relative position bias), MLP-Mixer (token-mixing Linear on
a transposed tensor) and a MobileViT-like block (conv -> unfold to patches -> transformer -> fold)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.models.zoo.cnn import conv_bn


class MHAViT(nn.Module):
    class Block(nn.Module):
        def __init__(self, dim: int, heads: int):
            super().__init__()
            self.n1 = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.n2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x):
            h = self.n1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.n2(x))

    def __init__(self, image: int = 64, patch: int = 8, dim: int = 96, depth: int = 3, heads: int = 4,
                 num_classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        n = (image // patch) ** 2
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.blocks = nn.Sequential(*[self.Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(heads, window * window, window * window) * 0.02)

    def forward(self, x):  # x: [B*nW, N, C]
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q * self.scale) @ k.transpose(-2, -1) + self.bias
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(y)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.n1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # x: [B, H, W, C]
        b, h, w, c = x.shape
        ws = self.window
        y = self.n1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = y.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y
        return x + self.mlp(self.n2(x))


class Swin(nn.Module):
    def __init__(self, dim: int = 48, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.norm0 = nn.LayerNorm(dim)
        self.s1 = nn.Sequential(SwinBlock(dim, 3, 4, 0), SwinBlock(dim, 3, 4, 2))
        # patch merging: 2x2 neighbourhood concat -> LayerNorm -> Linear 4C -> 2C
        self.merge_norm = nn.LayerNorm(4 * dim)
        self.merge = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.s2 = nn.Sequential(SwinBlock(2 * dim, 6, 4, 0), SwinBlock(2 * dim, 6, 4, 2))
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x):
        x = self.norm0(self.embed(x).permute(0, 2, 3, 1))
        x = self.s1(x)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        x = self.s2(self.merge(self.merge_norm(x)))
        return self.head(self.norm(x).mean([1, 2]))


class MLPMixer(nn.Module):
    class Block(nn.Module):
        def __init__(self, tokens: int, dim: int):
            super().__init__()
            self.n1 = nn.LayerNorm(dim)
            self.tok = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
            self.n2 = nn.LayerNorm(dim)
            self.ch = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x):  # [B, T, C]
            x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
            return x + self.ch(self.n2(x))

    def __init__(self, image: int = 64, patch: int = 8, dim: int = 96, depth: int = 3, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        t = (image // patch) ** 2
        self.blocks = nn.Sequential(*[self.Block(t, dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


class MobileViTBlock(nn.Module):
    def __init__(self, c: int, d: int, depth: int = 2, patch: int = 2, heads: int = 4):
        super().__init__()
        self.p = patch
        self.local = nn.Sequential(conv_bn(c, c, 3, act=nn.SiLU()), nn.Conv2d(c, d, 1, bias=False))
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.proj = conv_bn(d, c, 1, act=nn.SiLU())
        self.fuse = conv_bn(2 * c, c, 3, act=nn.SiLU())

    def forward(self, x):
        b, _, h, w = x.shape
        p = self.p
        y = self.local(x)
        d = y.shape[1]
        # unfold: [B, d, H, W] -> [B*p*p, (H/p)*(W/p), d]
        y = y.reshape(b, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, -1, d)
        y = self.norm(self.transformer(y))
        y = y.reshape(b, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.proj(y)], 1))


class MobileViT(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        S = nn.SiLU
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2, act=S()), conv_bn(16, 32, 3, 2, act=S()))
        self.b1 = MobileViTBlock(32, 64)
        self.down = conv_bn(32, 64, 3, 2, act=S())
        self.b2 = MobileViTBlock(64, 96)
        self.last = conv_bn(64, 160, 1, act=S())
        self.fc = nn.Linear(160, num_classes)

    def forward(self, x):
        x = self.b2(self.down(self.b1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(self.last(x), 1).flatten(1))
