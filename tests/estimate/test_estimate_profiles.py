"""The [compute] tables the cost model reads, and the original Jetson Nano profile."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from edgekit.devices import get_profile, list_profiles
from edgekit.estimate.costmodel import load_compute

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BOARDS = [p for p in list_profiles() if p.kind != "cpu"]


@pytest.mark.parametrize("prof", BOARDS, ids=lambda p: p.name)
def test_compute_table_is_complete_and_sourced(prof):
    c = load_compute(prof)
    assert 0 < c.fp32_tflops <= c.fp16_tflops and c.int8_tops > 0 and c.bandwidth_gbs > 0
    if prof.fast_int8:
        assert c.int8_tops >= c.fp16_tflops
    text = Path(prof.source).read_text()
    table = text[text.index("[compute]"):]
    # the table runs to the next table that is not [compute.*]; every number in it carries a
    # source comment or a (?)
    after = re.search(r"^\[(?!compute)", table, re.M)
    table = table[:after.start()] if after else table
    assert "gpu_mhz" in table or "fp16_tflops" in table
    for line in table.splitlines():
        if re.match(r"^\w+\s*=\s*[\d.]+", line):
            assert "# source" in line or "(?)" in line, line
    modes = tomllib.loads(text)["compute"].get("modes", {})
    assert set(modes) <= set(prof.power_modes)          # clocks only for modes the board has
    for mode in modes:
        assert 0 < load_compute(prof, mode).fp16_tflops <= c.fp16_tflops * 2.0


def test_original_nano_profile():
    nano = get_profile("nano")
    assert nano.arch == "Maxwell" and nano.sm == "5.3" and not nano.fast_int8
    assert nano.software.tensorrt.startswith("8.2") and nano.software.jetpack.startswith("4.6")
    assert get_profile("jetson-nano").name == "nano"
    assert get_profile("orin-nano").name == "orin-nano"   # the alias space did not move
    assert not load_compute(nano).tensor_cores
