"""The recorded board output travels with the repository: every kind the tests replay is a folder
of tests/fixtures (not the workspace's ../shared/fixtures), and every file there has its source row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixtures import ROOT, recorded

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["detect", "tegrastats", "trtexec", "trtexec-json"])
def test_each_kind_lives_in_the_repository(kind):
    folder = recorded(kind)
    assert folder == ROOT / kind and folder.is_dir()
    assert REPO in folder.resolve().parents
    data = sorted(p.name for p in folder.iterdir() if p.name != "SOURCES.md")
    assert data, f"no recorded files in {folder}"
    sources = (folder / "SOURCES.md").read_text()
    named = set(re.findall(r"^\| *([^|*]+?) *\|", sources, re.M))
    for name in data:  # a row per file (the DERIVED times file is described by its pattern)
        assert name in named or ("DERIVED" in name and "*-times.first200.DERIVED.json" in sources), name


def test_no_test_looks_for_the_workspace_copy():
    offenders = []
    for path in (REPO / "tests").rglob("*.py"):
        if path.parent == ROOT or path == Path(__file__).resolve():
            continue
        text = path.read_text()
        if re.search(r"[\"']shared[\"']\s*\)?\s*/\s*[\"']fixtures|shared/fixtures", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
