"""Map a graph-level decision back to the nn.Module; fine-tune on digits and recover accuracy.

The reference for every mapping is the pruned ONNX model itself: the smaller module must compute
what ONNX Runtime computes on the pruned graph, whichever exporter wrote the graph (TorchScript with
BatchNorm kept or folded, dynamo with BatchNorm folded and Linear weights stored transposed under
generated names).
"""

from __future__ import annotations

import copy
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _randomize_norms(m, seed: int) -> None:
    """Non-trivial BN / LayerNorm parameters, so folding BN is not a near-identity and
    de-duplicated initializers (all-ones weights) are not the only case exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=g) * 0.4 - 0.2)
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)


def _ort(model, x):
    from edgekit.runtime.verify import run

    return run(model, {model.graph.input[0].name: x.numpy()})[0]


def _check_result(res, original, x):
    """Properties every mapped result must have."""
    # 1. the smaller module computes what ONNX Runtime computes on the pruned graph
    with torch.no_grad():
        got = res.module(x).numpy()
    ref = _ort(res.onnx_model, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    # 2. the state_dict has pruned shapes and loads (strictly) into a fresh copy of the module
    fresh = copy.deepcopy(res.module)
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    fresh.load_state_dict(res.state_dict)
    with torch.no_grad():
        np.testing.assert_allclose(fresh(x).numpy(), got, rtol=1e-6, atol=1e-6)
    big = original.state_dict()
    smaller = [k for k, v in res.state_dict.items() if k in big and v.numel() < big[k].numel()]
    assert set(smaller) == set(res.mapped) & set(big)
    assert sum(p.numel() for p in res.module.parameters()) < 0.9 * sum(p.numel() for p in original.parameters())
    # 3. layer size attributes follow the tensors
    for name, mod in res.module.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            assert mod.out_channels == mod.weight.shape[0], name
            assert mod.in_channels == mod.weight.shape[1] * mod.groups, name
        elif isinstance(mod, torch.nn.Linear):
            assert (mod.out_features, mod.in_features) == tuple(mod.weight.shape), name
        elif isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            assert mod.num_features == mod.running_mean.shape[0] == mod.weight.shape[0], name
        elif hasattr(mod, "heads") and hasattr(mod, "q"):
            assert mod.heads * mod.head_dim == mod.q.out_features == mod.proj.in_features, name


# dynamo exports cost seconds each: one per model; TorchScript (folded, as `edgekit export` writes it)
# for every model, the TorchScript export with BatchNorm kept ("legacy") for the CNNs
CASES = [("resnet18", "dynamo"), ("resnet18", "torchscript"), ("resnet18", "legacy"),
         ("mobilenetv2", "dynamo"), ("mobilenetv2", "torchscript"),
         ("vit-tiny", "dynamo"), ("vit-tiny", "torchscript")]


@pytest.mark.parametrize("name,exporter", CASES)
def test_pruned_module_matches_pruned_onnx(name, exporter):
    from edgekit.models import create
    from edgekit.prune.torch import prune_module

    seed = zlib.crc32(f"{name}-{exporter}".encode())
    rng = np.random.default_rng(seed)
    ratio = float(rng.uniform(0.2, 0.6))
    torch.manual_seed(seed % 2**31)
    kw = {"image_size": 32} if name.startswith("vit") else {}
    m = create(name, num_classes=10, **kw).eval()
    _randomize_norms(m, seed)
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = prune_module(m, x, exporter=exporter, ratio=ratio)
    _check_result(res, m, x)
    assert res.report.flops_ratio < 0.95
    # the original module is untouched
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    if name == "vit-tiny":  # default --attention heads: whole heads go (uniform: floor(3 r)), head_dim stays
        attn = res.module.blocks[0].attn
        assert attn.head_dim == 64 and attn.heads == 3 - int(np.floor(3 * ratio + 1e-9))


def test_vit_head_dims_and_layernorm_width_map_back():
    """--attention head-dims plus --prune-layernorm: the residual width (LayerNorm, pos_embed,
    cls_token, patch embedding) and the per-head dims shrink in the module too."""
    from edgekit.models import create
    from edgekit.prune.torch import prune_module

    torch.manual_seed(3)
    m = create("vit-tiny", num_classes=10, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    res = prune_module(m, x, exporter="torchscript", ratio=0.3, attention="head-dims", allow_norm_approx=True)
    _check_result(res, m, x)
    small = res.module
    width = small.patch_embed.out_channels
    assert width < 192
    assert small.pos_embed.shape[-1] == small.cls_token.shape[-1] == small.norm.normalized_shape[0] == width
    attn = small.blocks[0].attn
    assert attn.heads == 3 and attn.head_dim < 64
    # whole heads at a ratio that removes none (floor(3 * 0.3) = 0) while the width shrinks: the
    # output projection's cut rows are the residual width, not heads
    res = prune_module(m, x, exporter="torchscript", ratio=0.3, attention="heads", allow_norm_approx=True)
    _check_result(res, m, x)
    attn = res.module.blocks[0].attn
    assert res.module.patch_embed.out_channels < 192 and (attn.heads, attn.head_dim) == (3, 64)


class _FusedAttn(torch.nn.Module):
    """timm-style attention: one fused qkv Linear, ``num_heads`` / ``head_dim`` attributes."""

    def __init__(self, dim=32, num_heads=4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv, self.proj = torch.nn.Linear(dim, dim * 3), torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class _TinyTransformer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.attn = torch.nn.Linear(8, 32), _FusedAttn()
        self.fc1, self.fc2, self.head = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32), torch.nn.Linear(32, 3)

    def forward(self, x):
        x = self.emb(x)
        x = x + self.attn(x)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(1))


@pytest.mark.parametrize("attention,heads,head_dim", [("heads", 2, 8), ("head-dims", 4, 4)])
def test_fused_qkv_attention_maps_back(attention, heads, head_dim):
    from edgekit.prune.torch import prune_module

    torch.manual_seed(0)
    m = _TinyTransformer().eval()
    x = torch.randn(2, 5, 8)
    res = prune_module(m, x, exporter="torchscript", ratio=0.5, attention=attention)
    _check_result(res, m, x)
    attn = res.module.attn
    assert (attn.num_heads, attn.head_dim) == (heads, head_dim)
    assert attn.qkv.out_features == 3 * heads * head_dim == 3 * attn.proj.in_features


def test_criterion_weight_updates_map_back():
    """OBSPA changes kept weights and adds biases: the module gets the same compensated weights
    (the added biases land in the next BatchNorm's running mean, no new parameters)."""
    from torch import nn

    from edgekit.prune.torch import prune_module

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
            self.c2, self.b2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
            self.c3, self.b3 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.b2(self.c2(y)) + y)
            y = torch.relu(self.b3(self.c3(y)))
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    m = Net().eval()
    _randomize_norms(m, 1)
    x = torch.randn(2, 3, 12, 12)
    for exporter in ("legacy", "torchscript"):
        res = prune_module(m, x, exporter=exporter, ratio=0.4, criterion="obspa")
        assert res.report.updates or res.report.new_biases
        _check_result(res, m, x)
        assert set(res.state_dict) == set(m.state_dict())


