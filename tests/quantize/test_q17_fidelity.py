"""Issue 17: the fidelity report's SQNR cannot be inflated by a constant part of the outputs (a head that
gives padded classes a -1000 bias printed "SQNR 99 dB" beside "top-1 95 %")."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgekit.quantize import calibrate as cal
from edgekit.quantize.fidelity import centred_sqnr_db, fidelity, sqnr_db


def _head(w: np.ndarray, b: np.ndarray):
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["logits"], name="fc", transB=1)], "head",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w.shape[1]])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", w.shape[0]])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _pair(offset: float):
    """(float head, perturbed head standing in for its INT8 copy): 10 real classes, 90 padded ones."""
    rng = np.random.default_rng(3)
    w = np.zeros((100, 32), np.float32)
    w[:10] = rng.standard_normal((10, 32))
    b = np.full(100, offset, np.float32)
    b[:10] = 0.0
    noisy = w + (0.25 * rng.standard_normal(w.shape) * (w != 0)).astype(np.float32)
    return _head(w, b), _head(noisy, b)


def test_fidelity_sqnr_ignores_constant_output_offsets():
    x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
    data = cal.CalibrationData({"x": x}, "test")
    plain = fidelity(*_pair(0.0), data, (0, 200), batch_size=50, threads=1)
    padded = fidelity(*_pair(-1000.0), data, (0, 200), batch_size=50, threads=1)
    assert plain["top1_agreement"] == padded["top1_agreement"] < 0.99  # the perturbation flips decisions
    assert abs(plain["sqnr_db"]["logits"] - padded["sqnr_db"]["logits"]) < 0.05
    assert padded["sqnr_db"]["logits"] < 30  # and it says so: no "99 dB" next to flipped decisions


def test_centred_sqnr_is_what_the_plain_one_hides():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((64, 10))
    test = ref + 0.1 * rng.standard_normal(ref.shape)
    offset = np.concatenate([np.zeros(10), np.full(90, -1000.0)])
    pad = lambda a: np.concatenate([a, np.zeros((a.shape[0], 90))], axis=1) + offset  # noqa: E731
    assert sqnr_db(pad(ref), pad(test)) > sqnr_db(ref, test) + 40  # the offset inflates the plain ratio
    assert abs(centred_sqnr_db(pad(ref), pad(test)) - centred_sqnr_db(ref, test)) < 1e-6
    one = ref[:1]
    assert centred_sqnr_db(one, test[:1]) == sqnr_db(one, test[:1])  # one sample: nothing to centre on
