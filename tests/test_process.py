"""The command line process: what it does before the command line is imported (cli/process.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leakbench.cli import process


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["run", "--runs", "1"], "run"),
        (["-q", "--results-dir", "run", "report"], "report"),  # a folder named "run"
        (["-c", "a.toml", "--config", "b.toml", "-v", "run"], "run"),
        (["--config=run.toml", "run"], "run"),
        (["--no-color"], None),
        ([], None),
    ],
)
def test_command_name_skips_global_options_and_their_values(args, command):
    assert process._command_name(args) == command


def test_the_entry_point_imports_neither_pandas_nor_typer_before_it_starts_the_zygote():
    # What ``main`` imports before ``start_sandbox_early`` is on the critical path of every run:
    # the zygote's imports overlap only what comes after.
    code = (
        "import sys, leakbench.cli, leakbench.sandbox.pool; "
        "print(sorted({'pandas', 'numpy', 'typer', 'rich'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ["report"],
        ["run", "--help"],
        ["-h", "run"],
        ["settings", "run"],
        ["run", "--executor", "ray"],  # the nodes start their own sandboxes
        ["run", "--executor=ray", "--runs", "5"],
        ["run", "--resume", "RUN", "--ray-address", "10.0.0.5:6379"],
    ],
)
def test_no_early_zygote_but_for_a_local_run(args):
    process.start_sandbox_early(args)
    assert process.take_early_pool() is None


def test_a_run_gets_the_zygote_launched_before_the_command_line_loaded():
    process.start_sandbox_early(["-q", "run", "--model", "local/baseline"])
    pool = process.take_early_pool()
    assert pool is not None
    try:
        assert process.take_early_pool() is None  # handed out once
        assert pool._proc is not None
        launched = pool._proc.pid
        pool.start()  # the launched zygote answers: the same process, not a second launch
        assert pool.isolation in ("full", "reduced")
        assert pool._proc.pid == launched and pool._proc.poll() is None
    finally:
        pool.close()
    assert pool._proc is None
