"""Shared fixtures: a CLI runner with plain output and a private results folder per test."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from leakbench.cli import app


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # No test may read the developer's settings, key or results.
    for name in list(os.environ):
        if name.startswith(("LEAKBENCH_", "ANTHROPIC_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], **kwargs)

    return invoke
