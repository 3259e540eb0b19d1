"""`leakbench run` end to end through the real anthropic SDK against the fake Messages API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import pytest

from leakbench.agents.local import POLICIES
from tests.fake_anthropic import (
    FakeAnthropic,
    ScriptedConversation,
    context_overflow,
    dropped,
    malformed,
    max_tokens_reply,
    overloaded,
    rate_limited,
    server_error,
    slow,
    stop_reply,
    text_reply,
    tool_use_reply,
)

EXPLORE = tool_use_reply(
    [("python_expression", {"expression": "train_df.describe().T[['mean', 'std']]"})],
    text="Let me look at the data first.",
)
HONEST_FIT = POLICIES["baseline"].turns[1][0]
LEAKY_FIT = POLICIES["leaky"].turns[1][0]


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(anthropic._base_client, "INITIAL_RETRY_DELAY", 0.01, raising=False)


@contextmanager
def _serve(monkeypatch, script) -> Iterator[FakeAnthropic]:
    """The fake API for the duration of a ``with`` block, the CLI pointed at it."""
    with FakeAnthropic(script) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", server.api_key)
        yield server


def _run(cli, tmp_path: Path, *args: str) -> tuple[object, list[dict], Path]:
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--model", "claude-haiku-4-5", *args)
    runs = [p for p in results.iterdir()] if results.exists() else []
    if not runs:
        return result, [], results
    (run,) = runs
    lines = (run / "episodes.jsonl").read_text().splitlines()
    return result, sorted((json.loads(x) for x in lines), key=lambda r: r["index"]), run


def test_honest_agent_passes_or_fails_by_its_auroc(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [
            EXPLORE,
            tool_use_reply([("python_expression", {"expression": HONEST_FIT})]),
            text_reply("Submitted."),
        ]
    )
    with _serve(monkeypatch, script) as server:
        result, records, run = _run(cli, tmp_path, "--preset", "seed", "--runs", "3", "-j", "3")
    assert result.exit_code == 0, result.output
    assert len(records) == 3
    for record in records:
        expected = "passed" if record["score"] >= 0.9471 else "failed"
        assert record["outcome"] == expected
        assert record["leaks_detected"] == [] and record["steps"] == 2
        assert record["usage"]["input_tokens"] > 0 and record["usage"]["cost_usd"] > 0
        if expected == "failed":
            assert record["reasons"] == [f"auroc {record['score']:.4f} < threshold 0.9471"]
    assert len(server.message_requests()) == 6  # two turns per episode, no more
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"] == "anthropic/claude-haiku-4-5"  # one spelling per model
    # the transcript holds every request and response with content blocks
    events = [json.loads(x) for x in (run / "episodes/0000/transcript.jsonl").open()]
    calls = [e for e in events if e["type"] == "api_call"]
    assert len(calls) == 2
    assert calls[0]["response"]["content"][1]["type"] == "tool_use"
    assert any(e["type"] == "tool_result" and "mean" in e["content"] for e in events)
    # prompt caching on the growing history
    body = server.message_bodies()[-1]
    assert any(
        isinstance(block, dict) and block.get("cache_control")
        for message in body["messages"]
        for block in (message["content"] if isinstance(message["content"], list) else [])
    )
    assert "ANTHROPIC_API_KEY" not in (run / "settings.toml").read_text()
    assert server.api_key not in "".join(p.read_text() for p in run.rglob("*.json*"))


def test_agent_that_keeps_the_leaks_fails_with_the_leak_named(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [EXPLORE, tool_use_reply([("python_expression", {"expression": LEAKY_FIT})])]
    )
    with _serve(monkeypatch, script):
        result, records, _ = _run(cli, tmp_path, "--runs", "2")
    assert result.exit_code == 0, result.output
    for record in records:
        assert record["outcome"] == "failed"
        assert "leak_future_signal" in record["leaks_detected"]
        assert any("uses leak column leak_future_signal" in r for r in record["reasons"])


def test_json_submit_tool_with_variable_names(cli, tmp_path, monkeypatch):
    fit = HONEST_FIT.replace('submit_answer({"y_pred_proba": proba, "pipeline": pipe})', "")
    script = ScriptedConversation(
        [
            tool_use_reply(
                [
                    ("python_expression", {"expression": fit}),
                    ("submit_answer", {"answer": {"y_pred_proba": "proba", "pipeline": "pipe"}}),
                ]
            )
        ]
    )
    with _serve(monkeypatch, script):
        result, records, _ = _run(cli, tmp_path, "--preset", "seed", "--runs", "1")
    assert result.exit_code == 0, result.output
    assert records[0]["outcome"] in ("passed", "failed") and records[0]["tool_calls"] == 2
    assert records[0]["metrics"]["holdout_auroc"] > 0.9  # the pipeline came along


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        (stop_reply("refusal"), "the model refused"),
        (context_overflow(), "outgrew the model's context window"),
        (text_reply("I think we are done."), "ended its turn without submitting"),
    ],
)
def test_stops_without_submission(cli, tmp_path, monkeypatch, stop, reason):
    with _serve(monkeypatch, ScriptedConversation([EXPLORE, stop])):
        result, records, _ = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 0, result.output
    assert records[0]["outcome"] == "no_submission"
    assert any(reason in r for r in records[0]["reasons"])


def test_cut_off_tool_call_is_not_run_and_the_agent_is_told(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [
            max_tokens_reply(("python_expression", {"expression": "import os; os.remove("})),
            tool_use_reply([("python_expression", {"expression": HONEST_FIT})]),
        ]
    )
    with _serve(monkeypatch, script):
        result, records, run = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 0, result.output
    assert records[0]["outcome"] in ("passed", "failed") and records[0]["steps"] == 2
    results = [json.loads(x) for x in (run / "episodes/0000/transcript.jsonl").open()]
    first = next(e for e in results if e["type"] == "tool_result")
    assert first["is_error"] and "cut off by max_tokens" in first["content"]


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (rate_limited(), "retried"),
        (overloaded(), "retried"),
        (server_error(), "retried"),
        (slow(600.0), "retried"),  # only the client's timeout ends it
        (dropped(), "retried"),
        (malformed(), "error"),
    ],
)
def test_fault_modes_retry_or_end_as_error(cli, tmp_path, monkeypatch, fault, outcome):
    if fault.kind == "slow":
        # Short enough to keep the test quick, long enough that no prompt reply on a busy
        # machine times out too: the request count below is exact.
        monkeypatch.setenv("LEAKBENCH_RUN__REQUEST_TIMEOUT_S", "10")
    script = ScriptedConversation(
        [EXPLORE, tool_use_reply([("python_expression", {"expression": HONEST_FIT})])]
    )
    with _serve(monkeypatch, script) as server:
        server.fail_first(1, fault)
        result, records, _ = _run(cli, tmp_path, "--runs", "2", "-j", "1")
    # an episode in error makes the run exit 3 (resume runs it again)
    assert result.exit_code == (0 if outcome == "retried" else 3), result.output
    assert [r["index"] for r in records] == [0, 1]  # every episode accounted for
    first = records[0]
    if outcome == "retried":
        assert first["outcome"] in ("passed", "failed"), first
        assert len(server.message_requests()) == 5  # one failed attempt, then 2 turns each
    else:
        assert first["outcome"] == "error" and "model API" in first["error"]
        assert records[1]["outcome"] in ("passed", "failed")


def test_persistent_failure_is_an_error_episode_and_resume_reruns_it(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [EXPLORE, tool_use_reply([("python_expression", {"expression": HONEST_FIT})])]
    )
    with _serve(monkeypatch, script) as server:
        server.fail_first(3, server_error())  # max_retries=2: three attempts, all fail
        result, records, run = _run(cli, tmp_path, "--runs", "3", "-j", "1")
        assert result.exit_code == 3, result.output
        assert "1 of 3 episodes ended in error" in result.stderr
        assert [r["outcome"] == "error" for r in records] == [True, False, False]
        assert "500" in records[0]["error"]
        resumed = cli("--results-dir", tmp_path / "results", "run", "--resume", run.name)
    assert resumed.exit_code == 0, resumed.output
    lines = (run / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert all(json.loads(x)["outcome"] != "error" for x in lines)


def test_rejected_key_is_one_clear_error_before_any_episode(cli, tmp_path, monkeypatch):
    with _serve(monkeypatch, ScriptedConversation([EXPLORE])) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
        result, records, results = _run(cli, tmp_path, "--runs", "2")
    assert result.exit_code == 1
    assert "sk-ant-wrong" not in result.output and result.stderr.count("\n") == 1
    assert records == [] and not results.exists()
    assert server.message_requests() == []
