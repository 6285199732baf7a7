"""Dockerfile.jetson, parsed (no Docker engine here): each JetPack variant's base image and install steps."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edgekit.jetson import jetpack_for_l4t

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile.jetson"


def parse(text: str):
    """-> (global ARG defaults, [(stage name, base, [(INSTRUCTION, args)])]) with continuations joined."""
    lines, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    global_args, stages = {}, []
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.IGNORECASE)
            stages.append((m.group(2), m.group(1), []))
        elif instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1][2].append((instr, rest.strip()))
    return global_args, stages


def expand(text: str, args: dict) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def resolve(jetpack: str):
    """Follow the final stage's FROM chain for --build-arg JETPACK=jetpack -> (base image, steps)."""
    gargs, stages = parse(DOCKERFILE.read_text())
    args = dict(gargs, JETPACK=jetpack)
    by_name = {name: (base, body) for name, base, body in stages if name}
    base = expand(stages[-1][1], args)
    steps = list(stages[-1][2])
    seen = 0
    while base in by_name:
        parent, body = by_name[base]
        steps = body + steps
        base = expand(parent, args)
        seen += 1
        assert seen < 10
    return base, steps, stages


def runs(steps):
    return " && ".join(a for i, a in steps if i == "RUN")


def env(steps):
    out = {}
    for i, a in steps:
        if i == "ENV":
            for word in shlex.split(a):
                if "=" in word:
                    k, v = word.split("=", 1)
                    out[k] = v
    return out


pytestmark = pytest.mark.skipif(not DOCKERFILE.is_file(), reason="Dockerfile.jetson not in this tree")


@pytest.mark.parametrize("jetpack, image, l4t_major, python", [
    ("4.6", "nvcr.io/nvidia/l4t-base:r32.7.1", 32, "python3.8"),
    ("5.1", "nvcr.io/nvidia/l4t-jetpack:r35.4.1", 35, "python3"),
    ("6", "nvcr.io/nvidia/l4t-jetpack:r36.", 36, "python3"),
])
def test_variant_base_image(jetpack, image, l4t_major, python):
    base, steps, _ = resolve(jetpack)
    assert base.startswith(image), base
    tag = re.search(r":r(\d+)\.(\d+)\.(\d+)$", base)
    assert tag and int(tag.group(1)) == l4t_major
    # the image's L4T really belongs to the JetPack generation the argument names
    jp, _ = jetpack_for_l4t(".".join(tag.groups()))
    assert jp.split(".")[0] == jetpack.split(".")[0]
    assert f"{python} -m venv" in runs(steps)
    assert any(i == "COPY" for i, _ in steps)
    # a global ARG is visible inside a stage only when the stage declares it again
    assert ("ARG", "JETPACK") in steps
    assert expand(env(steps)["EDGEKIT_JETPACK"], {"JETPACK": jetpack}) == jetpack
    assert ("ENTRYPOINT", '["edgekit"]') in steps


def test_jetpack4_uses_host_tensorrt_through_trtexec():
    base, steps, _ = resolve("4.6")
    r = runs(steps)
    assert "python3.8" in r and "pip install --no-cache-dir ." in r
    assert "[jetson]" not in r and "tensorrt" not in r.replace("/usr/src/tensorrt", "")  # nothing from pip
    e = env(steps)
    assert e["EDGEKIT_BACKEND"] == "trtexec" and "/usr/src/tensorrt/bin" in e["PATH"]


@pytest.mark.parametrize("jetpack", ["5.1", "6"])
def test_jetpack5_6_install_board_extra_with_system_tensorrt(jetpack):
    base, steps, _ = resolve(jetpack)
    r = runs(steps)
    assert '".[jetson]"' in r and "--system-site-packages" in r and "python3-libnvinfer" in r
    e = env(steps)
    assert e["EDGEKIT_BACKEND"] == "tensorrt" and "/usr/local/cuda/bin" in e["PATH"]


def test_board_extra_exists_in_pyproject():
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads((DOCKERFILE.parent / "pyproject.toml").read_text())
    extra = data["project"]["optional-dependencies"]["jetson"]
    assert any(x.startswith("pycuda") for x in extra) and not any(x.startswith("tensorrt") for x in extra)


def test_every_variant_documented_and_unknown_one_has_no_stage():
    text = DOCKERFILE.read_text()
    for jp in ("4.6", "5.1", "6"):
        assert re.search(rf"docker build -f Dockerfile.jetson --build-arg JETPACK={re.escape(jp)}\s", text)
    assert "docker run --rm -it --runtime nvidia" in text
    base, _, stages = resolve("7")
    assert base == "jetpack-7" and "jetpack-7" not in {s[0] for s in stages}  # docker would refuse to pull it
    names = [s[0] for s in stages]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9_.-]*", n) for n in names if n)
