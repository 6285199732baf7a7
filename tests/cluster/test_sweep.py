"""`run_sweep` on the shared two-node cluster: all results, the journal, resume, a board killed mid-run."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edgekit.cluster import read_journal, run_sweep
from edgekit.cluster.boards import worker_spec

SETTINGS = {"warmup_ms": 0.0, "duration_s": 0.2, "iterations": 5}
DEVICES = ["orin-nano", "orin-nx"]
PRECISIONS = ["fp16", "fp32"]


def test_sweep_runs_every_combination_on_both_boards_and_journals_them(farm, models, tmp_path):
    seen = []
    res = run_sweep(models, DEVICES, PRECISIONS, tmp_path, settings=SETTINGS,
                    on_result=lambda entry, done, total: seen.append((entry["key"], done, total)))
    assert not res.failed and len(res.rows) == 12
    assert {(r["model"], r["device"], r["precision"]) for r in res.rows} == {
        (m.name, d, p) for m in models for d in DEVICES for p in PRECISIONS}
    assert {r["node_id"] for r in res.rows} == {farm.node_id("head"), farm.node_id("second")}
    assert all(r["latency_ms"]["median"] > 0 and r["backend"] == "trtexec" for r in res.rows)
    assert [d for _, d, _ in seen] == list(range(1, 13)) and {t for _, _, t in seen} == {12}
    lines = [json.loads(x) for x in res.journal.read_text().splitlines()]
    assert [x["key"] for x in lines] == [k for k, _, _ in seen]  # written in arrival order


def test_resume_runs_only_what_the_journal_lacks(farm, models, tmp_path):
    first = run_sweep(models[:2], DEVICES, ["fp16"], tmp_path, settings=SETTINGS)
    lines = first.journal.read_text().splitlines()
    first.journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][:17])  # interrupted mid-line
    ran = []
    res = run_sweep(models[:2], DEVICES, ["fp16"], tmp_path, settings=SETTINGS, resume=True,
                    on_result=lambda entry, done, total: ran.append(entry["key"]))
    kept = {json.loads(x)["key"] for x in lines[:2]}
    assert res.resumed == 2 and len(ran) == 2 and not kept & set(ran)
    assert len(res.rows) == 4 and not res.failed
    assert set(read_journal(res.journal)) == {r["key"] for r in first.rows}


@pytest.mark.slow
def test_a_board_killed_mid_sweep_loses_no_result_and_is_named(farm, models, tmp_path):
    victim = farm.add("victim", "10.3")
    victim_id = victim.node_id
    killed = []

    def kill_when_it_is_profiling():  # the fake trtexec logs its argv as it starts, then sleeps
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any("--loadEngine=" in a for a in farm.argv("victim")):
                farm.cluster.remove_node(victim, allow_graceful=False)
                killed.append(time.monotonic())
                return
            time.sleep(0.02)

    arrived = []
    killer = threading.Thread(target=kill_when_it_is_profiling, daemon=True)
    killer.start()
    slow = dict(SETTINGS, duration_s=0.5)
    res = run_sweep(models, DEVICES, PRECISIONS, tmp_path, settings=slow,
                    on_result=lambda entry, done, total: arrived.append((time.monotonic(), entry)))
    killer.join(5)
    assert killed, "the victim never ran a task"
    assert not res.failed and len(res.rows) == 12
    assert [b["node_id"] for b in res.lost_boards] == [victim_id]
    assert "victim" in res.lost_boards[0]["name"]
    late = [e for t, e in arrived if t > killed[0] + 0.1]
    assert late and all(e["node_id"] != victim_id for e in late)  # after the kill, only the others finish
    started_on_victim = [a for a in farm.argv("victim") if "--loadEngine=" in a]
    done_on_victim = [r for r in res.rows if r["node_id"] == victim_id]
    assert len(started_on_victim) > len(done_on_victim)  # a task was cut off there and ran elsewhere


def test_worker_spec_is_what_a_board_joins_with():
    spec = worker_spec(None, device="orin", trt_version="10.3.0", power_mode="MAXN", clocks_locked=True)
    assert spec.resources == {"edgekit-device:agx-orin": 1.0}
    assert spec.labels["edgekit-tensorrt"] == "10.3" and spec.labels["edgekit-clocks"] == "locked"
    args = spec.ray_start_args("10.0.0.1:6379")
    assert args[:3] == ["start", "--address", "10.0.0.1:6379"]
    assert json.loads(args[args.index("--resources") + 1]) == spec.resources
