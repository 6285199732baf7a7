"""A board farm on Ray: workers that advertise their Jetson profile, and the desk side that sends build / profile / optimise tasks to them (ray is imported lazily)."""

from edgekit.cluster.boards import BoardStatus, WorkerSpec, device_resource, worker_spec
from edgekit.cluster.farm import (ClusterError, boards, build_on_board, connect, disconnect, head_down, head_up,
                                  profile_on_board, require_boards, run_on_board, submit, task_options)
from edgekit.cluster.sweep import SweepResult, plot_sweep, read_journal, run_sweep
from edgekit.cluster.tasks import BoardJob, BoardResult, BuiltEngine

__all__ = ["BoardJob", "BoardResult", "BoardStatus", "BuiltEngine", "ClusterError", "SweepResult", "WorkerSpec",
           "boards", "build_on_board", "connect", "device_resource", "disconnect", "head_down", "head_up",
           "plot_sweep", "profile_on_board", "read_journal", "require_boards", "run_on_board", "run_sweep",
           "submit", "task_options", "worker_spec"]
