"""The same input and settings give the same bytes in every process (issue 17, defect 16).

The names and the order of the tensors a prune makes used to follow the iteration order of a
set of strings, which Python's per-process hash seed changes: two runs wrote equal models with
different bytes. Here each criterion prunes the same file in two processes with different
``PYTHONHASHSEED`` values, and the written files must be byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# a model with weights shared by several layers (their private copies are new tensors)
MODEL = "mha-vit"

SETTINGS = {
    "l1": dict(ratio=0.5),
    "l2-global-r8": dict(flops_target=0.5, criterion="l2", scope="global", round_to=8),
    "bn-scale": dict(ratio=0.3, criterion="bn-scale"),
    "random": dict(ratio=0.3, criterion="random"),
    "obspa": dict(flops_target=0.67, criterion="obspa"),
    "obspa-seq": dict(flops_target=0.67, criterion="obspa-seq"),
}

_CHILD = """
import hashlib, json, sys, warnings
from pathlib import Path
from edgekit.prune.api import prune_file
src, out, settings = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
res = {}
for label, kw in settings.items():
    dest = out / (label + ".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prune_file(src, dest, **kw)
    res[label] = hashlib.sha256(dest.read_bytes()).hexdigest()
print(json.dumps(res))
"""


def _run(src: Path, out: Path, seed: str) -> dict:
    out.mkdir()
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(out), json.dumps(SETTINGS)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_same_bytes_whatever_the_hash_seed(tmp_path):
    pytest.importorskip("torch")
    from edgekit.models.zoo import to_onnx

    src = tmp_path / "m.onnx"
    src.write_bytes(to_onnx(MODEL, keep_bn=True).SerializeToString())
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    a = _run(src, tmp_path / "a", "1")
    b = _run(src, tmp_path / "b", "2")
    assert set(a) == set(SETTINGS)
    differ = sorted(k for k in a if a[k] != b[k])
    assert not differ, f"bytes depend on the hash seed for: {differ}"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
