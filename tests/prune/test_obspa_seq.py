"""obspa-seq: sequential data-free reconstruction on top of obspa (tiny generated models)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from edgekit.prune import obspa, prune  # noqa: E402
from tests.prune.helpers import export_bn, run_any_batch  # noqa: E402
from edgekit.prune.obspa_seq import im2col, ridge_fit  # noqa: E402


def _run(model, x):
    return run_any_batch(model, x)


def _export(m, path, keep_bn=True, shape=(1, 3, 12, 12)):
    return export_bn(m, path, keep_bn, shape)


def _noise(n, seed):
    return obspa.smooth_noise(np.random.default_rng(seed), (n, 3, 12, 12), 3)


class _Block(torch.nn.Module):
    """An inverted-residual-like block: narrow residual stream, expand, depthwise, project."""

    def __init__(self, c, e):
        super().__init__()
        self.f = torch.nn.Sequential(
            torch.nn.Conv2d(c, e, 1, bias=False), torch.nn.BatchNorm2d(e), torch.nn.ReLU6(),
            torch.nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), torch.nn.BatchNorm2d(e), torch.nn.ReLU6(),
            torch.nn.Conv2d(e, c, 1, bias=False), torch.nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.f(x)


def _deep_net(seed=0):
    """A stem, four residual blocks and a pooled linear head; BN running statistics estimated on
    smooth noise (the inputs the test measures on), so the data-free assumptions hold."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 12, 3, padding=1, bias=False), torch.nn.BatchNorm2d(12), torch.nn.ReLU(),
        _Block(12, 32), _Block(12, 32),
        torch.nn.Conv2d(12, 24, 3, stride=2, padding=1, bias=False), torch.nn.BatchNorm2d(24), torch.nn.ReLU(),
        _Block(24, 48), _Block(24, 48),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 10))
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    m.train()
    with torch.no_grad():
        for s in range(4):
            m(torch.from_numpy(_noise(64, 100 + s)))
    return m.eval()


def test_ridge_fit_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6))
    w = rng.standard_normal((6, 3))
    b = rng.standard_normal(3)
    m, bb = ridge_fit(x, x @ w + b, np.zeros((6, 3)), np.zeros(3), 1e-9)
    assert np.allclose(m, w, atol=1e-6) and np.allclose(bb, b, atol=1e-6)
    # a strong ridge pulls towards the prior instead
    m2, _ = ridge_fit(x, x @ w + b, w + 1.0, np.zeros(3), 1e6)
    assert np.abs(m2 - (w + 1.0)).max() < 1e-3


def test_im2col_matches_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1).numpy()
    cols = im2col(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    out = (cols @ w.reshape(5, -1).T).reshape(2, ref.shape[2], ref.shape[3], 5).transpose(0, 3, 1, 2)
    assert np.allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_sequential_fit_reduces_the_output_error(tmp_path, scope):
    model = _export(_deep_net(), tmp_path / "deep.onnx")
    x = _noise(128, 7)  # held-out samples, not the ones the fit saw
    ref = _run(model, x)
    p_obs, _ = prune(model, flops_target=0.5, criterion="obspa", scope=scope)
    p_seq, rep = prune(model, flops_target=0.5, criterion="obspa-seq", scope=scope)
    onnx.checker.check_model(p_seq, full_check=True)
    out_seq = _run(p_seq, x)
    assert out_seq.shape == ref.shape and np.isfinite(out_seq).all()
    # the same channels are removed: only the weights differ
    assert rep.flops_after == prune(model, flops_target=0.5, criterion="obspa", scope=scope)[1].flops_after
    err_obs = float(np.mean((_run(p_obs, x) - ref) ** 2))
    err_seq = float(np.mean((out_seq - ref) ** 2))
    assert err_seq < 0.7 * err_obs, (err_seq, err_obs)
    assert any(s.startswith("obspa-seq:") and "refitted" in s for s in rep.notes)
    assert not any(w.startswith("obspa-seq") for w in rep.warnings)


def test_model_without_bn_falls_back_with_a_warning(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 1))
    model = _export(m, tmp_path / "nobn.onnx", keep_bn=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p_seq, rep = prune(model, ratio=0.25, criterion="obspa-seq")
    p_obs, _ = prune(model, ratio=0.25, criterion="obspa")
    assert any("obspa-seq" in w and "plain obspa" in w for w in rep.warnings)
    assert any("obspa-seq" in str(c.message) for c in caught)
    x = _noise(16, 3)
    # the fallback is exactly plain obspa
    assert np.allclose(_run(p_seq, x), _run(p_obs, x), atol=1e-6)
