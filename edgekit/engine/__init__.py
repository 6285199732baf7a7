"""Engine builders: plan a build from a device profile, then build it with the TensorRT Python API
or trtexec. ``plan_build`` and ``trtexec_command`` need no TensorRT (they back ``--dry-run``)."""

from edgekit.engine.engine import BuildResult, build_engine, dry_run
from edgekit.engine.plan import BuildPlan, InputShapes, default_timing_cache, plan_build
from edgekit.trt.trtexec import benchmark_command, find_trtexec, format_command, trtexec_command

__all__ = ["BuildPlan", "BuildResult", "InputShapes", "benchmark_command", "build_engine", "default_timing_cache",
           "dry_run", "find_trtexec", "format_command", "plan_build", "trtexec_command"]
