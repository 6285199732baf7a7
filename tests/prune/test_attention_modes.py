"""Multi-head attention: whole heads vs head dims; LayerNorm over channels (opt-in, approximate)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.prune import patterns as P
from tests.prune.helpers import export, random_keeps


def _mask_equivalent(model, attention, seed=0, feeds=None):
    """Random decisions in the given mode: pruned == original with removed channels zeroed."""
    from edgekit.runtime.verify import assert_close, check, random_feeds, run, zero_channels
    from edgekit.prune import analyze
    from edgekit.prune.apply import activation_masks, apply

    dg = analyze(model, attention=attention)
    keeps = random_keeps(dg, seed)
    pruned = apply(dg, keeps)
    feeds = feeds or random_feeds(model, seed)
    got = check(pruned, feeds)
    # tensors whose rank ONNX inference cannot give (behind a Reshape target computed at run time)
    # are left unmasked: the tensor they are computed from is masked already
    ranked = _shapes(model)
    masks = {k: v for k, v in activation_masks(dg, keeps).items() if k in ranked}
    ref = run(zero_channels(model, masks), feeds)
    assert_close(got, ref, rtol=1e-4, atol=1e-4, what=f"{attention}: pruned vs zeroed original")
    return dg, keeps, pruned


def _shapes(model):
    from edgekit.graph.shapes import infer_shapes

    return infer_shapes(model)


def _group_with(dg, tensor):
    for g in dg.groups:
        if any(m.tensor == tensor for m in g.members):
            return g
    raise AssertionError(f"{tensor} is in no prunable group:\n{dg.details()}")


@pytest.mark.parametrize("attention", ["heads", "head-dims"])
def test_matmul_attention_pattern_modes(attention):
    heads, dim, tokens = 4, 32, 8
    hd = dim // heads
    pat = P.multi_head_attention(heads=heads, dim=dim, tokens=tokens)
    dg, keeps, pruned = _mask_equivalent(pat.model, attention, seed=5)
    wq, wk, wv = pat.must_shrink
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    shapes = _shapes(pruned)
    g = _group_with(dg, wq)
    kept = int(keeps[g.id].sum())
    assert kept < g.size
    if attention == "heads":
        # one group: Q, K, V and the output projection, one decision per head
        assert g.size == heads
        assert _group_with(dg, wv) is g and _group_with(dg, wk) is g
        for w in (wq, wk, wv):
            assert inits[w].shape == (dim, kept * hd)
        # the Reshape to heads now names the kept head count; head size unchanged
        split = [s for s in shapes.values() if len(s) == 4 and s[-1] == hd and s[1] == tokens]
        assert split and all(s[2] == kept for s in split)
    else:
        assert g.size == hd and _group_with(dg, wk) is g
        assert inits[wq].shape == (dim, heads * kept)
        split = [s for s in shapes.values() if len(s) == 4 and s[2] == heads and s[1] == tokens]
        assert split and all(s[3] in (kept, int(keeps[_group_with(dg, wv).id].sum())) for s in split)


def _vit(dynamo):
    import torch

    from edgekit.models import create

    torch.manual_seed(0)
    m = create("vit-tiny", num_classes=10, image_size=32).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m, export(m, (1, 3, 32, 32), dynamo=dynamo)


@pytest.mark.parametrize("dynamo", [False, True])
def test_vit_whole_heads_equal_module_with_heads_removed(dynamo):
    """Independent reference: in PyTorch, zero the removed heads' V rows (weight and bias) and the
    output projection's columns for those heads; that removes each head's contribution exactly."""
    import torch

    from edgekit.runtime.verify import check
    from edgekit.prune import analyze
    from edgekit.prune.apply import apply

    module, model = _vit(dynamo)
    dg = analyze(model, attention="heads")
    rng = np.random.default_rng(7)
    keeps = {g.id: np.ones(g.size, dtype=bool) for g in dg.groups}
    attn = module.blocks[0].attn
    hd, nh = attn.head_dim, attn.heads
    removed = {}
    for i, blk in enumerate(module.blocks):
        g = _group_with(dg, f"blocks.{i}.attn.v.bias")
        assert g.size == nh, g.details()
        k = np.ones(nh, dtype=bool)
        k[rng.choice(nh, size=int(rng.integers(1, nh)), replace=False)] = False
        keeps[g.id] = k
        m = next(m for m in g.members if m.tensor == f"blocks.{i}.attn.v.bias")
        pos_keep = k[m.index]  # per V feature: kept?
        removed[i] = np.nonzero(~pos_keep)[0]
    pruned = apply(dg, keeps)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = check(pruned, {model.graph.input[0].name: x})[0]
    with torch.no_grad():
        for i, blk in enumerate(module.blocks):
            cols = torch.as_tensor(removed[i])
            assert len(cols) % hd == 0 and 0 < len(cols) < nh * hd
            blk.attn.v.weight[cols, :] = 0
            blk.attn.v.bias[cols] = 0
            blk.attn.proj.weight[:, cols] = 0
        ref = module(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # the V projection lost whole heads
    vb = {t.name: t for t in pruned.graph.initializer}.get("blocks.0.attn.v.bias")
    if vb is not None:
        assert vb.dims[0] == nh * hd - len(removed[0])


def test_vit_head_dims_mode_both_exporters_mask_equivalent():
    for dynamo in (False, True):
        _, model = _vit(dynamo)
        dg, keeps, _ = _mask_equivalent(model, "head-dims", seed=2)
        assert any(g.size == 64 for g in dg.groups)  # head dims of ViT-Ti (dim 192, 3 heads)


def test_unknown_attention_mode_is_refused():
    from edgekit.errors import InputError
    from edgekit.prune import prune

    with pytest.raises(InputError, match="attention"):
        prune(P.multi_head_attention().model, ratio=0.5, attention="rows")


# ---- LayerNorm over channels (opt-in) ---------------------------------------------------------

def _ln_mlp(d=16, hidden=24, tokens=5):
    rng = np.random.default_rng(3)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["a1"], name="add1"),
             helper.make_node("LayerNormalization", ["a1", "gamma", "beta"], ["n1"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["n1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu"),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3")]
    inits = [init("w1", 8, d), init("b1", d), init("gamma", d), init("beta", d), init("w2", d, hidden),
             init("w3", hidden, 4)]
    g = helper.make_graph(nodes, "ln_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_layernorm_over_channels_refused_by_default():
    from edgekit.prune import analyze, prune

    model = _ln_mlp()
    dg = analyze(model)
    assert any("LayerNormalization" in (g.reason or "") for g in dg.skipped)
    pruned, rep = prune(model, ratio=0.5)
    w1 = {t.name: t for t in pruned.graph.initializer}["w1"]
    assert list(w1.dims) == [8, 16]
    assert not any("approximate" in g for g in rep.groups)


def test_layernorm_opt_in_prunes_and_marks_group_approximate():
    from edgekit.runtime.verify import check, random_feeds, run
    from edgekit.prune import prune

    model = _ln_mlp()
    before = model.SerializeToString()
    pruned, rep = prune(model, ratio=0.5, allow_norm_approx=True)
    assert model.SerializeToString() == before
    feeds = random_feeds(model)
    out = check(pruned, feeds)  # checker, full shape inference, ONNX Runtime
    assert out[0].shape == run(model, feeds)[0].shape
    inits = {t.name: t for t in pruned.graph.initializer}
    assert list(inits["gamma"].dims) == [8] and list(inits["beta"].dims) == [8] and list(inits["w1"].dims) == [8, 8]
    by_src = {tuple(g["sources"]): g for g in rep.groups}
    ln_groups = [g for g in rep.groups if "fc1" in g["sources"]]
    assert ln_groups and all(g["approximate"] == "approximate: LayerNorm statistics change" for g in ln_groups)
    # the MLP hidden group does not pass through the LayerNorm: mask-equivalent, not marked
    hid = [g for s, g in by_src.items() if "fc2" in s]
    assert hid and all("approximate" not in g for g in hid)
    assert any("approximate" in n for n in rep.notes)


def test_vit_prune_layernorm_shrinks_residual_stream_and_stays_valid():
    from edgekit.runtime.verify import check, random_feeds
    from edgekit.prune import prune

    _, model = _vit(False)
    base, _ = prune(model, ratio=0.5)
    pruned, rep = prune(model, ratio=0.5, allow_norm_approx=True)
    check(pruned, random_feeds(model))
    assert rep.flops_after < 0.8 * _flops(base)
    approx = [g for g in rep.groups if g.get("approximate")]
    assert len(approx) == 1 and approx[0]["channels_before"] == 192 and approx[0]["channels_after"] == 96


def _flops(model):
    from edgekit.graph.flops import count_flops

    return count_flops(model)


def test_cli_attention_and_prune_layernorm_flags(cli, tmp_path):
    import json

    src = tmp_path / "ln.onnx"
    onnx.save(_ln_mlp(), str(src))
    out = tmp_path / "out.onnx"
    r = cli(["prune", src, "-o", out, "--ratio", "0.5", "--prune-layernorm", "--attention", "head-dims",
             "--json", "-"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert any(g.get("approximate") for g in d["groups"])
    r = cli(["prune", src, "-o", tmp_path / "o2.onnx", "--ratio", "0.5", "--prune-layernorm", "--explain"])
    assert r.exit_code == 0 and "approximate: LayerNorm statistics change (pruned, but not mask-equivalent)" in r.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    bad = tmp_path / "bad.onnx"
    r = cli(["prune", src, "-o", bad, "--ratio", "0.5", "--attention", "rows"])
    assert r.exit_code != 0 and "attention" in r.output and not bad.exists()


def _fused_qkv_module():
    import torch
    from torch import nn

    class FusedQKV(nn.Module):
        """One Linear for Q, K and V, reshaped to [B, N, 3, heads, head dim] (timm / Swin style),
        with a per-head constant bias on the attention scores."""

        def __init__(self, dim=24, heads=3, tokens=6):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.bias = nn.Parameter(torch.randn(heads, tokens, tokens) * 0.5)
            self.out = nn.Linear(dim, 5)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            a = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5 + self.bias
            y = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
            return self.out(torch.relu(self.proj(y)))

    torch.manual_seed(0)
    return FusedQKV().eval()


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("attention", ["heads", "head-dims"])
def test_fused_qkv_attention_modes(attention, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = export(_fused_qkv_module(), (1, 6, 24), dynamo=dynamo)
    dg, keeps, pruned = _mask_equivalent(model, attention, seed=4)
    # the group of the fused projection: its bias is the only 1-D tensor of 3 * 24 values
    g = next(g for g in dg.groups if any(m.array.shape == (72,) for m in g.members))
    assert g.size == (3 if attention == "heads" else 8), g.details()
    kept = int(keeps[g.id].sum())
    # Q, K and V lose the same heads / head dims: the fused projection keeps 3 * 8 * kept or 3 * 3 * kept
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    sizes = {a.shape[0] for a in inits.values() if a.ndim == 1}
    assert 3 * (8 if attention == "heads" else 3) * kept in sizes


def _dims(model):
    """Shapes of the layernorm_mlp weights: Dense weights in order, gamma, beta."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    w = [inits[k] for k in sorted((k for k in inits if k.startswith("mm_w_")), key=lambda k: int(k.split("_")[2]))]
    one = {p: next(v for k, v in inits.items() if k.startswith(p)) for p in ("gamma_", "beta_")}
    return w, one["gamma_"], one["beta_"]


