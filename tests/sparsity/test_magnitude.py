"""Global magnitude pruning: one threshold across layers, a per-layer cap, the cubic schedule, and
masks that survive optimizer steps (plain re-masking and progressive gradient flow)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import InputError

torch = pytest.importorskip("torch")
nn = torch.nn

from edgekit.sparsity import (  # noqa: E402
    GradualMagnitudePruner,
    ProgressiveNMTrainer,
    check_nm,
    cubic_sparsity,
    global_magnitude_masks,
    global_magnitude_prune,
)


def _model(scales=(1.0, 0.01, 1.0)):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        for layer, s in zip([m[0], m[2], m[5]], scales):
            layer.weight.mul_(s / layer.weight.abs().mean())
    return m


def _all_weights(m):
    return np.concatenate([mod.weight.detach().abs().numpy().ravel()
                           for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))])


def test_one_threshold_across_layers_without_cap():
    m = _model()
    mags = _all_weights(m)
    masks, report = global_magnitude_masks(m, 0.5, max_layer_sparsity=1.0)
    pruned = np.concatenate([(~masks[k].numpy()).ravel() for k in ("0", "2", "5")])
    assert pruned.sum() == round(0.5 * mags.size)
    # one global threshold: every pruned magnitude <= every kept magnitude
    assert mags[pruned].max() <= mags[~pruned].min()
    # the small-scale layer takes most of the pruning (this is what makes it "global")
    frac = {layer.name: layer.zero_fraction for layer in report.layers}
    assert frac["2"] > 0.6 and frac["0"] < 0.2


def test_per_layer_cap_keeps_layer_alive_and_respreads_budget():
    m = _model()
    masks, report = global_magnitude_masks(m, 0.5, max_layer_sparsity=0.6)
    sizes = {k: masks[k].numel() for k in masks}
    frac = {k: 1 - masks[k].float().mean().item() for k in masks}
    assert frac["2"] <= 0.6 + 1e-9 and frac["2"] >= 0.6 - 1.0 / sizes["2"]   # pinned at the cap
    assert frac["0"] > 0.1                                                    # the rest went elsewhere
    assert report.layer("2").reason == "capped"
    total = sum(sizes.values())
    assert sum(frac[k] * sizes[k] for k in masks) == pytest.approx(round(0.5 * total), abs=0.5)
    # the rest is pruned with one common threshold over the uncapped layers
    mags = {k: mod.weight.detach().abs().numpy() for k, mod in [("0", m[0]), ("5", m[5])]}
    pruned = np.concatenate([mags[k][~masks[k].numpy()] for k in mags])
    kept = np.concatenate([mags[k][masks[k].numpy()] for k in mags])
    assert pruned.max() <= kept.min()


def test_global_prune_zeroes_weights_and_bad_requests_raise():
    m = _model()
    ms, _ = global_magnitude_prune(m, 0.4, 0.8)
    zeros = sum(int((mod.weight == 0).sum()) for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    total = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    assert zeros == round(0.4 * total)
    assert ms.sparsity() == pytest.approx(0.4, abs=1e-3)
    with pytest.raises(InputError):
        global_magnitude_masks(m, 0.9, max_layer_sparsity=0.5)
    with pytest.raises(InputError):
        global_magnitude_masks(m, 1.2)


def test_cubic_schedule_shape():
    vals = [cubic_sparsity(t, 0.8, begin=10, end=110) for t in range(0, 130)]
    assert vals[0] == 0.0 and vals[10] == 0.0 and vals[110] == pytest.approx(0.8) and vals[-1] == 0.8
    assert all(b >= a for a, b in zip(vals, vals[1:]))               # monotone
    steps = np.diff(vals[10:111])
    assert steps[0] > steps[50] > steps[-1]                          # fast early, slow late
    assert cubic_sparsity(60, 0.8, 10, 110) == pytest.approx(0.8 * (1 - 0.5 ** 3))


def _train(model, steps, hook, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    torch.manual_seed(1)
    x = torch.randn(16, 4, 5, 5)
    y = torch.randint(0, 4, (16,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        hook(model)


def test_gradual_pruner_reaches_target_and_masks_only_grow():
    m = _model()
    pruner = GradualMagnitudePruner(0.6, end=20, begin=0, every=5, max_layer_sparsity=0.9)
    seen = []
    orig = pruner.__call__

    def hook(model):
        orig(model)
        seen.append({k: v.clone() for k, v in pruner.masks.masks.items()} if pruner.masks else None)

    _train(m, 25, hook)
    assert [t for _, t in pruner.history][-1] == pytest.approx(0.6)
    assert pruner.masks.sparsity() == pytest.approx(0.6, abs=1e-3)
    masks = [s for s in seen if s is not None]
    for a, b in zip(masks, masks[1:]):
        for k in a:
            assert not (b[k] & ~a[k]).any()          # a pruned weight never comes back
    for k, keep in pruner.masks.masks.items():
        assert (dict(m.named_modules())[k].weight[~keep] == 0).all()


def test_maskset_hook_keeps_masks_through_momentum_training():
    from edgekit.sparsity import apply_nm

    m = _model()
    ms, _ = apply_nm(m)
    _train(m, 10, ms)
    assert check_nm(m).compliant
    # without the hook, momentum + weight decay refill the pruned weights
    m2 = _model()
    apply_nm(m2)
    _train(m2, 10, lambda model: None)
    assert not check_nm(m2).compliant


def test_progressive_gradient_flow_decays_and_ends_compliant():
    m = _model()
    steps = 12
    pgf = ProgressiveNMTrainer(m, total_steps=steps, decay="linear")
    assert pgf.alpha() == pytest.approx(1.0)
    # gradient on a pruned position is alpha times the dense gradient
    x = torch.randn(2, 4, 5, 5)
    m.zero_grad()
    m(x).sum().backward()
    dense = m[2].parametrizations.weight.original
    keep = pgf._params["2"].keep.bool()
    g_alpha1 = dense.grad.clone()
    pgf.step = steps // 2                       # alpha = 0.5
    m.zero_grad()
    m(x).sum().backward()
    np.testing.assert_allclose(dense.grad[~keep].numpy(), 0.5 * g_alpha1[~keep].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense.grad[keep].numpy(), g_alpha1[keep].numpy(), rtol=1e-4, atol=1e-6)
    pgf.step = 0
    _train(m, steps, pgf)
    assert pgf.alpha() == pytest.approx(0.0)
    masks, _ = pgf.finalize()
    assert not hasattr(m[2], "parametrizations")
    rep = check_nm(m)
    assert rep.compliant and {layer.name for layer in rep.ok} == {"0", "2", "5"}
