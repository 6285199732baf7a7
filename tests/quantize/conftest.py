"""Fixtures for the ONNX-level quantizer tests: a trained digits classifier exported to ONNX."""

from __future__ import annotations

import numpy as np
import pytest


def _local_digits(tmp):
    """A small residual CNN (16/32 channels, so the TensorRT placer quantizes it) trained on sklearn digits."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = ((x - 0.3) / 0.35).numpy().astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:1400], idx[1400:]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.c1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
            self.down = nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.fc = nn.Linear(32, 10)

        def forward(self, t):
            s = self.stem(t)
            r = torch.relu(self.c2(self.c1(s)) + s)
            z = self.down(torch.cat([r, s], 1))
            return self.fc(z.mean((2, 3)))

    torch.manual_seed(0)
    m = Net()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x[tr]), torch.tensor(y[tr])
    for _ in range(12):
        perm = torch.randperm(len(tr))
        for i in range(0, len(tr), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(m(xt[b]), yt[b]).backward()
            opt.step()
    m.eval()
    path = tmp / "digits.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, torch.tensor(x[:1]), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return path, x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory):
    """(onnx path, Xtrain, ytrain, Xtest, ytest) of a trained digits classifier."""
    tmp = tmp_path_factory.mktemp("digits")
    try:  # the shared trained digits ResNet (16/32/64 channels), cached on disk across runs
        from edgekit.models import digits
    except ImportError:
        return _local_digits(tmp)
    xtr, ytr, xte, yte = digits.load(image_size=16, seed=0)
    m, _ = digits.trained("resnet", seed=0)
    path = digits.export_onnx(m, tmp / "digits.onnx", opset=17)
    return path, xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


def onnx_accuracy(model, x, y) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    data = model if isinstance(model, (str, bytes)) else (str(model) if hasattr(model, "suffix") else model.SerializeToString())
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    out = s.run(None, {s.get_inputs()[0].name: x})[0]
    return float(np.mean(out.argmax(1) == y))
