"""`edgekit cluster up|status|down`: the Ray head on the desk, and what boards it has."""

from __future__ import annotations

import typer
from typing_extensions import Annotated

from edgekit.cli._common import JsonOpt, Output, handle_errors

# Library imports sit inside the commands: `edgekit --help` stays instant.

cluster_app = typer.Typer(help="The board farm's Ray head: up, status, down (each takes --json PATH|-).",
                          no_args_is_help=True)

_WARN = ("the head listens on {host}: Ray has no authentication, anyone who reaches this port can run code "
         "here. Use a trusted network only (README: Board farm)")


@cluster_app.command("up")
@handle_errors
def up(
    host: Annotated[str, typer.Option("--host", help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Head port.")] = 6379,
    json_path: JsonOpt = None,
) -> None:
    """Start the Ray head on this machine (boards join it with `edgekit worker --address HOST:PORT`)."""
    from edgekit.cluster.farm import head_up

    out = Output(json_path)
    info = head_up(host, port)
    if info["trusted_network_only"]:
        out.warn(_WARN.format(host=host))
    out.print(f"head up at {info['address']}; on each board: edgekit worker --address {info['address']}")
    out.emit(info)


@cluster_app.command("down")
@handle_errors
def down(json_path: JsonOpt = None) -> None:
    """Stop the Ray processes of this machine."""
    from edgekit.cluster.farm import head_down

    out = Output(json_path)
    out.emit(head_down())
    out.print("stopped")


@cluster_app.command("status")
@handle_errors
def status(
    address: Annotated[str, typer.Option("--address", "--cluster", help="HEAD:PORT, or `local`.")] = "127.0.0.1:6379",
    json_path: JsonOpt = None,
) -> None:
    """The boards: device, TensorRT / JetPack / L4T, power mode, busy or idle, alive or lost."""
    from edgekit.cluster.farm import boards, connect

    out = Output(json_path)
    connect(address)
    found = boards(alive_only=False)
    rows = []
    for b in found:
        lab = b.labels
        state = ("busy: " + ", ".join(b.busy) if b.busy else "idle") if b.alive else f"lost {b.death_reason}".strip()
        rows.append([b.name, ", ".join(b.devices), lab.get("edgekit-tensorrt", "?"), lab.get("edgekit-jetpack", "?"),
                     lab.get("edgekit-l4t", "?"), lab.get("edgekit-power-mode", "?"), lab.get("edgekit-clocks", "?"),
                     state])
    out.table(f"boards at {address}", ["board", "devices", "TensorRT", "JetPack", "L4T", "power", "clocks", "state"],
              rows)
    if not found:
        out.print("no boards yet: run `edgekit worker --address HEAD:PORT` on each board")
    out.print("heartbeats: Ray health-checks every node; a board that stops answering shows as lost")
    out.emit({"address": address, "boards": [b.to_dict() for b in found]})


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
