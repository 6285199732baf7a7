"""`edgekit worker --address HEAD:PORT`: join a board to the farm (runs `ray start` with its resources)."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.


@handle_errors
def worker(
    address: Annotated[str, typer.Option("--address", help="The head, HOST:PORT (see `edgekit cluster up`).",
                                         metavar="HEAD:PORT")],
    device: Annotated[Optional[str], typer.Option("--device", "-d", help="Device profile; default: detected.",
                                                  metavar="NAME")] = None,
    trt_version: Annotated[Optional[str], typer.Option("--trt-version", help="TensorRT to advertise; default: "
                                                       "installed, else what the JetPack ships.",
                                                       metavar="X.Y")] = None,
    power_mode: Annotated[str, typer.Option("--power-mode", help="nvpmodel mode label (e.g. MAXN).")] = "",
    clocks_locked: Annotated[Optional[bool], typer.Option("--clocks-locked/--clocks-free",
                                                          help="Whether jetson_clocks is on.")] = None,
    num_cpus: Annotated[int, typer.Option("--num-cpus", help="CPUs this board lends to CPU tasks.")] = 1,
    block: Annotated[bool, typer.Option("--block", help="Stay in the foreground (containers, systemd).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the `ray start` command; start nothing.")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Join this board to a Ray cluster, advertising its device profile (one benchmark at a time).

    Examples:
      edgekit worker --address 192.168.1.10:6379
      edgekit worker --address 192.168.1.10:6379 --device orin-nx --power-mode MAXN --clocks-locked --dry-run
    """
    import platform

    from edgekit.cluster.boards import worker_spec
    from edgekit.cluster.farm import ray_command
    from edgekit.jetson import detect_board

    out = Output(json_path)
    board = detect_board()
    spec = worker_spec(board, device=device, trt_version=trt_version, power_mode=power_mode,
                       clocks_locked=clocks_locked, host=platform.node())
    args = spec.ray_start_args(address, num_cpus=num_cpus) + (["--block"] if block else [])
    for n in spec.notes:
        out.warn(n)
    rows = [["device", spec.device], ["resource", ", ".join(f"{k}: {v:g}" for k, v in spec.resources.items())]]
    rows += [[k, v] for k, v in sorted(spec.labels.items())]
    out.table("edgekit worker" + (" (dry run)" if dry_run else ""), ["", "value"], rows)
    out.print("ray " + " ".join(args), markup=False)
    if not dry_run:
        ray_command(args, timeout_s=None if block else 120.0)
        out.print(f"joined {address} as {spec.device}; `ray stop` leaves the cluster")
    out.emit(dict(spec.to_dict(), address=address, command=["ray"] + args, started=not dry_run))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
