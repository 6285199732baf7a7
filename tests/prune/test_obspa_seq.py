"""obspa-seq: sequential data-free reconstruction on top of obspa (tiny generated models)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from edgekit.prune import obspa, prune  # noqa: E402
from tests.prune.helpers import export_bn, run_any_batch  # noqa: E402
from edgekit.prune.obspa import measure, synthetic  # noqa: E402
from edgekit.prune.obspa.seq import Segments, im2col, ridge_fit  # noqa: E402


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


@pytest.mark.parametrize("rows", [400, 5])
def test_ridge_fit_primal_and_dual_give_the_ridge_solution(rows):
    """More rows than unknowns (primal d x d system) and fewer (dual rows x rows system): both
    equal the normal-equations solution of the ridge problem towards the prior, computed here
    directly in float64 (bias free = fit on centred data)."""
    rng = np.random.default_rng(rows)
    d, o = 12, 4
    x = rng.standard_normal((rows, d)) + 0.5
    t = rng.standard_normal((rows, o))
    w0 = rng.standard_normal((d, o))
    for b0 in (np.zeros(o), None):
        m, bb = ridge_fit(x, t, w0, b0, 0.05)
        xc, tc = (x - x.mean(0), t - t.mean(0)) if b0 is not None else (x, t)
        lam = 0.05 * np.trace(xc.T @ xc) / d
        ref = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ tc + lam * w0)
        assert np.allclose(m, ref, rtol=1e-4, atol=1e-5)
        if b0 is None:
            assert bb is None
        else:
            assert np.allclose(bb, t.mean(0) - x.mean(0) @ ref, atol=1e-5)


def test_segments_match_a_whole_run_and_run_each_node_once():
    """The piecewise runner: tensors asked for level by level equal one whole-graph run, through a
    residual, an int64 shape tensor crossing a piece boundary and a weight replaced between pieces;
    every node runs exactly once and consumed values are dropped."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Shape", ["r"], ["shp"]),
        helper.make_node("Conv", ["r", "w2"], ["c"]),
        helper.make_node("Add", ["c", "r"], ["s"]),
        helper.make_node("Reshape", ["s", "shp"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 5, 5])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    weights = {"w2": w2}
    seg = Segments(model, {"x": x}, weights)
    r = seg.run(["r"])["r"]
    ref_r = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w1), padding=1)).numpy()
    assert np.allclose(r, ref_r, atol=1e-5)
    assert not seg.done[3:].any()  # only what "r" needs has run
    w2b = (w2 * 2.0).astype(np.float32)
    weights["w2"] = w2b  # the later piece sees the new value, as a refit leaves it
    y = seg.run(["y"])["y"]
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    changed.graph.initializer[1].CopyFrom(numpy_helper.from_array(w2b, "w2"))
    assert np.allclose(y, _run(changed, x), atol=1e-5)
    assert seg.done.all()
    assert "r" not in seg.values and "shp" not in seg.values  # consumed: dropped
    assert seg.run(["y"])["y"] is y  # already computed: nothing runs again


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


def test_folded_bn_convnet_is_refitted_on_statistics_of_the_model_as_it_is(tmp_path):
    """BN folded: obspa's synthetic pass runs the model as it is, and the refit runs on it (with
    obspa's warning about the missing BN statistics, none of its own)."""
    model = _export(_deep_net(), tmp_path / "folded.onnx", keep_bn=False)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        p_seq, rep = prune(model, flops_target=0.5, criterion="obspa-seq")
    assert any(s.startswith("obspa-seq:") and "refitted" in s for s in rep.notes), rep.notes
    assert any("folded" in w for w in rep.warnings) and not any(w.startswith("obspa-seq") for w in rep.warnings)
    x = _noise(32, 4)
    ref = _run(model, x)
    err_seq = float(np.mean((_run(p_seq, x) - ref) ** 2))
    err_obs = float(np.mean((_run(prune(model, flops_target=0.5, criterion="obspa")[0], x) - ref) ** 2))
    assert err_seq < err_obs, (err_seq, err_obs)


