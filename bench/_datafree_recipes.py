"""Digits models trained with recipes other than ``edgekit/models/digits.py``'s, for data-free pruning.

Why: obspa's synthetic inputs were tuned on edgekit's own digits models; a user's model comes from
another recipe (resolution, augmentation, optimiser, normalisation) and is exported with BN folded
(the TorchScript exporter in eval mode folds it). These models stand in for that user, so that
``bench/prune_datafree.py --recipes`` predicts what a user sees.

Every recipe: sklearn digits upsampled (bilinear) to ``size``, random shifts of ``shift`` pixels,
AdamW + one-cycle (or SGD + cosine), inputs either standardised with the training set's mean / std
outside the graph (``norm="outside"``) or fed in [0, 1] with the normalisation inside the graph
(``norm="graph"``: a Sub / Div at the input). ``HELD_OUT`` names the recipe kept out of the tuning
of obspa's synthetic inputs: it is reported apart.

Trained weights and exports are cached under ``~/.cache/edgekit/datafree`` (``EDGEKIT_CACHE``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class Recipe:
    arch: str
    size: int = 32
    shift: int = 3
    optim: str = "adamw"  # adamw: AdamW + one-cycle; sgd: SGD momentum + cosine
    norm: str = "outside"  # outside: standardised inputs; graph: [0, 1] inputs, Sub/Div in the graph
    epochs: int = 8
    lr: float = 3e-3


RECIPES = {
    "resnet20": Recipe("resnet20"),
    "vgg11bn": Recipe("vgg11bn"),
    "mbv2": Recipe("mbv2", epochs=10),
    "vit": Recipe("vit", size=32, epochs=40, lr=1e-3),
    "cnn-nobn": Recipe("cnn-nobn", norm="graph", epochs=16, lr=3e-3),
    # held out of the tuning: another resolution, optimiser and normalisation
    "resnet-sgd24": Recipe("resnet20", size=24, shift=2, optim="sgd", norm="graph", epochs=8, lr=0.05),
}
HELD_OUT = "resnet-sgd24"


def cache_dir() -> Path:
    d = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "datafree"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load(size: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test) in [0, 1], [N, 1, size, size] (bilinear upsampling)."""
    import torch  # lazy: torch is optional
    from sklearn.datasets import load_digits  # lazy: scikit-learn is optional

    ds = load_digits()
    x = torch.from_numpy(ds.images.astype(np.float32)[:, None] / 16.0)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).numpy()
    y = ds.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 4
    te, tr = np.sort(idx[:n_test]), np.sort(idx[n_test:])
    return x[tr], y[tr], x[te], y[te]


def norm_stats(xtr: np.ndarray) -> Tuple[float, float]:
    return float(xtr.mean()), float(xtr.std())


def model_inputs(name: str, x01: np.ndarray, xtr01: np.ndarray) -> np.ndarray:
    """What the exported model of recipe ``name`` is fed: standardised or [0, 1]."""
    if RECIPES[name].norm == "graph":
        return x01.astype(np.float32)
    mu, sd = norm_stats(xtr01)
    return ((x01 - mu) / sd).astype(np.float32)


