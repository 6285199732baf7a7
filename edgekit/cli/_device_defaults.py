"""`--device NAME` on the stages before the build: which flags took their value from a profile.

One record per command run: each flag that the user left out and the profile filled in is noted
with its value and the reason, each flag the user gave (and that wins over the profile) with its
own value, so the report (rich and ``--json``) says which defaults came from which profile. The
values themselves are read from :class:`edgekit.devices.DeviceProfile` by the commands.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, List, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

# The one --device option of prune / quantize / inspect sparsity (build, profile, deploy have theirs).
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", "-d", metavar="NAME",
    help="Device profile (see `edgekit devices`): the flags you leave out take this board's defaults; "
         "an explicit flag always wins.")]


class DeviceDefaults:
    """The profile behind ``--device`` (None without one) and what it set."""

    def __init__(self, device: Optional[str]):
        from edgekit.devices import get_profile

        self.profile = get_profile(device) if device else None
        self.rows: List[dict] = []

    @property
    def name(self) -> Optional[str]:
        return self.profile.name if self.profile else None

    def take(self, flag: str, given: Any, default: Any, reason: str, source: Optional[str] = None) -> Any:
        """``given`` when the user gave the flag (not None), else ``default``; noted either way.
        ``source`` names where a default comes from (default: the profile, or edgekit itself)."""
        if given is not None:
            self.rows.append({"flag": flag, "value": _plain(given), "from": "flag", "reason": "given on the command line"})
            return given
        src = source or (f"profile {self.name}" if self.profile else "edgekit default")
        self.rows.append({"flag": flag, "value": _plain(default), "from": src, "reason": reason})
        return default

    def note(self, flag: str, value: Any, reason: str) -> None:
        """A fact about the board that is not a flag value (e.g. whether 2:4 applies)."""
        self.rows.append({"flag": flag, "value": value, "from": f"profile {self.name}", "reason": reason})

    def to_dict(self) -> dict:
        return {"device": self.name, "profile": self.profile.source if self.profile else None,
                "defaults": self.rows}

    def render(self, out, always: bool = False) -> None:
        """One dim line per value that came from a profile or edgekit's defaults (without
        --device only when ``always``)."""
        if self.profile is None and not always:
            return
        for r in self.rows:
            if r["from"] != "flag":
                out.print(f"[dim]{escape(str(r['flag']))} {escape(str(r['value']))}: from {escape(r['from'])} "
                          f"({escape(r['reason'])})[/dim]")


def _plain(value: Any) -> Any:
    """An enum choice as its text, for the JSON report."""
    return value.value if isinstance(value, Enum) else value
