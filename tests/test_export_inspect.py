"""`leakbench export --format inspect`: the log Inspect reads back holds what the run holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leakbench.agents.local import POLICIES
from leakbench.cli import app
from leakbench.store.files import read_jsonl
from leakbench.store.runs import RunDir
from tests.fake_anthropic import FakeAnthropic, ScriptedConversation, malformed, tool_use_reply

MODEL = "anthropic/claude-haiku-4-5"
EXPLORE = tool_use_reply(
    [("python_expression", {"expression": "print(train_df.shape)"})],
    text="Let me look at the data first.",
    usage={"input_tokens": 120, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 7},
)
FIT = tool_use_reply([("python_expression", {"expression": POLICIES["baseline"].turns[1][0]})])
INSTALL_LINE = "error: exporting an Inspect log needs inspect_ai: pip install 'leakbench[inspect]'"


class _FailOnce:
    """The first request for this turn gets a malformed body (the episode ends in error)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failed = False

    def __call__(self, body):
        with self.lock:
            if not self.failed:
                self.failed = True
                return malformed()
        return FIT


def _invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, RunDir]:
    """A scripted-policy run, and a Claude run against the fake API whose first episode ends
    in error (a malformed reply on its second turn) and whose others pass or fail."""
    home = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("LEAKBENCH_", "ANTHROPIC_")):
                mp.delenv(name)
        mp.setenv("NO_COLOR", "1")
        mp.setenv("HOME", str(home))
        mp.chdir(home)
        local = _invoke("--results-dir", home / "local", "run", "--runs", "2")
        assert local.exit_code == 0, local.output
        script = ScriptedConversation([EXPLORE, _FailOnce()])
        with FakeAnthropic(script) as server:
            mp.setenv("ANTHROPIC_BASE_URL", server.base_url)
            mp.setenv("ANTHROPIC_API_KEY", server.api_key)
            claude = _invoke(
                "--results-dir", home / "claude", "run", "--model", MODEL, "--runs", "3", "-j", "1"
            )
        assert claude.exit_code == 3, claude.output  # an episode in error
    found = {name: list((home / name).iterdir()) for name in ("local", "claude")}
    return {name: RunDir.open(paths[0]) for name, paths in found.items()}


def _export(cli, run: RunDir, out: Path, *args: str) -> Path:
    result = cli("--results-dir", run.path.parent, "export", run.run_id[:16], "--out", out, *args)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert "inspect view --log-dir" in result.stderr
    return Path(line)


def _events(run: RunDir, index: int) -> list[dict]:
    return list(read_jsonl(run.episode_dir(index) / "transcript.jsonl"))


def _check_samples(log, run: RunDir) -> None:
    """Every sample against its episode: verdict, metadata, and the chat against the
    transcript event by event."""
    records = run.records()
    assert [s.id for s in log.samples] == [r.index for r in records]
    for sample, record in zip(log.samples, records, strict=True):
        assert sample.epoch == 1
        assert sample.metadata["seed"] == record.seed
        assert sample.metadata["outcome"] == record.outcome
        assert sample.metadata["score"] == record.score
        assert sample.metadata["threshold"] == record.threshold
        assert sample.metadata["metric"] == record.metric
        if record.outcome == "error":
            assert sample.scores is None
            assert sample.error.message == record.error
        else:
            score = sample.scores["leakbench"]
            assert score.value == ("C" if record.passed else "I")
            assert score.answer == record.outcome
            assert score.metadata["metrics"] == record.metrics
            assert score.metadata["failed_checks"] == record.failed_checks
            assert score.metadata["leaks_detected"] == record.leaks_detected
            assert sample.error is None
        roles, calls, results = [], [], []
        for event in _events(run, record.index):
            if event["type"] == "begin":
                roles += ["system", "user"]
                assert sample.input == event["task"]
            elif event["type"] == "turn":
                roles.append("assistant")
                calls.append([(c["id"], c["name"], c["input"]) for c in event["tool_calls"]])
            elif event["type"] == "tool_result":
                roles.append("tool")
                results.append((event["id"], event["content"]))
        messages = sample.messages
        assert [m.role for m in messages] == roles
        assistant = [m for m in messages if m.role == "assistant"]
        assert [
            [(c.id, c.function, c.arguments) for c in m.tool_calls or []] for m in assistant
        ] == calls
        assert [(m.tool_call_id, m.text) for m in messages if m.role == "tool"] == results
        if assistant:
            assert sample.output.message.tool_calls == assistant[-1].tool_calls


