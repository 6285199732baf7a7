"""Run the edgekit CLI the way a person does: in a pseudo-terminal (Linux/macOS only).

``run_in_pty(args)`` starts ``python -m edgekit ARGS`` with stdin, stdout and stderr on a fresh
pty of a chosen size; with ``stdout_to_pipe=True`` only stdout goes to a pipe (``edgekit ... --json -
| jq``: the JSON on the pipe, the human text still on the terminal).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]

# CSI sequences (colours, cursor moves, erase) and OSC sequences (links, titles)
_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_SGR = re.compile(r"\x1b\[([0-9;]*)m")

# what a user's environment may set that changes how rich renders; the harness decides these itself
_RENDER_VARS = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM", "TTY_COMPATIBLE",
                "TTY_INTERACTIVE", "EDGEKIT_PROGRESS", "EDGEKIT_DEBUG", "JUPYTER_COLUMNS", "JUPYTER_LINES")


@dataclass
class PtyResult:
    args: List[str]
    returncode: int
    terminal: str  # everything written to the pty ("\r\n" read back as "\n")
    stdout: str  # the stdout pipe (only with stdout_to_pipe)
    seconds: float

    @property
    def plain(self) -> str:
        """The terminal text without escape sequences."""
        return strip_ansi(self.terminal)

    def describe(self) -> str:
        tail = self.plain[-3000:]
        return f"edgekit {' '.join(self.args)} -> rc {self.returncode}\n--- terminal ---\n{tail}\n--- stdout ---\n" \
               f"{self.stdout[-2000:]}"


def strip_ansi(text: str) -> str:
    return _CSI.sub("", _OSC.sub("", text))


def colour_codes(text: str) -> List[str]:
    """SGR sequences in ``text`` that set a foreground or background colour."""
    found = []
    for m in _SGR.finditer(text):
        params = [p for p in m.group(1).split(";") if p]
        if any(p.isdigit() and (30 <= int(p) <= 38 or 40 <= int(p) <= 48 or 90 <= int(p) <= 107) for p in params):
            found.append(m.group(0))
    return found


def _set_winsize(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def run_in_pty(args: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
               columns: int = 100, rows: int = 40, term: str = "xterm-256color", stdout_to_pipe: bool = False,
               timeout: float = 120.0) -> PtyResult:
    """Run ``python -m edgekit ARGS`` on a new pty of ``columns`` x ``rows``; ``env`` adds to a clean
    environment (TERM=``term``, no COLUMNS / NO_COLOR / FORCE_COLOR from the caller's)."""
    e = {k: v for k, v in os.environ.items() if k not in _RENDER_VARS}
    e.update(TERM=term, EDGEKIT_DEBUG="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
             PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    if env:
        e.update(env)
    master, slave = os.openpty()
    _set_winsize(slave, rows, columns)
    argv = [sys.executable, "-m", "edgekit", *map(str, args)]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE if stdout_to_pipe else slave, stderr=slave,
                                cwd=str(cwd) if cwd else None, env=e, start_new_session=True)
    finally:
        os.close(slave)
    chunks: Dict[int, List[bytes]] = {master: [], -1: []}
    open_fds = {master: master}
    if proc.stdout is not None:
        open_fds[proc.stdout.fileno()] = -1
    deadline = t0 + timeout
    try:
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 0.2)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every writer of the pty has closed it
                    data = b""
                if data:
                    chunks[open_fds[fd]].append(data)
                else:
                    del open_fds[fd]
            if not ready and proc.poll() is not None and master not in open_fds:
                break
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -signal.SIGKILL
    finally:
        os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()
    terminal = b"".join(chunks[master]).decode("utf-8", "replace").replace("\r\n", "\n")
    stdout = b"".join(chunks[-1]).decode("utf-8", "replace")
    return PtyResult([str(a) for a in args], rc, terminal, stdout, time.monotonic() - t0)
