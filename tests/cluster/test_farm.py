"""The desk-side library against a real two-node Ray cluster (tests/cluster/conftest.py)."""

from __future__ import annotations

import pytest

from edgekit.cluster import ClusterError, boards, profile_on_board, require_boards, run_on_board

FAST = {"warmup_ms": 0.0, "duration_s": 0.05, "iterations": 5}


def test_boards_advertise_devices_and_tensorrt(farm):
    found = {b.node_id: b for b in boards()}
    assert set(found) >= {farm.node_id("head"), farm.node_id("second")}
    assert found[farm.node_id("head")].tensorrt == "10.3" and found[farm.node_id("second")].tensorrt == "8.6"
    for b in found.values():
        assert set(b.devices) >= {"orin-nano", "orin-nx"}


def test_profile_goes_to_a_board_builds_there_and_reuses_the_engine(farm, models, qdq_model):
    first = profile_on_board(qdq_model, "orin-nano", precision="int8", settings=FAST, trt_version="10.3")
    assert first.node["node_id"] == farm.node_id("head")  # the only board with TensorRT 10.3
    assert first.backend == "trtexec" and not first.stand_in and not first.engine_cached
    assert first.report.latency.median > 0 and first.report.throughput_qps > 0
    builds = [a for a in farm.argv("head") if "--saveEngine=" in a]
    again = profile_on_board(qdq_model, "orin-nano", precision="int8", settings=FAST, trt_version="10.3")
    assert again.engine_cached and again.report.latency.median == first.report.latency.median
    assert [a for a in farm.argv("head") if "--saveEngine=" in a] == builds  # no second build


def test_trt_version_picks_the_matching_board_and_a_mismatch_is_refused(farm, models, qdq_model):
    on_86 = profile_on_board(models[1], "orin-nx", settings=FAST, trt_version="8.6.2", backend="onnxruntime")
    assert on_86.node["node_id"] == farm.node_id("second") and on_86.node["edgekit-tensorrt"] == "8.6"
    with pytest.raises(ClusterError) as e:
        profile_on_board(models[1], "orin-nx", settings=FAST, trt_version="9.9")
    assert "9.9" in e.value.message and "10.3" in e.value.message and "8.6" in e.value.message
    with pytest.raises(ClusterError, match="no board in the cluster offers tx2"):
        require_boards("tx2")


def _where():
    import ray  # lazy: ray

    return ray.get_runtime_context().get_node_id()


def test_run_on_board_runs_any_function_where_asked(farm):
    assert run_on_board(_where, "orin-nano", trt_version="8.6") == farm.node_id("second")
    assert run_on_board(_where, "orin-nano", trt_version="10.3") == farm.node_id("head")


def _slow():
    import time

    time.sleep(30)


def test_a_task_over_its_timeout_is_cancelled(farm):
    with pytest.raises(ClusterError, match="did not finish within 0.5 s"):
        run_on_board(_slow, "orin-nx", timeout_s=0.5)


def _fails():
    from edgekit.errors import InputError

    raise InputError("bad on the board", hint="the hint travels too")


def test_a_board_side_edgekit_error_comes_back_typed(farm):
    from edgekit.errors import InputError

    with pytest.raises(InputError) as e:
        run_on_board(_fails, "orin-nx")
    assert e.value.message == "bad on the board" and e.value.hint == "the hint travels too"