def _build(r: Recipe, mu: float, sd: float):
    import torch  # lazy: torch is optional
    from torch import nn

    def cbr(cin, cout, k=3, s=1, g=1, bn=True, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        if act is not None:
            layers.append(act())
        return nn.Sequential(*layers)

    class Basic(nn.Module):
        def __init__(self, cin, cout, s):
            super().__init__()
            self.a = cbr(cin, cout, s=s)
            self.b = cbr(cout, cout, act=None)
            self.sc = nn.Identity() if s == 1 and cin == cout else cbr(cin, cout, 1, s, act=None)

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.sc(x))

    class InvRes(nn.Module):
        def __init__(self, cin, cout, s, t=4):
            super().__init__()
            h = cin * t
            self.f = nn.Sequential(cbr(cin, h, 1, act=nn.ReLU6), cbr(h, h, 3, s, g=h, act=nn.ReLU6),
                                   cbr(h, cout, 1, act=None))
            self.res = s == 1 and cin == cout

        def forward(self, x):
            y = self.f(x)
            return x + y if self.res else y

    class Block(nn.Module):  # pre-norm transformer block
        def __init__(self, d, heads=4):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

        def forward(self, x):  # attention written out (the fused kernel has no ONNX export)
            b, t, d = x.shape
            q, k, v = self.qkv(self.n1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, d))
            return x + self.mlp(self.n2(x))

    class ViT(nn.Module):
        def __init__(self, size, d=64, p=4, depth=4):
            super().__init__()
            self.emb = nn.Conv2d(1, d, p, p)
            self.pos = nn.Parameter(torch.zeros(1, (size // p) ** 2, d))
            self.blocks = nn.Sequential(*[Block(d) for _ in range(depth)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

        def forward(self, x):
            x = self.emb(x).flatten(2).transpose(1, 2) + self.pos
            return self.head(self.norm(self.blocks(x)).mean(1))

    class Norm(nn.Module):  # the normalisation inside the graph: a Sub and a Div at the input
        def forward(self, x):
            return (x - mu) / sd

    head = lambda c: [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]  # noqa: E731
    if r.arch == "resnet20":
        layers = [cbr(1, 16)]
        for cin, cout, s in [(16, 16, 1)] * 3 + [(16, 32, 2)] + [(32, 32, 1)] * 2 + [(32, 64, 2)] + [(64, 64, 1)] * 2:
            layers.append(Basic(cin, cout, s))
        net = nn.Sequential(*layers, *head(64))
    elif r.arch == "vgg11bn":
        cfg, layers, c = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128], [], 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(cbr(c, v))
                c = v
        net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * (r.size // 16) ** 2, 64), nn.ReLU(),
                            nn.Linear(64, 10))
    elif r.arch == "mbv2":
        layers = [cbr(1, 16, act=nn.ReLU6)]
        for cin, cout, s in [(16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1), (32, 64, 2),
                             (64, 64, 1)]:
            layers.append(InvRes(cin, cout, s))
        net = nn.Sequential(*layers, cbr(64, 128, 1, act=nn.ReLU6), *head(128))
    elif r.arch == "vit":
        net = ViT(r.size)
    elif r.arch == "cnn-nobn":
        net = nn.Sequential(cbr(1, 32, bn=False), cbr(32, 32, bn=False), nn.MaxPool2d(2), cbr(32, 64, bn=False),
                            cbr(64, 64, bn=False), nn.MaxPool2d(2), cbr(64, 64, bn=False), *head(64))
    else:
        raise ValueError(r.arch)
    return nn.Sequential(Norm(), net) if r.norm == "graph" else net


def _shifted(xb, shift: int, gen):
    import torch  # lazy: torch is optional

    if shift <= 0:
        return xb
    pad = torch.nn.functional.pad(xb, (shift,) * 4, value=float(xb.min()))
    dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + xb.shape[2], dx:dx + xb.shape[3]]


def train(name: str, seed: int = 0):
    """The recipe's trained torch model (cached) and its test accuracy."""
    import torch  # lazy: torch is optional

    r = RECIPES[name]
    xtr, ytr, xte, yte = load(r.size, seed)
    mu, sd = norm_stats(xtr)
    torch.manual_seed(seed)
    net = _build(r, mu, sd)
    key = hashlib.sha1(f"{r}-{seed}-v1".encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.pt"
    fit_x = torch.from_numpy(model_inputs(name, xtr, xtr))
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        gen = torch.Generator().manual_seed(seed)
        bs, steps_per = 64, (len(ytr) + 63) // 64
        if r.optim == "adamw":
            opt = torch.optim.AdamW(net.parameters(), lr=r.lr, weight_decay=0.05)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=r.epochs * steps_per)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=r.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r.epochs * steps_per)
        yt = torch.from_numpy(ytr)
        for _ in range(r.epochs):
            net.train()
            perm = torch.randperm(len(yt), generator=gen)
            for i in range(0, len(yt), bs):
                b = perm[i:i + bs]
                loss = torch.nn.functional.cross_entropy(net(_shifted(fit_x[b], r.shift, gen)), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(net.state_dict(), tmp)
        os.replace(tmp, path)
    net.eval()
    with torch.no_grad():
        acc = float((net(torch.from_numpy(model_inputs(name, xte, xtr))).argmax(1).numpy() == yte).mean())
    return net, acc


def export(name: str, keep_bn: bool = False, seed: int = 0) -> Tuple[Path, dict]:
    """The recipe's ONNX export (cached; BN folded by the TorchScript exporter unless ``keep_bn``)
    and its data: ``{"x_train", "y_train", "x_test", "y_test", "torch_acc"}`` as the model is fed."""
    import torch  # lazy: torch is optional

    net, acc = train(name, seed)
    r = RECIPES[name]
    xtr, ytr, xte, yte = load(r.size, seed)
    data = {"x_train": model_inputs(name, xtr, xtr), "y_train": ytr, "x_test": model_inputs(name, xte, xtr),
            "y_test": yte, "torch_acc": acc}
    key = hashlib.sha1(f"{r}-{seed}-{keep_bn}-v1".encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{'bn' if keep_bn else 'folded'}-{key}.onnx"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
        with torch.no_grad():
            torch.onnx.export(net, (torch.zeros(1, 1, r.size, r.size),), str(tmp), input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False, do_constant_folding=True, training=mode)
        os.replace(tmp, path)
    return path, data


if __name__ == "__main__":  # train and export every recipe: python bench/_datafree_recipes.py [names]
    import sys

    for nm in sys.argv[1:] or list(RECIPES):
        p, d = export(nm)
        print(nm, p, round(d["torch_acc"], 4), flush=True)