@pytest.mark.parametrize("form", ["Pow", "Mul"])
def test_decomposed_layernorm_refused_by_default_with_the_layernorm_reason(form):
    from tests.prune.helpers import check_mask_equivalence

    from edgekit.prune import analyze, prune

    pat = P.layernorm_mlp(form)
    dg = analyze(pat.model)
    ln = [g for g in dg.skipped if "mm_w_1" in {m.tensor for m in g.members}]
    assert ln and "LayerNormalization (decomposed" in ln[0].reason and "--prune-layernorm" in ln[0].reason
    pruned, _ = prune(pat.model, ratio=0.5)
    w, gamma, _ = _dims(pruned)
    assert w[0] == [24, 32] and gamma == [32]
    assert w[1] == [32, 24] and w[2] == [24, 10]  # the hidden width still prunes
    check_mask_equivalence(pat.model, seed=2)  # random decisions on what is prunable


@pytest.mark.parametrize("form", ["Pow", "Mul"])
def test_decomposed_layernorm_opt_in_matches_fused_layernorm(form):
    """Under --prune-layernorm the ops form is pruned exactly like LayerNormalization: same groups
    (marked approximate), same kept channels, same outputs (statistics over the kept channels)."""
    from edgekit.runtime.verify import assert_close, check, random_feeds
    from edgekit.prune import prune

    ops, fused = P.layernorm_mlp(form), P.layernorm_mlp("fused")
    got, rep = prune(ops.model, ratio=0.5, allow_norm_approx=True)
    ref, rep_ref = prune(fused.model, ratio=0.5, allow_norm_approx=True)
    ln = [g for g in rep.groups if "approximate" in g]
    assert len(ln) == 1 and ln[0]["approximate"] == "approximate: LayerNorm statistics change"
    assert ln[0]["channels_after"] == 16 < ln[0]["channels_before"] == 32
    assert [(g["channels_before"], g["channels_after"]) for g in rep.groups] == \
        [(g["channels_before"], g["channels_after"]) for g in rep_ref.groups]
    w, gamma, beta = _dims(got)
    assert w[0] == [24, 16] and gamma == [16] and beta == [16] and w[1][0] == 16
    feeds = random_feeds(ops.model)
    assert_close(check(got, feeds), check(ref, feeds), rtol=1e-4, atol=1e-5, what="ops vs fused LayerNorm")


