"""The desk side of the board farm: connect to the Ray cluster, find boards, run work on them.

``connect("HOST:PORT")`` joins an existing cluster as a driver; ``connect("local")`` starts a private
one-node Ray in this process that advertises the requested devices (the desk stands in for the
boards, so work runs here through the same path: for tests and trying the farm out). Every task asks
for its board's device resource (quantity 1: one benchmark per board at a time) and, when a
TensorRT version is requested, a ``label_selector`` on it, so a board with another TensorRT is never
used. Ray retries a task whose worker or node died (``max_retries``, bounded); a timeout cancels it.

:func:`run_on_board` is the building block other commands use (``optimize --cluster``,
``estimate --refit --cluster``): any picklable function, run on one board of a device.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgekit.cluster.boards import LABEL_TRT, BoardStatus, board_status, device_resource, trt_label, worker_spec
from edgekit.cluster.tasks import BoardJob, BoardResult, BuiltEngine, build_job, model_hash, profile_job
from edgekit.devices import get_profile
from edgekit.errors import DependencyMissingError, EdgekitError, InputError
from edgekit.jetson import detect_board

DEFAULT_PORT = 6379
DEFAULT_RETRIES = 2


class ClusterError(EdgekitError):
    """A cluster task failed: no board, a lost board, a timeout; the message names the board."""


def _ray():
    try:
        import ray  # lazy: the `cluster` extra
    except ImportError as exc:  # pragma: no cover - ray is in the dev extra here
        raise DependencyMissingError("ray", "use a board farm", install="pip install 'edgekit[cluster]'") from exc
    return ray


def connect(address: str, devices: Sequence[str] = (), trt_version: Optional[str] = None) -> str:
    """Join the cluster at ``address`` (or start ``local``); returns the address in use.

    Idempotent within a process: an existing connection is kept. With ``local`` each of ``devices``
    becomes a resource of this process's own node (TensorRT label: ``trt_version``, else this host's).
    """
    ray = _ray()
    if ray.is_initialized():
        return address
    quiet = dict(log_to_driver=False, logging_level="error", configure_logging=True, include_dashboard=False)
    if address == "local":
        resources: Dict[str, float] = {}
        labels: Dict[str, str] = {}
        board = detect_board()
        for d in devices or ["cpu"]:
            spec = worker_spec(board, device=get_profile(d).name, trt_version=trt_version)
            resources.update(spec.resources)
            labels = spec.labels
        labels.pop("edgekit-device", None)  # one node, several devices: the resources say which
        ray.init(address="local", num_cpus=1, resources=resources, labels=labels, **quiet)  # always a new one
        return "local"
    if not address:
        raise InputError("no cluster address", hint="pass --cluster HOST:PORT, or --cluster local")
    _probe(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}",
                         hint="is the head up (`edgekit cluster up`) and the port reachable?") from exc
    return address


def _probe(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds when nothing listens at HOST:PORT: ``ray.init`` retries a missing head for
    minutes, printing its own log lines meanwhile."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:  # ray://..., auto: leave them to Ray
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                         hint="is the head up (`edgekit cluster up`) and the port reachable?") from exc


def disconnect() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


def boards(alive_only: bool = True) -> List[BoardStatus]:
    """Every node that offers an edgekit device, with busy/idle per device."""
    ray = _ray()
    from ray._private.state import available_resources_per_node  # lazy: part of ray

    available = available_resources_per_node()
    out = []
    for node in ray.nodes():
        st = board_status(node, available.get(node.get("NodeID")) if node.get("Alive") else None)
        if st.devices and (st.alive or not alive_only):
            out.append(st)
    return out


def require_boards(device: str, trt_version: Optional[str] = None) -> List[BoardStatus]:
    """The live boards that can run ``device`` at ``trt_version``; an error naming what there is otherwise."""
    live = [b for b in boards() if device in b.devices]
    want = trt_label(trt_version)
    fit = [b for b in live if not want or b.tensorrt == want]
    if fit:
        return fit
    if live:
        have = ", ".join(f"{b.name}: TensorRT {b.tensorrt or '?'}" for b in live)
        raise ClusterError(f"no {device} board with TensorRT {want}; the {device} boards have {have}",
                           hint="engines do not cross TensorRT versions: ask for the boards' version, or "
                                "add a board with that JetPack")
    offered = sorted({d for b in boards() for d in b.devices})
    raise ClusterError(f"no board in the cluster offers {device}",
                       hint="boards offer: " + (", ".join(offered) or "nothing (start `edgekit worker` on a board)"))


def task_options(device: str, trt_version: Optional[str] = None, max_retries: int = DEFAULT_RETRIES) -> dict:
    """``ray.remote`` options for one task on one board of ``device``."""
    opts: Dict[str, Any] = {"num_cpus": 0, "resources": {device_resource(device): 1},
                            "max_retries": max(0, min(int(max_retries), 10)), "retry_exceptions": False}
    if trt_label(trt_version):
        opts["label_selector"] = {LABEL_TRT: trt_label(trt_version)}
    return opts


def submit(fn: Callable[..., Any], device: str, *args: Any, trt_version: Optional[str] = None,
           max_retries: int = DEFAULT_RETRIES, **kwargs: Any):
    """Start ``fn(*args, **kwargs)`` on a board of ``device``; returns the Ray object ref."""
    ray = _ray()
    return ray.remote(fn).options(**task_options(device, trt_version, max_retries)).remote(*args, **kwargs)


def unwrap(exc: BaseException) -> BaseException:
    """The error a task raised on the board (an EdgekitError stays one), else a ClusterError."""
    ray = _ray()
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else None
        if isinstance(cause, EdgekitError):
            return cause
        return ClusterError(f"the task failed on the board: {str(cause or exc).splitlines()[0]}")
    if isinstance(exc, (ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError)):
        return ClusterError(f"the board running the task was lost and retries ran out: {type(exc).__name__}",
                            hint="see `edgekit cluster status` for which board is gone")
    if isinstance(exc, ray.exceptions.TaskCancelledError):
        return ClusterError("the task was cancelled (timeout)")
    return exc


def wait_one(ref, timeout_s: Optional[float] = None) -> Any:
    """The result of ``ref``, cancelling it after ``timeout_s`` seconds (a ClusterError then)."""
    ray = _ray()
    ready, _ = ray.wait([ref], timeout=timeout_s)
    if not ready:
        ray.cancel(ref, force=True)
        raise ClusterError(f"the task did not finish within {timeout_s:g} s and was cancelled")
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - mapped to edgekit's typed errors
        raise unwrap(exc) from None


def run_on_board(fn: Callable[..., Any], device: str, *args: Any, trt_version: Optional[str] = None,
                 timeout_s: Optional[float] = None, max_retries: int = DEFAULT_RETRIES, **kwargs: Any) -> Any:
    """Run ``fn`` on one board of ``device`` (connect first) and return what it returns.

    Refuses up front when no live board fits (device and TensorRT); a board lost mid-task means a
    retry on another board of the same kind, at most ``max_retries`` times.
    """
    require_boards(get_profile(device).name, trt_version)
    ref = submit(fn, get_profile(device).name, *args, trt_version=trt_version, max_retries=max_retries, **kwargs)
    return wait_one(ref, timeout_s)


def _job(model: Path, device: str, precision: str, trt_version: Optional[str], backend: str,
         settings: Optional[dict]) -> tuple:
    data = Path(model).read_bytes()
    sha = model_hash(data)
    name = get_profile(device).name
    job = BoardJob(key=f"{Path(model).name}|{sha[:12]}|{name}|{precision}", model_name=Path(model).name,
                   model_sha=sha, device=name, precision=precision, trt_version=trt_version or "",
                   backend=backend, settings=dict(settings or {}))
    return data, job


def profile_on_board(model: Path, device: str, precision: str = "auto", settings: Optional[dict] = None,
                     trt_version: Optional[str] = None, backend: str = "auto", timeout_s: Optional[float] = None,
                     max_retries: int = DEFAULT_RETRIES) -> BoardResult:
    """Send ``model`` through the object store to a ``device`` board, build (cached) and profile there."""
    ray = _ray()
    data, job = _job(model, device, precision, trt_version, backend, settings)
    return run_on_board(profile_job, job.device, ray.put(data), job, trt_version=trt_version,
                        timeout_s=timeout_s, max_retries=max_retries)


def build_on_board(model: Path, device: str, plan_options: Dict[str, object], trt_version: Optional[str] = None,
                   timeout_s: Optional[float] = None) -> BuiltEngine:
    """Build an engine on a ``device`` board; the engine and its manifest come back as bytes."""
    ray = _ray()
    data, job = _job(model, device, str(plan_options.get("precision", "auto")), trt_version, "auto", None)
    return run_on_board(build_job, job.device, ray.put(data), job, plan_options, trt_version=trt_version,
                        timeout_s=timeout_s)


# ---- the head: `edgekit cluster up|down` -------------------------------------------------------

def _ray_cli() -> List[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


def ray_command(args: Sequence[str], timeout_s: Optional[float] = 120.0) -> str:
    """Run ``ray ARGS`` and return its output; a failure becomes a one-line ClusterError."""
    try:
        done = subprocess.run(_ray_cli() + list(args), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`ray {' '.join(args[:1])}` did not run: {exc}") from exc
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise ClusterError(f"`ray {' '.join(args[:1])}` failed: {lines[-1] if lines else 'exit ' + str(done.returncode)}",
                           hint="`ray status` shows what is running")
    return done.stdout


def head_up(host: str = "127.0.0.1", port: int = DEFAULT_PORT, num_cpus: int = 1) -> Dict[str, object]:
    """Start a Ray head bound to ``host`` (loopback unless told otherwise); it offers no board itself."""
    started = time.perf_counter()
    ray_command(["start", "--head", "--node-ip-address", host, "--port", str(port), "--num-cpus", str(num_cpus),
                 "--include-dashboard", "false", "--disable-usage-stats"])
    return {"address": f"{host}:{port}", "host": host, "port": port, "seconds": time.perf_counter() - started,
            "trusted_network_only": host not in ("127.0.0.1", "localhost", "::1")}


def head_down() -> Dict[str, object]:
    """Stop the Ray processes this machine runs (``ray stop``)."""
    ray_command(["stop"])
    return {"stopped": True}