class _Mixed(torch.nn.Module):
    """Grouped conv, ConvTranspose + BN, GroupNorm (decomposed by the exporters into
    InstanceNormalization over groups + a [C, 1, 1] affine), Linear + BatchNorm1d."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32)
        self.up, self.b3 = nn.ConvTranspose2d(32, 16, 2, stride=2), nn.BatchNorm2d(16)
        self.gn = nn.GroupNorm(4, 16)
        self.c4 = nn.Conv2d(16, 24, 1)
        self.fc1, self.bn1d = nn.Linear(24, 40), nn.BatchNorm1d(40)
        self.fc2 = nn.Linear(40, 5)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)))
        y = torch.relu(self.b3(self.up(y)))
        y = torch.relu(self.c4(self.gn(y)))
        return self.fc2(torch.relu(self.bn1d(self.fc1(y.mean((2, 3))))))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_mixed_layers_map_back(exporter):
    from edgekit.prune.torch import prune_module

    torch.manual_seed(0)
    m = _Mixed().eval()
    _randomize_norms(m, 4)
    x = torch.randn(2, 3, 8, 8)
    res = prune_module(m, x, exporter=exporter, ratio=0.5)
    _check_result(res, m, x)
    small = res.module
    assert small.gn.num_groups == 2 and small.gn.num_channels == 8   # whole groups go
    assert small.bn1d.num_features == small.fc1.out_features == 20
    assert small.b3.num_features == small.up.out_channels < 16


def test_unmappable_tensor_raises_typed_error_naming_it():
    from torch import nn

    from edgekit.errors import ParityError, TorchMappingError, UnsupportedError
    from edgekit.prune.torch import prune_module

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):  # a per-channel constant made in forward(): no parameter holds it
            return self.c2(torch.relu(self.c1(x)) * torch.linspace(0.5, 1.5, 16).view(1, 16, 1, 1))

    m = Scaled().eval()
    with pytest.raises(TorchMappingError) as ei:
        prune_module(m, torch.randn(1, 3, 8, 8), exporter="legacy", ratio=0.5)
    assert isinstance(ei.value, UnsupportedError)
    assert "1x16x1x1" in str(ei.value) and ei.value.tensors and ei.value.hint

    class Doubled(Scaled):
        def forward(self, x):  # one repeated value: taken for an exporter constant, then caught by the check
            return self.c2(torch.relu(self.c1(x)) * torch.full((1, 16, 1, 1), 2.0))

    with pytest.raises(ParityError, match="does not run"):
        prune_module(Doubled().eval(), torch.randn(1, 3, 8, 8), exporter="legacy", ratio=0.5)


def test_given_onnx_model_and_bad_exporter():
    from edgekit.errors import InputError
    from edgekit.exporting import EXPORTERS
    from edgekit.models import digits
    from edgekit.prune.torch import prune_module

    torch.manual_seed(0)
    m = digits.build("vgg").eval()
    _randomize_norms(m, 2)
    x = torch.randn(2, 1, 16, 16)
    onnx_model = EXPORTERS["torchscript"](m, [x], None, 17, ["input"], ["output"], False)
    res = prune_module(m, x, onnx_model=onnx_model, ratio=0.5, criterion="bn-scale")
    _check_result(res, m, x)
    with pytest.raises(InputError):
        prune_module(m, x, exporter="nope", ratio=0.5)


def test_digits_prune_half_flops_finetune_recovers():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import prune_finetune_digits as ex

    r = ex.run(arch="vgg", flops_target=0.5, epochs=3)
    assert r["flops_ratio"] <= 0.55
    assert r["accuracy_pruned_no_finetune"] < r["accuracy_original"]
    assert r["accuracy_finetuned"] >= r["accuracy_original"] - 0.03, r
    assert abs(r["accuracy_finetuned_onnx"] - r["accuracy_finetuned"]) < 0.01


def test_digits_vit_prune_half_flops_finetune_recovers():
    """The same on the digits ViT, exported as `edgekit export --exporter torchscript` writes it
    (constants folded, Linear weights stored transposed under generated names): the same dims go
    from every head, the module's head_dim follows, fine-tuning recovers."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import prune_finetune_digits as ex

    r = ex.run(arch="vit", flops_target=0.5, epochs=5, exporter="torchscript", attention="head-dims")
    assert r["flops_ratio"] <= 0.55
    assert r["accuracy_pruned_no_finetune"] < r["accuracy_original"] - 0.05
    assert r["accuracy_finetuned"] >= r["accuracy_original"] - 0.05, r
    assert abs(r["accuracy_finetuned_onnx"] - r["accuracy_finetuned"]) < 0.01
