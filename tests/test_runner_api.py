"""Runs from Python through the core (``leakbench.runner.run``), without the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from leakbench.errors import LeakbenchError
from leakbench.runner.run import Runner, run
from leakbench.sandbox import SandboxLimits, SandboxPool
from leakbench.settings import SettingsSources, resolve
from leakbench.store.runs import RunDir


def _settings(tmp_path, **flags):
    given = {"agent.model": "local/baseline", "run.runs": 3, "run.results_dir": str(tmp_path)}
    return resolve(SettingsSources(preset="default", environ={}, flags={**given, **flags}))


def test_the_core_runs_without_the_command_line(tmp_path):
    # A notebook or a trainer imports the core alone: no Typer, no rendering.
    code = f"""
import json, sys
from leakbench.runner.run import run
from leakbench.settings import SettingsSources, resolve
flags = {{"run.runs": 2, "run.results_dir": {str(tmp_path)!r}}}
result = run(resolve(SettingsSources(preset="default", environ={{}}, flags=flags)))
cli = sorted(m for m in sys.modules if m.startswith(("leakbench.cli", "typer", "rich")))
print(json.dumps({{"outcomes": [r.outcome for r in result.records], "cli": cli,
                  "status": result.run.manifest.status}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["cli"] == []
    assert got["status"] == "completed"
    assert len(got["outcomes"]) == 2 and set(got["outcomes"]) <= {"passed", "failed"}


def test_a_run_interrupted_at_start_up_is_marked_and_resume_finishes_it(tmp_path):
    settings = _settings(tmp_path)
    with pytest.raises(KeyboardInterrupt), Runner(settings) as runner:
        folder = runner.run.path
        raise KeyboardInterrupt
    interrupted = RunDir.open(folder)
    assert interrupted.manifest.status == "interrupted" and interrupted.records() == []
    key = interrupted.instance_key()

    result = run(interrupted.settings(), resume=interrupted)
    assert [r.index for r in result.records] == [0, 1, 2]
    finished = RunDir.open(folder)
    assert finished.manifest.status == "completed"
    assert finished.instance_key() == key  # the stored key, not a new one
    assert len(finished.records()) == 3
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_a_pool_passed_in_serves_several_runs_and_stays_open(tmp_path):
    pool = SandboxPool()
    try:
        first = run(_settings(tmp_path, **{"run.runs": 2}), pool=pool)
        second = run(_settings(tmp_path, **{"run.runs": 2, "task.seed": 2}), pool=pool)
        assert [r.seed for r in first.records] == [0, 1]
        assert [r.seed for r in second.records] == [2, 3]
        assert first.run.path != second.run.path
        with pool.open(*_frames(), SandboxLimits()) as session:  # still usable
            assert session.execute("print(train_df.shape[0])").output.strip() == "30"
    finally:
        pool.close()


def test_the_model_spelling_is_canonical_and_a_missing_key_makes_no_folder(tmp_path):
    runner = Runner(_settings(tmp_path, **{"agent.model": "local/baseline"}))
    assert runner.settings.agent.model == "local/baseline" and runner.client is None
    runner.pool.close()
    with pytest.raises(LeakbenchError, match="ANTHROPIC_API_KEY is not set"):
        Runner(_settings(tmp_path, **{"agent.model": "claude-haiku-4-5"}))
    with pytest.raises(LeakbenchError, match="OPENAI_API_KEY is not set"):
        Runner(_settings(tmp_path, **{"agent.model": "openai/some-model"}))
    assert list(tmp_path.iterdir()) == []


def _frames():
    import pandas as pd

    train = pd.DataFrame({"x": range(30), "y": [0, 1] * 15})
    return train, train.drop(columns="y").head(20)


def test_the_python_example_in_the_design_notes_runs(tmp_path):
    page = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", page, re.S)
    assert '"run.runs": 20' in block
    code = block.replace('"run.runs": 20', '"run.runs": 2')  # the same, shorter
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"[0-2] of 2 passed\n", out.stdout)
    (folder,) = (tmp_path / "results").iterdir()
    assert RunDir.open(folder).manifest.status == "completed"
