"""Every kernel compiles to PTX with nvcc for the Jetson GPUs (sm_72 Xavier, sm_87 Orin), where the
installed nvcc still supports the architecture. CUDA 13 dropped sm_72 (and everything below sm_75):
with it, sm_72 is skipped with that reason and sm_87 (plus Thor's sm_110) is compiled."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from edgekit.kernels import KERNELS, kernel_source_path

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")


def _supported_archs():
    if NVCC is None:
        return set()
    out = subprocess.run([NVCC, "--list-gpu-arch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=60).stdout
    return set(re.findall(r"compute_(\d+)", out))


@pytest.fixture(scope="module")
def archs():
    return _supported_archs()


@pytest.mark.parametrize("arch", ["72", "87", "110"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_ptx_compiles(name, arch, archs, tmp_path):
    if arch not in archs:
        pytest.skip(f"this nvcc does not support sm_{arch} (CUDA 13 dropped architectures below sm_75); "
                    f"supported: {sorted(archs, key=int)}")
    src = kernel_source_path(name)
    ptx = tmp_path / f"{name}.ptx"
    proc = subprocess.run([NVCC, "--ptx", f"-arch=sm_{arch}", "-O3", "-o", str(ptx), str(src)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=180)
    assert proc.returncode == 0, proc.stdout
    text = ptx.read_text()
    assert f".target sm_{arch}" in text
    for entry in KERNELS[name][1]:
        assert re.search(rf"\.entry\s+{entry}\s*\(", text), entry
