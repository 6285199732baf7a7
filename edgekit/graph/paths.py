"""One check of every path a command touches, before it does any work.

A command lists what it reads (its input model with the model's external-data files, calibration
data, caches) and what it will write (the main output, side outputs such as ``OUT.calib`` or
``OUT.onnx.data``, ``--json``, ``--plot``, a bundle folder), then calls :meth:`PathGuard.check`.
Every path is resolved through symlinks; the check refuses, with one line each:

* a path that is a symlink loop;
* a write that is a read (or the same file under another name), or lies inside a folder that is
  read; a folder write that holds something read;
* two writes to the same place, or one write inside a folder another one creates;
* a write whose place cannot take it: a missing folder, a file where a folder should be, a folder
  where the file should be, no write permission, a read-only file system.

Missing inputs are left to the command, which knows how to explain them.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from edgekit.errors import InputError
from edgekit.graph.io import PathLike, check_output_folder, check_output_place, external_data_files


@dataclass(frozen=True)
class _Entry:
    path: Path  # as the user gave it
    what: str  # how the error names it: "input model", "--json", ...
    real: Path  # resolved through symlinks
    folder: bool = False  # a write that creates a folder (a bundle)
    make_parents: bool = False  # a write whose missing folders the command creates (a timing cache)


def _resolve(path: Path, what: str) -> Path:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{what} {path} is a symlink loop", hint="point the link at a real file") from None
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    return folder in child.parents


class PathGuard:
    """Collect the paths of one command, then :meth:`check` them together."""

    def __init__(self) -> None:
        self.reads: List[_Entry] = []
        self.writes: List[_Entry] = []

    # ---- what the command reads --------------------------------------------------------------
    def read(self, path: Optional[PathLike], what: str = "input") -> "PathGuard":
        """A file or folder the command reads (None: nothing)."""
        if path is not None:
            p = Path(path)
            self.reads.append(_Entry(p, what, _resolve(p, what)))
        return self

    def read_model(self, path: Optional[PathLike], what: str = "input model") -> "PathGuard":
        """An ONNX model and the external-data files it refers to."""
        if path is None:
            return self
        self.read(path, what)
        p = Path(path)
        if p.suffix.lower() == ".onnx" and p.is_file():
            for data in external_data_files(p):
                self.read(data, f"the external data of {p.name}")
        return self

    # ---- what it writes ----------------------------------------------------------------------
    def write(self, path: Optional[PathLike], what: str = "output", folder: bool = False,
              make_parents: bool = False) -> "PathGuard":
        """A file (or, with ``folder``, a folder) the command creates or replaces."""
        if path is not None:
            p = Path(path)
            self.writes.append(_Entry(p, what, _resolve(p, what), folder=folder, make_parents=make_parents))
        return self

    def write_model(self, path: Optional[PathLike], what: str = "output") -> "PathGuard":
        """An ONNX model and the ``OUT.data`` file it is saved with when over protobuf's limit."""
        if path is not None:
            p = Path(path)
            self.write(p, what)
            self.write(p.with_name(p.name + ".data"), f"the external data of {what} ({p.name}.data)")
        return self

    def write_json(self, json_path: Optional[str]) -> "PathGuard":
        """The ``--json`` target (None and '-' write no file)."""
        if json_path and json_path != "-":
            self.write(json_path, "--json")
        return self

    # ---- the check ---------------------------------------------------------------------------
    def check(self) -> None:
        """Raise InputError for the first overlap or unwritable place; do nothing otherwise."""
        for w in self.writes:
            for r in self.reads:
                _check_overlap(w, r)
        for i, a in enumerate(self.writes):
            for b in self.writes[i + 1:]:
                _check_two_writes(a, b)
        for w in self.writes:
            _check_place(w)


def _check_overlap(w: _Entry, r: _Entry) -> None:
    if w.real == r.real or _same_file(w.path, r.path):
        raise InputError(f"{w.what} {w.path} would overwrite {r.what} {r.path}", hint="give another output path")
    if r.real.is_dir() and _inside(w.real, r.real):
        raise InputError(f"{w.what} {w.path} lies inside {r.what} {r.path}", hint="write it somewhere else")
    if w.folder and _inside(r.real, w.real):
        raise InputError(f"{w.what} {w.path} would replace {r.what} {r.path}, which lies inside it",
                         hint="give a new folder")


def _check_two_writes(a: _Entry, b: _Entry) -> None:
    if a.real == b.real:
        raise InputError(f"{a.what} and {b.what} are the same path {b.path}", hint="give them different paths")
    for outer, inner in ((a, b), (b, a)):
        if outer.folder and _inside(inner.real, outer.real):
            raise InputError(f"{inner.what} {inner.path} lies inside {outer.what} {outer.path}",
                             hint="write it somewhere else")


def _check_place(w: _Entry) -> None:
    try:
        if w.folder:
            if w.path.exists() and not w.path.is_dir() and not w.path.is_symlink():
                return  # replacing a file by a folder is the command's decision (deploy --force)
            check_output_folder(w.path.parent if str(w.path.parent) else Path("."), w.path)  # built beside, renamed
        elif w.make_parents and not w.path.parent.exists():
            parent = w.path.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            check_output_folder(parent, w.path)  # the command creates the folders in between
        else:
            check_output_place(w.path)
    except InputError as exc:
        if w.what == "output":
            raise
        raise InputError(f"{w.what}: {exc.message}", hint=exc.hint) from None


__all__ = ["PathGuard"]
