"""Properties of the device cost model and of what ``estimate_latency`` returns."""

from __future__ import annotations

import json

import pytest

from edgekit.devices import get_profile, list_profiles
from edgekit.errors import InputError, UnknownDeviceError
from edgekit.estimate import Estimate, estimate_latency
from edgekit.estimate.costmodel import PARAMS_FILE, Params, layer_times, load_compute
from edgekit.estimate.layers import Layer

BOARDS = [p.name for p in list_profiles() if p.kind != "cpu"]


@pytest.mark.parametrize("device", BOARDS)
def test_every_board_gives_a_labelled_estimate_with_a_band(net, cache, device):
    e = estimate_latency(net(), device, "fp16")
    assert isinstance(e, Estimate) and e.label == "estimate" and e.latency_ms > 0
    assert e.error_band is not None and e.error_band.n > 0 and 0 <= e.error_band.within_25_pct <= 1
    assert e.params_version.startswith("device-v")
    assert abs(sum(lay.us for lay in e.layers) - e.latency_ms * 1000) < 0.5 * e.latency_ms * 1000
    assert e.top_layers(3)[0].us >= e.top_layers(3)[-1].us


def test_more_work_takes_longer(net, cache):
    small = estimate_latency(net(batch="N"), "orin-nx", "fp16", batch=1).latency_ms
    big = estimate_latency(net(batch="N"), "orin-nx", "fp16", batch=8).latency_ms
    wide = estimate_latency(net(width=128), "orin-nx", "fp16").latency_ms
    assert big > small and wide > estimate_latency(net(width=32), "orin-nx", "fp16").latency_ms
    assert big < 8 * small  # a larger batch fills the GPU better


def test_precisions_and_boards_order_as_the_hardware_does(net, cache):
    m = net(width=256, hw=112, blocks=3)
    t = {p: estimate_latency(m, "agx-orin", p).latency_ms for p in ("fp32", "fp16", "int8", "best")}
    assert t["int8"] < t["fp16"] < t["fp32"] and t["best"] <= min(t["int8"], t["fp16"]) * 1.0001
    assert estimate_latency(m, "agx-orin", "fp16").latency_ms < estimate_latency(m, "orin-nano", "fp16").latency_ms
    nano = estimate_latency(m, "nano", "int8")
    assert any("no fast INT8" in n for n in nano.notes)


def test_lower_power_mode_is_slower(net, cache):
    m = net(width=128, hw=112)
    full = estimate_latency(m, "agx-orin", "fp16").latency_ms
    low = estimate_latency(m, "agx-orin", "fp16", power_mode="15W")
    assert low.latency_ms > full and any("15W" in n for n in low.notes)
    with pytest.raises(InputError):
        estimate_latency(m, "agx-orin", "fp16", power_mode="TURBO")


def test_channel_padding_in_int8():
    comp = load_compute(get_profile("orin-nx"))
    params = Params.load()
    # compute-bound convs, same spatial size: 17 output channels pad to 32 in INT8, to 24 in FP16
    a = Layer("a", "conv", ["a"], [1, 17, 64, 64], macs=17 * 64 * 64 * 64 * 9, cin=64, cout=17)
    b = Layer("b", "conv", ["b"], [1, 32, 64, 64], macs=32 * 64 * 64 * 64 * 9, cin=64, cout=32)
    ta, tb = (t[0] for t in layer_times([a, b], comp, "int8", params))
    assert ta > 0.6 * tb          # 17 channels cost nearly what 32 do (padding), not 17/32 of it


def test_unknown_device_did_you_mean(net):
    with pytest.raises(UnknownDeviceError) as ei:
        estimate_latency(net(), "orin-nxx")
    assert "did you mean" in str(ei.value)


def test_unmodelled_ops_are_listed(net, cache):
    e = estimate_latency(net(extra="MysteryOp"), "orin-nx", "fp16")
    assert e.unmodelled == ["MysteryOp"]
    odd = [lay for lay in e.layers if lay.bound == "unmodelled"]
    assert odd and odd[0].us > 0 and odd[0].bytes_moved > 0


def test_fp32_band_says_it_is_not_validated(net, cache):
    e = estimate_latency(net(), "agx-orin", "fp32")
    assert "NOT validated" in e.error_band.method
    assert any("FP32" in n for n in e.notes)


def test_dla_and_sparse_checks(net, cache):
    with pytest.raises(InputError):
        estimate_latency(net(), "orin-nano", "int8", dla=0)    # no DLA on Orin Nano
    with pytest.raises(InputError):
        estimate_latency(net(), "agx-orin", "int8", dla=5)
    assert estimate_latency(net(), "agx-orin", "int8", dla=0).notes
    m = net(width=256, hw=56)
    dense = estimate_latency(m, "agx-orin", "int8").latency_ms
    assert estimate_latency(m, "agx-orin", "int8", sparse=True).latency_ms <= dense
    assert estimate_latency(m, "tx2", "fp16", sparse=True).latency_ms == estimate_latency(m, "tx2", "fp16").latency_ms


def test_shipped_params_are_versioned_and_carry_lomo_bands():
    data = json.loads(PARAMS_FILE.read_text())
    assert data["version"] == "device-v2" and data["bands"]
    assert all(b["method"].startswith("leave-one-model-out") for b in data["bands"].values())
    p = Params.load()
    assert all(0 < v <= 1 for v in p.e_class.values()) and 0 < p.e_mem <= 1
