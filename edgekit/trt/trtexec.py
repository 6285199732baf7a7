"""trtexec command lines per TensorRT version (build and benchmark), finding trtexec and running it.

The flags were checked against ``samples/common/sampleOptions.cpp`` of each release branch:

* workspace: ``--workspace=MiB`` up to 8.3; ``--memPoolSize=workspace:MiB`` from 8.4 (a bare number
  is MiB); 10.x accepts unit suffixes, so edgekit writes ``workspace:NM`` there. ``--workspace`` is
  gone in 10.0 (the FAILED fixture log shows "Unknown option: --workspace").
* build without timing: ``--buildOnly`` up to 8.5, ``--skipInference`` from 8.6 (``--buildOnly``
  was removed in 10).
* precision: ``--fp16`` / ``--int8`` / ``--best`` up to 10.x; none in 11 (strongly typed: the
  graph's types and Q/DQ nodes decide). ``--calib=cache`` up to 10.x.
* ``--explicitBatch`` is never written: ONNX models are explicit-batch in every trtexec edgekit
  supports, and 10.x rejects the flag.
* benchmarking: ``--percentile`` takes one value up to 8.4 and a list from 8.5; trtexec 11 captures a
  CUDA graph and leaves data transfers out by default (``--noCudaGraph``, ``--includeDataTransfers``).

On TX2 (Python 3.6, TensorRT 8.2) trtexec is the practical driver, which is why the plan and
this module exist independently of the Python API.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

from edgekit.errors import BuildError, DependencyMissingError
from edgekit.trt.trtexec_log import TrtexecLog, parse_log
from edgekit.trt.versions import generation

DEFAULT_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def find_trtexec(required: bool = True) -> Optional[str]:
    """trtexec on PATH (or ``EDGEKIT_TRTEXEC``), else JetPack's fixed location."""
    env = os.environ.get("EDGEKIT_TRTEXEC")
    if env:
        return env
    found = shutil.which("trtexec")
    if found:
        return found
    if os.access(DEFAULT_TRTEXEC, os.X_OK):
        return DEFAULT_TRTEXEC
    if required:
        raise DependencyMissingError("tensorrt", "run trtexec",
                                     install="trtexec ships with TensorRT: on a Jetson it is at "
                                             f"{DEFAULT_TRTEXEC}; put it on PATH or set EDGEKIT_TRTEXEC")
    return None


def _dims(d) -> str:
    return "x".join(str(int(x)) for x in d)


def shape_flags(shapes, trt_version: str) -> List[str]:
    """--minShapes/--optShapes/--maxShapes for a build (always all three: 8.x needs them together)."""
    if not shapes:
        return []
    out = []
    for flag, attr in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
        out.append(flag + "=" + ",".join(f"{s.name}:{_dims(getattr(s, attr))}" for s in shapes))
    return out


def workspace_flag(mib: int, trt_version: str) -> str:
    gen = generation(trt_version)
    if gen.trtexec_workspace == "workspace":
        return f"--workspace={int(mib)}"
    if gen.trtexec_workspace == "pool":
        return f"--memPoolSize=workspace:{int(mib)}"
    return f"--memPoolSize=workspace:{int(mib)}M"


def trtexec_command(plan, trtexec: str = "trtexec", build_only: bool = True, verbose: bool = False) -> List[str]:
    """The trtexec argv that builds ``plan`` with the flags of ``plan.trt_version``."""
    gen = generation(plan.trt_version)
    argv = [trtexec, f"--onnx={plan.onnx_path}", f"--saveEngine={plan.output}"]
    if gen.precision_flags:
        if plan.precision == "best":
            argv.append("--best")
        else:
            if plan.fp16:
                argv.append("--fp16")
            if plan.int8:
                argv.append("--int8")
        if plan.int8 and plan.int8_mode == "implicit-cache" and plan.calib_cache is not None:
            argv.append(f"--calib={plan.calib_cache}")
    if plan.sparse:
        argv.append("--sparsity=enable")
    if plan.dla_core is not None:
        argv.append(f"--useDLACore={int(plan.dla_core)}")
        if plan.gpu_fallback:
            argv.append("--allowGPUFallback")
    argv.append(workspace_flag(plan.workspace_mib, plan.trt_version))
    if plan.timing_cache is not None:
        argv.append(f"--timingCacheFile={plan.timing_cache}")
    argv.extend(shape_flags(plan.shapes, plan.trt_version))
    if build_only:
        argv.append(gen.trtexec_build_only)
    if verbose:
        argv.append("--verbose")
    return argv


def benchmark_command(engine: Path, trt_version: str, trtexec: str = "trtexec", warmup_ms: int = 200,
                      duration_s: float = 3.0, iterations: int = 10, shapes=None, cuda_graph: bool = False,
                      data_transfers: bool = True, times_json: Optional[Path] = None,
                      profile_json: Optional[Path] = None, dla_core: Optional[int] = None) -> List[str]:
    """The trtexec argv that times an engine the way edgekit's harness is configured."""
    gen = generation(trt_version)
    argv = [trtexec, f"--loadEngine={engine}", f"--warmUp={int(warmup_ms)}",
            f"--duration={duration_s:g}", f"--iterations={int(iterations)}"]
    argv.append("--percentile=90,95,99" if gen.trtexec_percentiles_list else "--percentile=99")
    if shapes:
        argv.append("--shapes=" + ",".join(f"{name}:{_dims(d)}" for name, d in shapes.items()))
    if gen.cuda_graph_default:
        if not cuda_graph:
            argv.append("--noCudaGraph")
    elif cuda_graph:
        argv.append("--useCudaGraph")
    if gen.transfers_default:
        if not data_transfers:
            argv.append("--noDataTransfers")
    elif data_transfers:
        argv.append("--includeDataTransfers")
    if dla_core is not None:
        argv.append(f"--useDLACore={int(dla_core)}")
    if times_json is not None:
        argv.append(f"--exportTimes={times_json}")
    if profile_json is not None:
        argv += ["--dumpProfile", "--separateProfileRun", f"--exportProfile={profile_json}"]
    return argv


def format_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def run_trtexec(argv: Sequence[str], timeout: Optional[float] = None) -> TrtexecLog:
    """Run trtexec; return the parsed log. A failure raises BuildError carrying trtexec's [E] lines."""
    try:
        proc = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise DependencyMissingError("tensorrt", "run trtexec", install=f"{argv[0]} was not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"trtexec did not finish within {timeout:g} s") from exc
    text = proc.stdout.decode("utf-8", errors="replace")
    log = parse_log(text)
    log.raw = text  # type: ignore[attr-defined]
    if proc.returncode != 0 or log.status == "failed":
        lines = log.error_text() or "\n".join(text.strip().splitlines()[-8:])
        raise BuildError(f"trtexec failed (exit code {proc.returncode}):\n{lines}",
                         hint="the lines above are trtexec's own errors; rerun with EDGEKIT_DEBUG=1 for the full log")
    return log