def test_model_normalised_without_bn_falls_back_with_a_warning(tmp_path):
    """GroupNorm / LayerNorm and no BN: the synthetic inputs match no training statistics behind
    the norms, so the refit is skipped (it lost 10 points on the digits ViT) and plain obspa's
    result is returned, with a warning."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1),
                            torch.nn.GroupNorm(2, 8), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 1))
    model = _export(m, tmp_path / "gn.onnx", keep_bn=False)
    assert obspa.has_token_norm(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p_seq, rep = prune(model, ratio=0.25, criterion="obspa-seq")
    p_obs, _ = prune(model, ratio=0.25, criterion="obspa")
    assert any("obspa-seq" in w and "plain obspa" in w for w in rep.warnings)
    assert any("obspa-seq" in str(c.message) for c in caught)
    x = _noise(16, 3)
    # the fallback is exactly plain obspa
    assert np.allclose(_run(p_seq, x), _run(p_obs, x), atol=1e-6)


def _assert_frozen_graph_gives_the_kept_values(model, st, x):
    """The original graph with its BN running statistics replaced by the captured batch
    statistics ``st.raw_bn`` gives, on ``x``, every kept layer value ``st.raw``."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgekit.prune.obspa.seq import _with_outputs

    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    for i in frozen.graph.initializer:
        if i.name in st.raw_bn:
            i.CopyFrom(numpy_helper.from_array(st.raw_bn[i.name], i.name))
    names = sorted(st.raw)
    sess = ort.InferenceSession(_with_outputs(frozen, names).SerializeToString(), providers=["CPUExecutionProvider"])
    for t, v in zip(names, sess.run(names, {next(iter(st.inputs)): x})):
        assert np.allclose(st.raw[t], v, rtol=1e-4, atol=1e-4 * (1 + float(np.abs(v).max()))), t


def test_synthetic_pass_values_are_the_frozen_bn_graph_values(tmp_path):
    """obspa-seq reuses obspa's synthetic pass (batch-statistics BN) as the original graph's
    targets: they must equal a run of the original graph whose BN running statistics are
    replaced by the captured batch statistics."""
    from edgekit.prune.obspa.seq import _inputs_x

    model = _export(_deep_net(), tmp_path / "deep.onnx")
    st = obspa.ObspaStats(model, keep_raw=True)
    assert st.synthesized and st.raw and st.raw_bn
    n_bn = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert len(st.raw_bn) == 2 * n_bn
    x = obspa.smooth_noise(np.random.default_rng(0), (st.synthetic_used, 3, 12, 12), st.synthetic_smooth)
    assert np.array_equal(_inputs_x(st, type("Ctx", (), {"calib": None})()), x)
    _assert_frozen_graph_gives_the_kept_values(model, st, x)
    # plain obspa keeps no arrays
    assert not obspa.ObspaStats(model).raw


def test_kept_arrays_are_the_first_run_of_a_chunked_synthetic_pass(tmp_path, monkeypatch):
    """On big models obspa-seq keeps the layer values of its refit samples only, and the
    synthetic pass runs in chunks: the kept values and BN statistics must still be those of the
    original graph with these statistics frozen, on those samples."""
    model = _export(_deep_net(), tmp_path / "deep.onnx")
    monkeypatch.setattr(measure, "CHUNK_ELEMENTS", 1)  # runs of the least size (4 samples)
    runs = []
    real = measure.sample_chunks
    monkeypatch.setattr(measure, "sample_chunks", lambda *a, **k: runs.append(real(*a, **k)) or runs[-1])
    macs = obspa.ObspaStats(model, synthetic=0).macs_per_sample()
    st = obspa.ObspaStats(model, keep_raw=True, raw_macs_budget=6.5 * macs, raw_least=4)
    assert st.synthesized and st.synthetic_used == 64 and st.raw_samples == 6
    assert runs[-1][0] == (0, 6) and len(runs[-1]) > 10
    assert all(len(v) == 6 for v in st.raw.values())
    _assert_frozen_graph_gives_the_kept_values(model, st, st.synthetic_x[:6])
    # and obspa-seq's refit, with the same budget, runs on these samples and these kept values
    from edgekit.prune.obspa.criterion import ObspaSeq
    from edgekit.prune.obspa import seq as obspa_seq

    monkeypatch.setattr(obspa_seq, "REFIT_MACS_BUDGET", 6.5 * macs)
    monkeypatch.setattr(ObspaSeq, "raw_macs_budget", 6.5 * macs)
    seen = []
    real_init = obspa_seq.Segments.__init__

    def spy(self, graph, feeds, *a, **k):
        seen.append(len(next(iter(feeds.values()))))
        real_init(self, graph, feeds, *a, **k)

    monkeypatch.setattr(obspa_seq.Segments, "__init__", spy)
    _, rep = prune(model, flops_target=0.6, criterion="obspa-seq")
    assert seen == [6] and any("refitted" in n for n in rep.notes)


