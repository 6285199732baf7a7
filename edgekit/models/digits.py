"""Small models trained on real data: scikit-learn's handwritten digits (1797 8x8 images, 10 classes).

No dataset can be downloaded on our machines; ``sklearn.datasets.load_digits`` ships inside
scikit-learn, so tests and benchmarks that need *real* accuracy (pruning, INT8, 2:4, data-free
compensation) use these. Images are upsampled to ``image_size`` (default 16x16) so conv nets with a
couple of stride-2 stages make sense. Trained weights are cached on disk (``EDGEKIT_CACHE`` or
``~/.cache/edgekit``), keyed by architecture, seed, epochs and image size, so a test suite trains each
model once.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from edgekit.runtime.onnxruntime import ort_session

ARCHS = ("resnet", "mobilenetv2", "vgg", "vit", "mlp", "resnet18-imagenet", "mobilenetv2-imagenet")
DEFAULT_EPOCHS = {"resnet": 30, "mobilenetv2": 40, "vgg": 30, "vit": 60, "mlp": 40,
                  "resnet18-imagenet": 20, "mobilenetv2-imagenet": 20}


def cache_dir() -> Path:
    d = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "digits"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load(image_size: int = 16, seed: int = 0, test_fraction: float = 0.25
         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): float32 [N, 1, S, S] standardised, int64 labels.

    The split is stratified and fixed by ``seed``; standardisation uses train statistics only.
    """
    from sklearn.datasets import load_digits  # lazy: scikit-learn is optional

    ds = load_digits()
    images = ds.images.astype(np.float32) / 16.0  # [N, 8, 8] in [0, 1]
    labels = ds.target.astype(np.int64)
    if image_size != 8:
        if image_size % 8:
            raise ValueError("image_size must be a multiple of 8")
        f = image_size // 8
        images = images.repeat(f, axis=1).repeat(f, axis=2)  # nearest-neighbour upsampling
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test_idx.extend(idx[:n_test])
        train_idx.extend(idx[n_test:])
    train_idx = np.array(sorted(train_idx))
    test_idx = np.array(sorted(test_idx))
    x = images[:, None, :, :]
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
    x = (x - mean) / std
    return x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]


def build(arch: str, num_classes: int = 10, image_size: int = 16):
    """An untrained model of one of ``ARCHS``, sized for 1x16x16 digits."""
    from edgekit.models import digits_nets  # lazy: the architectures import torch

    model = digits_nets.build(arch, num_classes, image_size)
    if model is None:
        raise ValueError(f"unknown digits architecture {arch!r}; choose from {ARCHS}")
    return model


def train(model, x: np.ndarray, y: np.ndarray, epochs: int = 20, lr: float = 3e-3, batch_size: int = 64,
          seed: int = 0, weight_decay: float = 1e-4, after_step: Optional[Callable[[object], None]] = None,
          optimizer: Optional[object] = None):
    """Train in place with AdamW + cosine schedule; ``after_step(model)`` runs after every step
    (e.g. to re-apply sparsity masks). Returns the model in eval mode."""
    import torch  # lazy: torch is optional
    from torch import nn  # lazy: torch is optional

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # One intra-op thread: CPU reductions then run in a fixed order, so the same seed gives the same
    # weights on every machine (tests assert accuracy bounds on these models; they must not depend on
    # how many cores the machine that trained the cached copy had).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=g)
            for i in range(0, len(xt), batch_size):
                idx = perm[i:i + batch_size]
                xb = xt[idx]
                # light augmentation: random shifts by up to 1 pixel keep the task honest
                shift = torch.randint(-1, 2, (2,), generator=g)
                xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
                opt.zero_grad()
                loss = loss_fn(model(xb), yt[idx])
                loss.backward()
                opt.step()
                sched.step()
                if after_step is not None:
                    after_step(model)
    torch.set_num_threads(threads)
    model.eval()
    return model


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of a torch module."""
    import torch  # lazy: torch is optional

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            pred = model(torch.from_numpy(x[i:i + batch_size])).argmax(1).numpy()
            correct += int((pred == y[i:i + batch_size]).sum())
    return correct / len(x)


def accuracy_onnx(model_or_path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX model (path or ModelProto) under ONNX Runtime CPU."""
    src = model_or_path if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    sess = ort_session(src, log_level=3)
    name = sess.get_inputs()[0].name
    batch = sess.get_inputs()[0].shape[0]
    if isinstance(batch, int) and batch > 0:  # static batch: run one sample at a time
        preds = [sess.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
        pred = np.concatenate(preds)
    else:
        pred = sess.run(None, {name: x})[0].argmax(1)
    return float((pred == y).mean())


def export_onnx(model, path, opset: int = 17, image_size: int = 16, dynamic_batch: bool = True,
                keep_bn: bool = False):
    """Export with the TorchScript-based exporter (deterministic initializer names = parameter names).

    ``keep_bn=True`` keeps BatchNormalization nodes instead of folding them into the convs (what
    data-free pruning needs: the BN statistics are its only information about activations).
    """
    import torch  # lazy: torch is optional

    model.eval()
    dummy = torch.zeros(1, 1, image_size, image_size)
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        # PRESERVE with an eval-mode model keeps BN nodes; torch's advice about constant folding in
        # training mode does not apply
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL)
    return Path(path)


def trained(arch: str, seed: int = 0, epochs: Optional[int] = None, image_size: int = 16):
    """(model, test accuracy): trained once, then loaded from the on-disk cache."""
    import torch  # lazy: torch is optional

    epochs = epochs or DEFAULT_EPOCHS[arch]
    xtr, ytr, xte, yte = load(image_size, seed)
    torch.manual_seed(seed)  # the initial weights too must not depend on what ran before in the process
    model = build(arch, image_size=image_size)
    key = hashlib.sha1(f"{arch}-{seed}-{epochs}-{image_size}-v2".encode()).hexdigest()[:12]
    path = cache_dir() / f"{arch}-{key}.pt"
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.eval()
            return model, accuracy(model, xte, yte)
        except Exception:  # stale or corrupt cache: retrain
            path.unlink(missing_ok=True)
    train(model, xtr, ytr, epochs=epochs, seed=seed)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, accuracy(model, xte, yte)
