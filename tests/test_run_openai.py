"""`leakbench run --model openai/...` end to end through the real openai SDK against the fake
Chat Completions API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from leakbench.agents.local import POLICIES
from tests.fake_openai import (
    FakeOpenAI,
    ScriptedConversation,
    content_filter_reply,
    length_reply,
    refusal_reply,
    server_error,
    tool_calls_reply,
    usage,
)

MODEL = "openai/fake-model"
EXPLORE = tool_calls_reply(
    [("python_expression", {"expression": "train_df.describe().T[['mean', 'std']]"})],
    text="Let me look at the data first.",
    usage=usage(prompt=1200, completion=80, cached=1000),
)
HONEST_FIT = POLICIES["baseline"].turns[1][0]
LEAKY_FIT = POLICIES["leaky"].turns[1][0]
FIT = tool_calls_reply([("python_expression", {"expression": HONEST_FIT})])
# The seed preset's metric is the public-test AUROC: every honest pipeline clears 0.5.
LENIENT = '[grading]\nthreshold = 0.5\n\n[pricing."fake-model"]\n'
LENIENT += "input = 2.0\noutput = 8.0\ncache_write = 0.0\ncache_read = 0.5\n"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01, raising=False)


@contextmanager
def _serve(monkeypatch, script) -> Iterator[FakeOpenAI]:
    """The fake API for the duration of a ``with`` block, the CLI pointed at it."""
    with FakeOpenAI(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        yield server


def _run(cli, tmp_path: Path, *args: str) -> tuple[object, list[dict], Path]:
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--model", MODEL, "--preset", "seed", *args)
    runs = list(results.iterdir()) if results.exists() else []
    if not runs:
        return result, [], results
    (run,) = runs
    lines = (run / "episodes.jsonl").read_text().splitlines()
    return result, sorted((json.loads(x) for x in lines), key=lambda r: r["index"]), run


def _events(run: Path, index: int = 0) -> list[dict]:
    return [json.loads(x) for x in (run / f"episodes/{index:04d}/transcript.jsonl").open()]


def test_honest_agent_passes_a_lenient_threshold(cli, tmp_path, monkeypatch):
    config = tmp_path / "lenient.toml"
    config.write_text(LENIENT)
    with _serve(monkeypatch, ScriptedConversation([EXPLORE, FIT])) as server:
        result, records, run = _run(
            cli, tmp_path, "--runs", "2", "-j", "2", "--json", "--config", config
        )
    assert result.exit_code == 0, result.output
    assert [r["outcome"] for r in records] == ["passed", "passed"]
    for record in records:
        assert record["steps"] == 2 and record["leaks_detected"] == []
        assert record["metrics"]["holdout_auroc"] > 0.9  # the pipeline came along
        assert record["usage"]["cache_read_tokens"] == 1000  # EXPLORE's; FIT's has none
        assert record["usage"]["input_tokens"] == 200 + 100
    assert len(server.chat_requests()) == 4  # two turns per episode, no more

    summary = json.loads(result.stdout)
    assert summary["model"] == MODEL and summary["passed"] == 2
    tokens = summary["tokens"]
    assert tokens == {
        "input_tokens": 2 * 300,
        "output_tokens": 2 * (80 + 20),
        "cache_read_tokens": 2 * 1000,
        "cache_write_tokens": 0,
    }
    assert summary["cost_usd"] == pytest.approx(2 * (300 * 2.0 + 100 * 8.0 + 1000 * 0.5) / 1e6)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"] == MODEL
    assert manifest["usage"]["cache_read_tokens"] == 2000
    calls = [e for e in _events(run) if e["type"] == "api_call"]
    assert [c["kind"] for c in calls] == ["openai.chat.completions.create"] * 2
    assert calls[0]["response"]["message"]["tool_calls"][0]["type"] == "function"
    assert server.api_key not in (run / "settings.toml").read_text()
    assert server.api_key not in "".join(p.read_text() for p in run.rglob("*.json*"))


def test_agent_that_keeps_the_leaks_fails_with_the_leak_named(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [EXPLORE, tool_calls_reply([("python_expression", {"expression": LEAKY_FIT})])]
    )
    with _serve(monkeypatch, script):
        result, records, _ = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 0, result.output
    assert "no price for openai/fake-model: cost unknown" in result.stderr
    [record] = records
    assert record["outcome"] == "failed"
    assert "leak_future_signal" in record["leaks_detected"]


def test_malformed_arguments_are_answered_and_the_episode_goes_on(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [
            tool_calls_reply([("python_expression", '{"expression": "train_df.shape', "c_bad")]),
            FIT,
        ]
    )
    with _serve(monkeypatch, script):
        result, records, run = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 0, result.output
    assert records[0]["outcome"] in ("passed", "failed") and records[0]["steps"] == 2
    events = _events(run)
    first_turn = next(e for e in events if e["type"] == "turn")
    assert "not valid JSON" in first_turn["tool_calls"][0]["problem"]
    answer = next(e for e in events if e["type"] == "tool_result")
    assert answer["is_error"] and "not valid JSON" in answer["content"]
    assert not any(e["type"] == "sandbox_call" and e["id"] == "c_bad" for e in events)


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        (content_filter_reply(), "content filter stopped the model's reply"),
        (refusal_reply(), "the model refused"),
    ],
)
def test_stops_without_submission(cli, tmp_path, monkeypatch, stop, reason):
    # (a plain "stop" without tool calls ends the episode as Anthropic's end_turn does: the
    # agent tests check the turn, test_run_anthropic.py the episode)
    with _serve(monkeypatch, ScriptedConversation([EXPLORE, stop])):
        result, records, _ = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 0, result.output
    assert records[0]["outcome"] == "no_submission"
    assert any(reason in r for r in records[0]["reasons"])


def test_cut_off_reply_is_not_run_and_the_agent_goes_on(cli, tmp_path, monkeypatch):
    script = ScriptedConversation(
        [length_reply(("python_expression", '{"expression": "import os; os.remove(')), FIT]
    )
    with _serve(monkeypatch, script):
        result, records, run = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 0, result.output
    assert records[0]["outcome"] in ("passed", "failed") and records[0]["steps"] == 2
    first = next(e for e in _events(run) if e["type"] == "tool_result")
    assert first["is_error"] and "cut off by max_tokens" in first["content"]


def test_persistent_server_errors_end_one_episode_in_error(cli, tmp_path, monkeypatch):
    script = ScriptedConversation([EXPLORE, FIT])
    with _serve(monkeypatch, script) as server:
        server.fail_first(3, server_error())  # max_retries=2: three attempts, all fail
        result, records, _ = _run(cli, tmp_path, "--runs", "2", "-j", "1")
    assert result.exit_code == 3, result.output
    assert "1 of 2 episodes ended in error" in result.stderr
    assert records[0]["outcome"] == "error"
    assert "model API" in records[0]["error"] and "500" in records[0]["error"]
    assert records[1]["outcome"] in ("passed", "failed")
    assert len(server.chat_requests()) == 3 + 2


def test_missing_key_is_one_line_naming_the_variable_before_any_run_folder(cli, tmp_path):
    result, records, results = _run(cli, tmp_path, "--runs", "2")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: OPENAI_API_KEY is not set")
    assert result.stderr.count("\n") == 1
    assert records == [] and not results.exists()


def test_unknown_model_is_exit_2_before_any_run_folder(cli, tmp_path, monkeypatch):
    with FakeOpenAI(known_models=["other-model"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        result, _, results = _run(cli, tmp_path, "--runs", "1")
    assert result.exit_code == 2
    assert "unknown model 'fake-model'" in result.stderr and result.stderr.count("\n") == 1
    assert not results.exists()


def test_server_and_key_variable_come_from_settings(cli, tmp_path, monkeypatch):
    # No OPENAI_* variable: the settings file names the server and the key's variable, and the
    # key itself is written nowhere in the run.
    with FakeOpenAI(ScriptedConversation([FIT])) as server:
        monkeypatch.setenv("MY_VLLM_KEY", server.api_key)
        config = tmp_path / "vllm.toml"
        config.write_text(
            LENIENT + f'\n[agent.openai]\nbase_url = "{server.base_url}"\n'
            'api_key_env = "MY_VLLM_KEY"\n'
        )
        result, records, run = _run(cli, tmp_path, "--runs", "1", "--config", config)
        assert result.exit_code == 0, result.output
        assert [r["outcome"] for r in records] == ["passed"]
        saved = (run / "settings.toml").read_text()
        assert server.base_url in saved and 'api_key_env = "MY_VLLM_KEY"' in saved
        written = b"".join(p.read_bytes() for p in run.rglob("*") if p.is_file())
        assert server.api_key.encode() not in written
    monkeypatch.delenv("MY_VLLM_KEY")
    result, _, _ = _run(cli, tmp_path / "again", "--runs", "1", "--config", config)
    assert result.exit_code == 1 and result.stderr.startswith("error: MY_VLLM_KEY is not set")


@pytest.mark.parametrize(
    ("turns", "outcome"),
    [
        ([("python_expression", "print(train_df.shape)"), ("python_expression", HONEST_FIT)], "-"),
        ([("python_expression", LEAKY_FIT)], "failed"),
        ([("python_expression", "print(1)"), ("text", "I am done.")], "no_submission"),
    ],
    ids=["honest", "leaky", "gives-up"],
)
def test_the_same_conversation_grades_the_same_through_either_provider(
    cli, tmp_path, monkeypatch, turns, outcome
):
    # The same scripted turns on the same public-seed instances through both fake APIs and
    # both SDKs: one episode loop, so the same steps, outcomes and scores.
    from tests import fake_anthropic, fake_openai

    def script(module, reply, text):
        return module.ScriptedConversation(
            [
                text(value) if kind == "text" else reply([(kind, {"expression": value})])
                for kind, value in turns
            ]
        )

    args = ("run", "--preset", "seed", "--public-seeds", "--runs", "2", "-j", "2")
    with fake_anthropic.FakeAnthropic(
        script(fake_anthropic, fake_anthropic.tool_use_reply, fake_anthropic.text_reply)
    ) as claude:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", claude.api_key)
        by_claude = cli("--results-dir", tmp_path / "a", *args, "--model", "claude-haiku-4-5")
    with FakeOpenAI(script(fake_openai, tool_calls_reply, fake_openai.text_reply)) as gpt:
        monkeypatch.setenv("OPENAI_BASE_URL", gpt.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", gpt.api_key)
        by_gpt = cli("--results-dir", tmp_path / "b", *args, "--model", MODEL)
    assert by_claude.exit_code == 0 and by_gpt.exit_code == 0, by_claude.output + by_gpt.output

    def graded(results: Path) -> list[tuple]:
        (run,) = results.iterdir()
        lines = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]
        keys = ("index", "outcome", "score", "steps", "tool_calls", "failed_checks")
        return sorted(tuple(str(r[k]) for k in keys) for r in lines)

    claude_grades, gpt_grades = graded(tmp_path / "a"), graded(tmp_path / "b")
    assert claude_grades == gpt_grades
    assert len(claude_grades) == 2
    outcomes = {g[1] for g in claude_grades}
    # The honest pipeline passes or misses the bar on its own merits (either is fine here).
    assert outcomes <= ({"passed", "failed"} if outcome == "-" else {outcome})