def test_calibrated_refit_runs_the_original_graph_on_the_calibration_inputs(tmp_path):
    """With --calib the targets come from a run of the original graph on those inputs (not from a
    synthetic pass): the refit still beats plain calibrated obspa on held-out samples."""
    model = _export(_deep_net(), tmp_path / "deep.onnx")
    calib = _noise(64, 11)
    x = _noise(128, 7)
    ref = _run(model, x)
    p_obs, _ = prune(model, flops_target=0.5, criterion="obspa", calib=calib)
    p_seq, rep = prune(model, flops_target=0.5, criterion="obspa-seq", calib=calib)
    assert any(s.startswith("obspa-seq:") and "calibration inputs" in s for s in rep.notes)
    err_obs = float(np.mean((_run(p_obs, x) - ref) ** 2))
    err_seq = float(np.mean((_run(p_seq, x) - ref) ** 2))
    assert err_seq < 0.7 * err_obs, (err_seq, err_obs)


def test_fits_use_at_most_fit_rows_rows(tmp_path, monkeypatch):
    from edgekit.prune.obspa import seq as obspa_seq

    model = _export(_deep_net(), tmp_path / "deep.onnx")
    seen = []
    real = obspa_seq.ridge_fit

    def spy(x, t, w0, b0, ridge):
        seen.append((len(x), x.shape[1]))
        return real(x, t, w0, b0, ridge)

    monkeypatch.setattr(obspa_seq, "ridge_fit", spy)
    prune(model, flops_target=0.5, criterion="obspa-seq")
    free = list(seen)
    seen.clear()
    monkeypatch.setattr(obspa_seq, "MIN_FIT_ROWS", 200)
    monkeypatch.setattr(obspa_seq, "FIT_ROWS_PER_UNKNOWN", 4)
    prune(model, flops_target=0.5, criterion="obspa-seq")
    assert len(seen) == len(free) > 0
    assert all(rows <= max(200, 4 * d) for rows, d in seen)
    # the cap engaged where there were more rows, and left at least half of what it allows
    assert any(r < r0 for (r, _), (r0, _) in zip(seen, free))
    assert all(r >= min(r0, max(200, 4 * d)) // 2 for (r, d), (r0, _) in zip(seen, free))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2"])
def test_digits_convnets_at_two_thirds_flops(tmp_path, arch):
    """The issue's accuracy goal on BN convnets trained on real data: at flops-target 0.67, with
    neither data nor fine-tuning, obspa-seq stays within 1 point of the unpruned test accuracy and
    far above l1, in both scopes."""
    from edgekit.models import digits

    net, _ = digits.trained(arch, seed=0)
    _, _, xte, yte = digits.load(image_size=16, seed=0)
    digits.export_onnx(net, tmp_path / f"{arch}.onnx", keep_bn=True)
    model = onnx.load(str(tmp_path / f"{arch}.onnx"))

    def acc(mdl):
        return float((_run(mdl, xte).argmax(1) == yte).mean())

    base = acc(model)
    for scope in ("uniform", "global"):
        p_seq, rep = prune(model, flops_target=0.67, criterion="obspa-seq", scope=scope)
        p_l1, rep_l1 = prune(model, flops_target=0.67, criterion="l1", scope=scope)
        assert rep.flops_ratio <= 0.7 and rep_l1.flops_ratio <= 0.7
        assert any("refitted" in s for s in rep.notes), rep.notes
        a_seq, a_l1 = acc(p_seq), acc(p_l1)
        assert a_seq >= base - 0.01, (scope, a_seq, base)
        assert a_seq >= a_l1 + 0.2, (scope, a_seq, a_l1)


def test_a_failed_refit_leaves_exactly_plain_obspa(tmp_path, monkeypatch):
    """The refit writes layer after layer; when a later layer fails, none of the earlier writes
    may stay: the result is plain obspa's model, as the warning says."""
    from edgekit.prune.obspa import seq as obspa_seq

    model = _export(_deep_net(), tmp_path / "deep.onnx")
    plain, _ = prune(model, flops_target=0.5, criterion="obspa")
    real, calls = obspa_seq._fit_layer, []

    def fail_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("layer three cannot be fitted")
        return real(*a, **k)

    monkeypatch.setattr(obspa_seq, "_fit_layer", fail_third)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        seq, rep = prune(model, flops_target=0.5, criterion="obspa-seq")
    assert len(calls) == 3 and any("layer three cannot be fitted" in w for w in rep.warnings)
    x = _noise(16, 9)
    np.testing.assert_array_equal(_run(seq, x), _run(plain, x))


def test_pieces_run_sample_by_sample_where_the_batch_is_a_constant():
    """A piece whose graph holds batch 1 as a constant (a Resize's sizes [1, C, H, W], as the
    pruner folds them in a static export) runs per sample, rows stacked; a shape vector that
    comes out of every run the same is passed on whole."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.prune.obspa.measure import session as _session
    from edgekit.prune.obspa.seq import _run_piece

    sizes = numpy_helper.from_array(np.array([1, 2, 4, 4], dtype=np.int64), "sizes")
    g = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
         helper.make_node("Shape", ["y"], ["s"], start=1)],
        "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_empty_tensor_value_info("y"), helper.make_empty_tensor_value_info("s")], [sizes])
    sess = _session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 2)).astype(np.float32)
    y, s = _run_piece(sess, ["y", "s"], {"x": x}, 3)
    assert y.shape == (3, 2, 4, 4) and s.tolist() == [2, 4, 4]
    for i in range(3):
        np.testing.assert_array_equal(y[i:i + 1], sess.run(["y"], {"x": x[i:i + 1]})[0])


@pytest.mark.parametrize("keep_bn", [True, False])
def test_float16_export_gets_statistics_and_the_refit_and_stays_float16(tmp_path, keep_bn):
    """A float16 export (model.half()): the statistics pass and the refit feed float16, every value
    written back (updates, BN statistics, new biases) keeps the model's float16, and each criterion
    leaves the same output error as on the float32 export of the same network. Before, the float32
    synthetic inputs failed on the float16 input and obspa fell back to weight-only estimates
    without a refit."""
    from onnx import TensorProto

    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    x = _noise(32, 7)
    errs = {}
    for half in (False, True):
        net = _deep_net(seed=5)
        net = net.half() if half else net
        path = tmp_path / f"h{half}.onnx"
        torch.onnx.export(net, torch.zeros(1, 3, 12, 12, dtype=torch.float16 if half else torch.float32), str(path),
                          input_names=["x"], output_names=["y"], opset_version=17, dynamo=False, training=mode)
        model = onnx.load(str(path))
        want = TensorProto.FLOAT16 if half else TensorProto.FLOAT
        assert model.graph.input[0].type.tensor_type.elem_type == want
        assert any(n.op_type == "BatchNormalization" for n in model.graph.node) == keep_bn
        ref = _run(model, x).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for crit in ("l1", "obspa", "obspa-seq"):
                p, rep = prune(model, ratio=0.4, criterion=crit)
                onnx.checker.check_model(p, full_check=True)
                floats = {i.data_type for i in p.graph.initializer} - {TensorProto.INT64}
                assert floats == {want}, (crit, floats)
                errs[crit, half] = float(np.mean((_run(p, x).astype(np.float32) - ref) ** 2))
                if crit != "l1":
                    assert not any("weight-only" in w for w in rep.warnings), rep.warnings
                    assert any("synthetic" in s for s in rep.notes), rep.notes
                if crit == "obspa-seq":
                    assert any("refitted" in s for s in rep.notes), rep.notes
    for crit in ("l1", "obspa", "obspa-seq"):
        assert errs[crit, True] == pytest.approx(errs[crit, False], rel=0.1), errs
    assert errs["obspa-seq", True] < errs["obspa", True] < 0.6 * errs["l1", True], errs


def test_symbolic_image_size_gets_synthetic_inputs_of_an_assumed_size(tmp_path, monkeypatch):
    """An export with dynamic height / width: the synthetic pass assumes a size (said in the notes)
    and obspa-seq refits; with the assumed size equal to the static export's, both exports prune to
    the same weights. Before, such a graph fell back to analytic BN moments and skipped the refit."""
    net = _deep_net(seed=6)
    static = export_bn(net, tmp_path / "s.onnx", True, (1, 3, 12, 12))
    dyn_path = tmp_path / "d.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 12, 12), str(dyn_path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})
    dyn = onnx.load(str(dyn_path))
    assert not dyn.graph.input[0].type.tensor_type.shape.dim[2].HasField("dim_value")
    monkeypatch.setattr(synthetic, "ASSUMED_IMAGE_SIZE", 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_s, rep_s = prune(static, ratio=0.4, criterion="obspa-seq")
        p_d, rep_d = prune(dyn, ratio=0.4, criterion="obspa-seq")
    assert not rep_d.warnings, rep_d.warnings
    assert any("12x12 (assumed)" in s for s in rep_d.notes), rep_d.notes
    assert any("refitted" in s for s in rep_d.notes), rep_d.notes
    from onnx import numpy_helper

    ws = {i.name: numpy_helper.to_array(i) for i in p_s.graph.initializer}
    wd = {i.name: numpy_helper.to_array(i) for i in p_d.graph.initializer}
    common = [k for k in ws if k in wd and ws[k].dtype == np.float32 and ws[k].ndim == 4]
    assert len(common) >= 10
    for k in common:
        assert ws[k].shape == wd[k].shape and np.allclose(ws[k], wd[k], rtol=1e-4, atol=1e-5), k
    # the dynamic export still runs at other sizes after pruning
    x = obspa.smooth_noise(np.random.default_rng(1), (2, 3, 20, 20), 3)
    assert _run(p_d, x).shape == (2, 10)


def _channels_last_twin(model, dynamic_hw=False):
    """``model`` (NCHW input ``x``) behind a Transpose from an NHWC input, the way TensorFlow / Keras
    converters write it: the same network, read channels-last."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    old = m.graph.input[0]
    n, c, h, w = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in old.type.tensor_type.shape.dim]
    if dynamic_hw:
        h, w = "h", "w"
    new = onnx.helper.make_tensor_value_info("x_nhwc", onnx.TensorProto.FLOAT, [n, h, w, c])
    m.graph.node.insert(0, onnx.helper.make_node("Transpose", ["x_nhwc"], [old.name], perm=[0, 3, 1, 2]))
    del m.graph.input[:]
    m.graph.input.append(new)
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    return m


