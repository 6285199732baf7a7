"""Issue 17, calibration: statistics streamed batch by batch give the ranges of the whole set at once,
match ONNX Runtime's own calibrators (minmax exactly), and the CPU INT8 model they give is as faithful
as with ORT's calibrators (which keep every activation in memory). Memory/time: bench/quantize_calib_memory.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit.quantize import calibrate as cal
from edgekit.quantize import cpu
from edgekit.quantize.ptq import quantize


def _tensors(rng):
    """Activation-like batches: ReLU output, a Gaussian with rare outliers, a skewed positive one."""
    relu = np.maximum(rng.standard_normal((40, 8, 12, 12)), 0).astype(np.float32)
    gauss = rng.standard_normal((40, 64, 20)).astype(np.float32)
    gauss.reshape(-1)[rng.choice(gauss.size, 30, replace=False)] *= 25.0
    skew = rng.lognormal(0.0, 1.0, (40, 500)).astype(np.float32) - 0.3
    return {"relu": relu, "gauss": gauss, "skew": skew}


@pytest.mark.parametrize("method", cal.METHODS)
def test_streamed_statistics_equal_the_whole_set_at_once(method):
    rng = np.random.default_rng(7)
    for name, x in _tensors(rng).items():
        streamed, whole = cal.TensorStats(), cal.TensorStats()
        for s, e in cal.batches(len(x), 3):  # 14 batches, the first one a poor guess of the range
            streamed.update(x[s:e])
        whole.update(x)
        assert (streamed.lo, streamed.hi, streamed.amax) == (whole.lo, whole.hi, whole.amax)
        assert streamed.lo == float(min(0.0, x.min())) and streamed.hi == float(max(0.0, x.max()))
        assert np.array_equal(streamed.hist, whole.hist) and streamed.hist_range == whole.hist_range
        a, b = cal.compute_amax(streamed, method), cal.compute_amax(whole, method)
        assert a == b, (name, method, a, b)
        assert 0 < a <= streamed.amax


@pytest.fixture(scope="module")
def digits_pre(digits_onnx, tmp_path_factory):
    """The digits classifier after ORT's quantization pre-processing (what both calibrators see)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path, xtr, _ytr, xte, _yte = digits_onnx
    dst = tmp_path_factory.mktemp("q17") / "pre.onnx"
    with cpu.stdout_to_stderr():
        quant_pre_process(str(path), str(dst), skip_symbolic_shape=True)
    return onnx.load(str(dst)), dst, xtr[:96], xte[:120]


def test_streamed_minmax_ranges_equal_onnxruntime_calibrator(digits_pre):
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    model, path, xc, _ = digits_pre
    data = cal.CalibrationData({"images": xc}, "digits")
    ours = cpu.streamed_ranges(model, data, len(xc), 16, "minmax", 99.99)

    class Reader:
        def __init__(self):
            self.it = iter([{"images": xc[s:e]} for s, e in cal.batches(len(xc), 16)])

        def get_next(self):
            return next(self.it, None)

    c = create_calibrator(path, calibrate_method=CalibrationMethod.MinMax,
                          augmented_model_path=str(path.with_name("aug.onnx")))
    with cpu.stdout_to_stderr():
        c.collect_data(Reader())
        theirs = c.compute_data()
    assert set(ours) == set(theirs.keys())
    for k, (lo, hi) in ours.items():
        tlo, thi = (float(np.asarray(v).reshape(-1)[0]) for v in theirs[k].range_value)
        assert np.asarray(theirs[k].range_value[0]).size == 1
        assert lo == pytest.approx(min(tlo, 0.0), rel=1e-5, abs=1e-6), k
        assert hi == pytest.approx(max(thi, 0.0), rel=1e-5, abs=1e-6), k


def _logit_sqnr(float_model, q_model, x) -> tuple:
    from edgekit.quantize.fidelity import sqnr_db
    from edgekit.runtime.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(float_model, threads=1) as f, OnnxRuntimeRunner(q_model, threads=1) as q:
        a, b = f.infer({"images": x})["logits"], q.infer({"images": x})["logits"]
    return sqnr_db(a, b), float(np.mean(a.argmax(1) == b.argmax(1)))


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_streamed_calibration_is_as_faithful_as_onnxruntime_calibrators(digits_onnx, digits_pre, method):
    _, _, xc, xe = digits_pre
    fm = onnx.load(str(digits_onnx[0]))
    got = {}
    for calibrator in cpu.CALIBRATORS:
        qm, rep = quantize(fm, cal.CalibrationData({"images": xc.copy()}, "digits"), method=method, target="cpu",
                           holdout_fraction=0.0, measure_fidelity=False, threads=1, sensitivity="off",
                           calibrator=calibrator)
        assert rep.quantized_nodes
        got[calibrator] = _logit_sqnr(fm, qm, xe)
    (s_ours, a_ours), (s_ort, a_ort) = got["edgekit"], got["ort"]
    assert s_ours >= s_ort - 1.0, got
    assert a_ours >= a_ort - 0.02, got


def test_onnxruntime_calibrator_progress_never_reaches_stdout(digits_onnx, digits_pre, capfd):
    _, _, xc, _ = digits_pre
    fm = onnx.load(str(digits_onnx[0]))
    quantize(fm, cal.CalibrationData({"images": xc[:20].copy()}, "digits"), method="entropy", target="cpu",
             holdout_fraction=0.0, measure_fidelity=False, threads=1, sensitivity="off", calibrator="ort")
    got = capfd.readouterr()
    assert got.out == ""
    assert "Collecting tensor data" in got.err


def test_unknown_calibrator_is_an_input_error(digits_onnx):
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="calibrator"):
        quantize(onnx.load(str(digits_onnx[0])), "synthetic", target="cpu", samples=8, calibrator="tensorrt")
