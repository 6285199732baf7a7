
import pytest

from edgekit.devices import get_profile, list_profiles, max_opset_for_tensorrt
from edgekit.errors import UnknownDeviceError

REQUIRED = {"tx2", "xavier-nx", "agx-xavier", "orin-nano", "orin-nx", "agx-orin", "x86-gpu", "cpu"}


def test_all_required_profiles_present():
    assert REQUIRED <= {p.name for p in list_profiles()}


def test_orin_alias_and_facts():
    p = get_profile("orin")
    assert p.name == "agx-orin"
    assert p.sm == "8.7" and p.sparse_tensor_cores and p.dla_cores == 2 and p.fast_int8
    assert get_profile("ORIN").name == "agx-orin"
    nano = get_profile("orin-nano")
    assert nano.dla_cores == 0


def test_tx2_facts():
    p = get_profile("tx2")
    assert p.sm_tag == "sm_62"
    assert not p.fast_int8 and p.default_precision == "fp16"
    assert p.software.tensorrt.startswith("8.2") and p.max_onnx_opset == 13


@pytest.mark.parametrize("prof", list_profiles(), ids=lambda p: p.name)
def test_profile_opset_consistent_with_tensorrt(prof):
    if prof.software.tensorrt:
        assert prof.max_onnx_opset == max_opset_for_tensorrt(prof.software.tensorrt)
    assert prof.default_precision in {"fp32", "fp16", "int8", "best"}
    if prof.kind == "jetson":
        assert prof.power_modes and prof.default_power_mode in prof.power_modes


def test_typo_gets_suggestion():
    with pytest.raises(UnknownDeviceError) as ei:
        get_profile("orn")
    assert "did you mean 'orin'" in str(ei.value)


def test_cli_devices_list_and_show(cli):
    r = cli(["devices", "--json", "-"])
    assert r.exit_code == 0
    names = {d["name"] for d in r.json()["devices"]}
    assert REQUIRED <= names
    r = cli(["devices", "show", "orin", "--json", "-"])
    assert r.exit_code == 0 and r.json()["device"]["name"] == "agx-orin"
    r = cli(["devices", "show", "orn"])
    assert r.exit_code == 1
    assert "did you mean 'orin'" in r.output
    assert "Traceback" not in r.output


def test_profiles_ship_in_wheel_config():
    # the data folders must be force-included into the wheel (pip install . without -e)
    import pathlib
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    root = pathlib.Path(__file__).resolve().parents[2]
    cfg = tomllib.loads((root / "pyproject.toml").read_text())
    inc = cfg["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert inc["profiles"] == "edgekit/_data/profiles"
    assert inc["kernels"] == "edgekit/_data/kernels"
    assert inc["exporters"] == "edgekit/_data/exporters"
