"""Board detection against the recorded files in tests/fixtures/detect."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import EngineMismatchError
from edgekit.jetson import (check_engine_board, detect_board, jetpack_for_l4t, match_profile, parse_nv_tegra_release,
                            read_compatible, stack_for_jetpack)
from fixtures import recorded

FIX = recorded("detect")


def make_root(tmp_path: Path, release: str = None, model: str = None, compatible=None, nul: bool = True) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "proc" / "device-tree").mkdir(parents=True)
    if release is not None:
        (root / "etc" / "nv_tegra_release").write_text(release)
    if model is not None:
        (root / "proc" / "device-tree" / "model").write_bytes(model.strip().encode() + (b"\x00" if nul else b""))
    if compatible is not None:
        (root / "proc" / "device-tree" / "compatible").write_bytes(b"".join(c.encode() + b"\x00" for c in compatible))
    return root


def fixture_text(name: str) -> str:
    return (FIX / name).read_text()


@pytest.mark.parametrize("name, l4t, board, jetpack", [
    ("nv_tegra_release-R32.7.1-nano-firstline.txt", "32.7.1", "t210ref", "4.6.1"),
    ("nv_tegra_release-R35.4.1-agx-firstline.txt", "35.4.1", "t186ref", "5.1.2"),
    ("nv_tegra_release-R36.4.0.txt", "36.4.0", "generic", "6.1"),
    ("nv_tegra_release-R38.2.0-thor.txt", "38.2.0", "generic", "7.0"),
])
def test_release_fixtures(name, l4t, board, jetpack):
    rel = parse_nv_tegra_release(fixture_text(name))
    assert rel is not None and rel.version == l4t and rel.board == board
    assert rel.raw.startswith("# R")
    assert jetpack_for_l4t(rel.version) == (jetpack, True)


def test_revision_without_patch_and_garbage():
    assert parse_nv_tegra_release("# R36 (release), REVISION: 4, GCID: 1").version == "36.4.0"
    assert parse_nv_tegra_release("hello world") is None
    assert parse_nv_tegra_release("") is None


def test_unknown_patch_maps_to_closest_earlier_release():
    assert jetpack_for_l4t("35.6.4") == ("5.1.5", False)
    assert jetpack_for_l4t("36.4.9") == ("6.2.1", False)
    assert jetpack_for_l4t("99.1.0") == ("", False)


def test_stack_for_jetpack():
    assert stack_for_jetpack("4.6") == ("8.0.1", "10.2")
    assert stack_for_jetpack("4.6.1") == ("8.2.1", "10.2")
    assert stack_for_jetpack("5.1.2") == ("8.5.2", "11.4")
    assert stack_for_jetpack("6.1") == ("10.3", "12.6")
    assert stack_for_jetpack("7.2")[0] == "11.4"
    assert stack_for_jetpack("") == ("", "")


@pytest.mark.parametrize("model_file, profile", [
    ("model-agx-orin-devkit.txt", "agx-orin"),
    ("model-xavier-nx-devkit-R35.6.4.txt", "xavier-nx"),   # must not fall to agx-xavier's "Jetson Xavier"
    ("model-agx-thor-devkit-R38.2.2.txt", "thor"),
    ("model-nano-devkit-L4T32.6.1.txt", "nano"),          # original Nano (Maxwell), not orin-nano
])
def test_model_fixtures(tmp_path, model_file, profile):
    root = make_root(tmp_path, model=fixture_text(model_file))
    info = detect_board(root)
    assert info is not None
    assert info.model == fixture_text(model_file).strip()
    assert info.profile == profile
    if profile is None:
        assert any("no edgekit device profile" in n for n in info.notes)
    else:
        assert info.matched_by.startswith("model:")


def test_full_thor_board(tmp_path):
    root = make_root(tmp_path, release=fixture_text("nv_tegra_release-R38.2.0-thor.txt"),
                     model=fixture_text("model-agx-thor-devkit-R38.2.2.txt"),
                     compatible=["nvidia,p4071-0000+p3834-0008", "nvidia,p3834-0008", "nvidia,tegra264"])
    info = detect_board(root)
    d = info.to_dict()
    assert d["profile"] == "thor" and d["soc"] == "tegra264" and d["l4t"] == "38.2.0" and d["jetpack"] == "7.0"
    assert d["matched_by"] == "compatible:nvidia,p3834"
    assert d["compatible"] == ["nvidia,p4071-0000+p3834-0008", "nvidia,p3834-0008", "nvidia,tegra264"]


def test_compatible_module_beats_carrier(tmp_path):
    # TX2 NX sits on the p3509 carrier, which the Xavier NX devkit uses as well.
    tx2nx = ["nvidia,p3509-0000+p3636-0001", "nvidia,p3636-0001", "nvidia,tegra186"]
    assert match_profile("", tx2nx)[0] == "tx2"
    xnx = ["nvidia,p3509-0000+p3668-0001", "nvidia,p3668-0001", "nvidia,tegra194"]
    assert match_profile("", xnx)[0] == "xavier-nx"
    # Orin NX vs Orin Nano on the same carrier (p3768): the module number decides, not the model text.
    nano = ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"]
    assert match_profile("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", nano)[0] == "orin-nano"
    nx = ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"]
    assert match_profile("", nx)[0] == "orin-nx"


def test_compatible_read_is_nul_separated(tmp_path):
    root = make_root(tmp_path, compatible=["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"])
    assert read_compatible(root) == ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"]
    info = detect_board(root)
    assert info.profile == "agx-orin" and info.soc == "tegra234"
    assert any("nv_tegra_release" in n for n in info.notes)


def test_not_a_jetson(tmp_path):
    root = make_root(tmp_path)
    assert detect_board(root) is None
    assert detect_board(tmp_path / "does-not-exist") is None


def test_installed_tensorrt_header(tmp_path):
    root = make_root(tmp_path, release="# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref")
    inc = root / "usr" / "include" / "aarch64-linux-gnu"
    inc.mkdir(parents=True)
    (inc / "NvInferVersion.h").write_text("#define NV_TENSORRT_MAJOR 8 //!< major\n#define NV_TENSORRT_MINOR 5\n"
                                          "#define NV_TENSORRT_PATCH 2\n#define NV_TENSORRT_BUILD 2\n")
    info = detect_board(root)
    assert info.tensorrt_installed == "8.5.2" and info.tensorrt_expected == "8.5.2"
    (inc / "NvInferVersion.h").write_text("#define TRT_MAJOR_ENTERPRISE 10\n#define TRT_MINOR_ENTERPRISE 3\n"
                                          "#define TRT_PATCH_ENTERPRISE 0\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n")
    assert detect_board(root).tensorrt_installed == "10.3.0"


def test_check_engine_board(tmp_path):
    root = make_root(tmp_path, release="# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref",
                     compatible=["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"])
    board = detect_board(root)
    assert check_engine_board({"device": "agx-orin", "tensorrt": "8.5.2", "l4t": "35.4.1"}, board=board) == []
    with pytest.raises(EngineMismatchError) as exc:
        check_engine_board({"device": "agx-orin", "tensorrt": "10.3"}, board=board)
    assert "10.3" in exc.value.message and "8.5.2" in exc.value.message
    problems = check_engine_board({"device": "xavier-nx", "l4t": "36.4.0"}, board=board, strict=False)
    assert len(problems) == 2 and any("xavier-nx" in p and "agx-orin" in p for p in problems)


def test_orin_nano_model_string_is_not_the_original_nano(tmp_path):
    root = make_root(tmp_path, model="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")
    assert detect_board(root).profile == "orin-nano"


def test_unknown_jetson_model_has_no_profile(tmp_path):
    root = make_root(tmp_path, model="NVIDIA Jetson Imaginary Developer Kit")
    info = detect_board(root)
    assert info.profile is None
    assert any("no edgekit device profile" in n for n in info.notes)
