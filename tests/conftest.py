"""Shared test helpers. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import json
import os
from typing import List, Optional

import pytest
from typer.testing import CliRunner


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr if hasattr(result, "stderr") else ""
        self.output = result.output
        self.exception = result.exception

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli():
    """Run the edgekit CLI in-process: ``cli(["devices", "--json", "-"])`` -> CliResult."""
    from edgekit.cli.main import app

    runner = CliRunner()

    def invoke(args: List[str], env: Optional[dict] = None) -> CliResult:
        e = {"EDGEKIT_DEBUG": "0", "COLUMNS": "200"}
        if env:
            e.update(env)
        return CliResult(runner.invoke(app, [str(a) for a in args], env=e, catch_exceptions=True))

    return invoke


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Two cores on CI: keep numeric libraries from oversubscribing when tests run.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