def _mha_model(exporter):
    """Linear -> nn.MultiheadAttention (4 heads of 8, fused in_proj) -> Linear, as each exporter writes
    it: TorchScript computes the q/k/v unflatten target and the head scale from Shape at run time and
    merges the batch into the heads axis; "dynamic" adds a symbolic batch."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Linear(16, 32)
            self.attn = torch.nn.MultiheadAttention(32, 4)
            self.out = torch.nn.Linear(32, 8)

        def forward(self, x):  # x: (L, N, 16)
            h = self.inp(x)
            return self.out(self.attn(h, h, h, need_weights=False)[0])

    torch.manual_seed(0)
    m = Block().eval()
    x = torch.randn(6, 2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            return torch.onnx.export(m, (x,), dynamo=True, verbose=False).model_proto
        import io

        f = io.BytesIO()
        dyn = {"x": {1: "batch"}} if exporter == "dynamic" else None
        torch.onnx.export(m, (x,), f, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes=dyn)
        return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo", "dynamic"])
@pytest.mark.parametrize("attention", ["heads", "head-dims"])
def test_multihead_attention_module_prunes(exporter, attention):
    """nn.MultiheadAttention: q, k, v of the fused in_proj and out_proj's columns form one group of
    whole heads (or head dims); the pruned model equals the original with those channels zeroed, and
    passes the checker, strict shape inference and ORT; a symbolic batch stays symbolic."""
    from edgekit.runtime.verify import check, random_feeds, run

    model = _mha_model(exporter)
    # batch 1 for the zeroed reference: its masks on the heads axis merged with the batch are per head
    x1 = np.random.default_rng(1).standard_normal((6, 1, 16)).astype(np.float32) if exporter == "dynamic" else None
    dg, keeps, pruned = _mask_equivalent(model, attention, seed=1, feeds=None if x1 is None else {"x": x1})
    in_proj = [g for g in dg.groups if any(m.tensor == "attn.in_proj_bias" for m in g.members)]
    assert len(in_proj) == 1, dg.details()
    g = in_proj[0]
    assert g.size == (4 if attention == "heads" else 8)
    assert any(m.tensor == "attn.out_proj.weight" and m.role == "in" for m in g.members)
    keeps[g.id][:] = True
    keeps[g.id][[0, 2]] = False  # two heads, or two dims of every head
    from edgekit.prune.apply import apply

    pruned = apply(dg, keeps)
    kept = 2 * 8 if attention == "heads" else 4 * 6  # per chunk: 2 heads of 8 dims, or 4 heads of 6
    bias = {t.name: list(t.dims) for t in pruned.graph.initializer}["attn.in_proj_bias"]
    assert bias == [3 * kept]
    if exporter == "dynamic":  # the batch axis is still symbolic: another batch size runs
        assert not pruned.graph.input[0].type.tensor_type.shape.dim[1].HasField("dim_value")
        feeds = {"x": np.random.default_rng(0).standard_normal((6, 3, 16)).astype(np.float32)}
        out = check(pruned, feeds)
        assert out[0].shape == (6, 3, 8) == run(model, feeds)[0].shape
    else:
        check(pruned, random_feeds(model))


def test_flops_of_a_sequence_first_symbolic_batch_are_counted_per_sample():
    """(L, N, E) input with a symbolic N: FLOPs are counted at N = 1, like the same model exported
    with batch 1 (and not with the batch axis taken as axis 0)."""
    from edgekit.prune import prune

    dyn, static = _mha_model("dynamic"), _mha_model("torchscript")  # static export has N = 2
    _, rd = prune(dyn, ratio=0.0)
    _, rs = prune(static, ratio=0.0)
    assert rd.flops_before > 0
    assert rd.flops_before * 2 == pytest.approx(rs.flops_before, rel=0.05)