def test_channels_last_input_gets_its_channels_first_twins_samples(tmp_path, monkeypatch):
    """An NHWC export (Transpose in front of the first conv): the synthetic samples are blurred over
    height and width, not width and channels, and they are the NCHW twin's samples transposed, so
    obspa and obspa-seq prune both exports to the same weights; with symbolic height / width the
    assumed size applies to the NHWC axes."""
    from onnx import numpy_helper

    from edgekit.graph.io import input_channel_axis

    net = _deep_net(seed=7)
    nchw = _export(net, tmp_path / "c.onnx")
    nhwc = _channels_last_twin(nchw)
    assert input_channel_axis(nhwc, "x_nhwc", (1, 12, 12, 3)) == 3
    assert input_channel_axis(nchw, "x", (1, 3, 12, 12)) == 1
    x_last = obspa.smooth_noise(np.random.default_rng(2), (4, 12, 12, 3), 3, channel_axis=3)
    x_first = obspa.smooth_noise(np.random.default_rng(2), (4, 3, 12, 12), 3)
    assert np.array_equal(x_last, np.moveaxis(x_first, 1, 3))
    # neighbours along H and W correlate (2/3 for a width-3 blur), neighbouring channels do not
    for ax in (1, 2):
        a, b = np.moveaxis(x_last, ax, -1)[..., :-1], np.moveaxis(x_last, ax, -1)[..., 1:]
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1] - 2 / 3) < 0.08
    assert abs(np.corrcoef(x_last[..., :-1].ravel(), x_last[..., 1:].ravel())[0, 1]) < 0.15

    def weights(m):
        return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer
                if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4}

    monkeypatch.setattr(synthetic, "ASSUMED_IMAGE_SIZE", 12)
    for crit in ("obspa", "obspa-seq"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_c, _ = prune(nchw, ratio=0.4, criterion=crit)
            p_l, rep_l = prune(nhwc, ratio=0.4, criterion=crit)
            p_d, rep_d = prune(_channels_last_twin(nchw, dynamic_hw=True), ratio=0.4, criterion=crit)
        assert not rep_l.warnings and not rep_d.warnings, (rep_l.warnings, rep_d.warnings)
        assert any("12x12 (assumed)" in s for s in rep_d.notes), rep_d.notes
        wc = weights(p_c)
        for got in (weights(p_l), weights(p_d)):
            assert wc.keys() == got.keys() and len(wc) >= 10
            for k in wc:
                assert wc[k].shape == got[k].shape and np.allclose(wc[k], got[k], rtol=1e-4, atol=1e-5), (crit, k)


@pytest.mark.parametrize("crit", ["obspa", "obspa-seq"])
def test_unusable_calibration_data_is_refused_not_turned_into_nan_weights(tmp_path, crit):
    """NaN / infinite calibration values, values beyond a float16 input's range, or a non-numeric
    array: a CalibrationError that says which, before anything is measured. Before, NaN samples gave
    NaN moments and every compensated weight of the pruned model came out NaN, with exit 0."""
    from edgekit.errors import CalibrationError

    net = _deep_net(seed=8)
    model = _export(net, tmp_path / "a.onnx")
    good = _noise(8, 1)
    bad = good.copy()
    bad[3, 1, 4, 4] = np.nan
    with pytest.raises(CalibrationError, match="1 NaN or infinite"):
        prune(model, ratio=0.3, criterion=crit, calib=bad)
    with pytest.raises(CalibrationError, match="numeric"):
        prune(model, ratio=0.3, criterion=crit, calib=np.full(good.shape, "a"))
    half = _deep_net(seed=8).half()
    path = tmp_path / "h.onnx"
    torch.onnx.export(half, torch.zeros(1, 3, 12, 12, dtype=torch.float16), str(path), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    hmodel = onnx.load(str(path))
    with pytest.raises(CalibrationError, match="overflow .*float16"):
        prune(hmodel, ratio=0.3, criterion=crit, calib=good * 1e5)
    # in range, the same float16 model takes the same samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, _ = prune(hmodel, ratio=0.3, criterion=crit, calib=good)
    from onnx import numpy_helper

    assert all(np.isfinite(numpy_helper.to_array(i)).all() for i in p.graph.initializer)


def test_cli_refuses_nan_calibration_with_exit_1_and_no_output(tmp_path):
    from typer.testing import CliRunner

    from edgekit.cli.main import app

    _export(_deep_net(seed=9), tmp_path / "a.onnx")
    src = tmp_path / "a.onnx"
    before = src.read_bytes()
    bad = _noise(4, 2)
    bad[0, 0, 0, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    out = tmp_path / "p.onnx"
    res = CliRunner().invoke(app, ["prune", str(src), "-o", str(out), "--criterion", "obspa-seq",
                                   "--ratio", "0.3", "--calib", str(tmp_path / "bad.npy")])
    assert res.exit_code == 1, res.output
    assert "NaN or infinite" in res.output and "Traceback" not in res.output
    assert not out.exists() and src.read_bytes() == before