def test_local_run_reads_back_as_the_run(cli, runs, tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    run = runs["local"]
    path = _export(cli, run, tmp_path / "logs")
    assert path.parent == tmp_path / "logs" and path.suffix == ".eval"
    assert path.name.endswith(f"_leakbench-default_{path.stem.rsplit('_', 1)[1]}.eval")
    log = read_eval_log(str(path))
    manifest = run.manifest
    assert log.status == "success" and log.error is None
    assert log.eval.task == "leakbench/default"
    assert log.eval.model == manifest.model == "local/baseline"
    assert log.eval.run_id == manifest.run_id
    assert log.eval.created.startswith(manifest.created_at[:19])
    assert log.eval.task_args["run_id"] == manifest.run_id
    instance = json.loads((run.episode_dir(0) / "instance.json").read_text())
    assert log.eval.task_args["settings_hash"] == instance["settings_hash"]
    assert len(log.samples) == 2
    _check_samples(log, run)
    for sample in log.samples:
        assert sample.model_usage == {}  # a scripted policy counts no tokens
    records = run.records()
    (score,) = log.results.scores
    passed = sum(r.passed for r in records)
    assert score.metrics["accuracy"].value == pytest.approx(passed / 2)
    assert score.metrics["mean_score"].value == pytest.approx(sum(r.score for r in records) / 2)
    assert score.metadata["passed"] == passed and score.unscored_samples == 0


def test_claude_run_carries_text_usage_and_the_error(cli, runs, tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    run = runs["claude"]
    log = read_eval_log(str(_export(cli, run, tmp_path)))
    records = run.records()
    assert [r.outcome == "error" for r in records] == [True, False, False]
    assert log.eval.model == MODEL
    assert log.eval.model_generate_config.max_tokens == run.settings().agent.max_tokens
    # some episodes ended in error: an Inspect "error" log that says how to run them again
    assert run.manifest.status == "completed_with_errors"
    assert log.status == "error"
    assert "1 episode(s) ended in error" in log.error.message
    assert f"leakbench run --resume {run.run_id}" in log.error.message
    _check_samples(log, run)
    for sample, record in zip(log.samples, records, strict=True):
        assert sample.messages[2].text == "Let me look at the data first."
        usage = sample.model_usage[MODEL]
        assert usage.input_tokens == record.usage["input_tokens"] > 0
        assert usage.output_tokens == record.usage["output_tokens"] > 0
        assert usage.input_tokens_cache_read == record.usage["cache_read_tokens"] > 0
        assert usage.input_tokens_cache_write == record.usage["cache_write_tokens"] > 0
        assert usage.total_tokens == sum(
            record.usage[k]
            for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        )
        assert usage.total_cost == pytest.approx(record.usage["cost_usd"])
    assert log.samples[0].error.message.startswith("model API: ")
    (score,) = log.results.scores
    graded = [r for r in records if r.outcome != "error"]
    assert score.scored_samples == 2 and score.unscored_samples == 1
    assert score.metrics["accuracy"].value == pytest.approx(sum(r.passed for r in graded) / 2)
    assert log.results.total_samples == 3 and log.results.completed_samples == 2
    total = log.stats.model_usage[MODEL]
    assert total.input_tokens == run.manifest.usage["input_tokens"]


def test_inspect_log_dump_reads_the_export(cli, runs, tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    run = runs["claude"]
    path = _export(cli, run, tmp_path)
    # the CLI inspect_ai installed beside this Python (not some other one on PATH)
    script = Path(sys.executable).with_name("inspect")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "inspect_ai"]
    done = subprocess.run(
        [*command, "log", "dump", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    dumped = json.loads(done.stdout)
    assert dumped["eval"]["task"] == "leakbench/default"
    assert [s["id"] for s in dumped["samples"]] == [0, 1, 2]
    assert dumped["samples"][1]["scores"]["leakbench"]["answer"] == run.records()[1].outcome
    # the JSON format holds the same log; exporting again replaces it (same bytes, no temp file)
    as_json = _export(cli, run, tmp_path, "--log-format", "json")
    assert as_json.suffix == ".json" and as_json.stem == path.stem
    first = as_json.read_bytes()
    assert read_eval_log(str(as_json)).model_dump(exclude={"location"}) == read_eval_log(
        str(path)
    ).model_dump(exclude={"location"})
    assert _export(cli, run, tmp_path, "--log-format", "json") == as_json
    assert as_json.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, as_json.name])


def test_interrupted_run_is_a_cancelled_log(runs, tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    from leakbench.report.inspect_log import export_inspect

    copy = shutil.copytree(runs["local"].path, tmp_path / runs["local"].run_id)
    run = RunDir.open(copy)
    run.write_manifest(status="interrupted")
    log = read_eval_log(str(export_inspect(run, tmp_path / "logs", log_format="json")))
    assert log.status == "cancelled" and log.error is None
    assert len(log.samples) == 2


def test_without_inspect_ai_one_line_says_how_to_install(cli, monkeypatch):
    # None in sys.modules makes ``import inspect_ai`` raise ImportError, as if not installed
    for name in [m for m in sys.modules if m.split(".")[0] == "inspect_ai"] + ["inspect_ai"]:
        monkeypatch.setitem(sys.modules, name, None)
    result = cli("export", "any-run")
    assert result.exit_code == 1
    assert result.stderr.strip() == INSTALL_LINE
    assert result.stdout == "" and "Traceback" not in result.output


def test_only_the_inspect_format(cli):
    result = cli("export", "any-run", "--format", "csv")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: unknown export format 'csv'")


def test_leakbench_starts_without_importing_inspect_ai():
    code = "import sys, leakbench.cli.root; print('inspect_ai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
