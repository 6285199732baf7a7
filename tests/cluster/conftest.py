"""One real local Ray cluster for every cluster test: a head and a second node, each advertising
the board resources of orin-nano and orin-nx (the head with TensorRT 10.3, the second with 8.6).

On those "boards" a fake ``trtexec`` replays a recorded JetPack 6 / TensorRT 10.3 log; it sleeps
for the ``--duration`` asked, as a real benchmark takes that long. Each node has its own cache
folder (the engine cache lives there) and its own argv log, so tests can tell which node built what.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from fakes.models import conv_model
from fixtures import recorded

LOG = recorded("trtexec") / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log"
DEVICES = ("orin-nano", "orin-nx")
HERE = Path(__file__).resolve().parent  # on the nodes' PYTHONPATH: test functions run there by name

FAKE = f"""#!{sys.executable}
import os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_ARGV"], "a") as fh:
    fh.write(" ".join(args) + "\\n")
for a in args:
    if a.startswith("--duration="):
        time.sleep(float(a.split("=", 1)[1]))
sys.stdout.write(open(os.environ["FAKE_TRTEXEC_LOG"]).read())
for a in args:
    if a.startswith("--saveEngine="):
        open(a.split("=", 1)[1], "wb").write(b"fake-engine-bytes")
"""


class Farm:
    """The shared cluster plus where each node keeps its files."""

    def __init__(self, root: Path):
        from ray.cluster_utils import Cluster  # lazy: ray

        self.root = root
        bindir = root / "bin"
        bindir.mkdir()
        exe = bindir / "trtexec"
        exe.write_text(FAKE)
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.bindir = bindir
        self.cluster = Cluster()
        self.nodes = {}
        self.head = self.add("head", "10.3", head=True)
        self.second = self.add("second", "8.6")
        self.address = self.cluster.address

    def env(self, name: str) -> dict:
        home = self.root / name
        home.mkdir(exist_ok=True)
        return {"PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_TRTEXEC_LOG": str(LOG),
                "FAKE_TRTEXEC_ARGV": str(home / "trtexec-argv.txt"), "EDGEKIT_CACHE_DIR": str(home / "cache"),
                "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE.parent), str(HERE)]
                                                                      + [os.environ.get("PYTHONPATH", "")])}

    def add(self, name: str, trt: str, head: bool = False):
        from edgekit.cluster.boards import worker_spec

        resources, labels = {}, {}
        for d in DEVICES:
            spec = worker_spec(None, device=d, trt_version=trt, host=name)
            resources.update(spec.resources)
            labels = spec.labels
        labels.pop("edgekit-device")
        args = dict(num_cpus=1, resources=resources, labels=labels, env_vars=self.env(name),
                    include_dashboard=False, object_store_memory=80 * 1024 * 1024)
        if head:
            args["_system_config"] = {"health_check_period_ms": 300, "health_check_failure_threshold": 3,
                                      "health_check_initial_delay_ms": 0}
            self.cluster.head_node_args = args
            node = self.cluster.add_node(**args)
        else:
            node = self.cluster.add_node(**args)
        self.nodes[name] = node
        return node

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def argv(self, name: str) -> list:
        p = self.root / name / "trtexec-argv.txt"
        return p.read_text().splitlines() if p.exists() else []


@pytest.fixture(scope="session")
def farm(tmp_path_factory):
    pytest.importorskip("ray")
    import ray  # lazy: ray

    from edgekit.cluster import connect

    f = Farm(tmp_path_factory.mktemp("farm"))
    connect(f.address)
    yield f
    ray.shutdown()
    f.cluster.shutdown()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Three small float models (they build at fp16 and fp32; INT8 would need a QDQ model or calibration)."""
    d = tmp_path_factory.mktemp("models")
    return [conv_model(d / f"m{i}.onnx", channels=4 + 4 * i, seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def qdq_model(tmp_path_factory):
    return conv_model(tmp_path_factory.mktemp("qdq") / "q.onnx", qdq=True)
