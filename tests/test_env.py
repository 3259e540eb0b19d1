"""leakbench.env: the episode as an environment (reset/step/reward), sync and asyncio."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leakbench.agents.local import POLICIES
from leakbench.env import (
    AsyncEnvironment,
    Environment,
    ToolCall,
    margin_reward,
    pass_reward,
    tool_calls_from,
)
from leakbench.grading.grade import Grade
from leakbench.runner.run import run
from leakbench.sandbox import SandboxPool
from leakbench.settings import SettingsSources, resolve


@pytest.fixture(scope="module")
def pool():
    with SandboxPool() as pool:
        yield pool


def _settings(preset="default", **flags):
    return resolve(SettingsSources(preset=preset, environ={}, flags=flags))


def _calls(policy: str, turn: int) -> list[dict]:
    """A local policy's turn as Anthropic-shaped tool_use blocks."""
    codes = POLICIES[policy].turns[turn]
    return [
        {"id": f"t{turn}_{i}", "name": "python_expression", "input": {"expression": c}}
        for i, c in enumerate(codes)
    ]


def _play(episode, policy: str):
    """Play a local policy's turns; the last step's result."""
    for turn in range(len(POLICIES[policy].turns)):
        result = episode.step(_calls(policy, turn))
        if result.done:
            return result
    return episode.step([], end="the policy ran out of turns")


def test_the_environment_grades_exactly_as_a_run_does(pool, tmp_path):
    # The same key and seeds: leakbench run and the environment give the same verdicts.
    settings = _settings(**{"run.runs": 3, "run.results_dir": str(tmp_path), "task.seed": 5})
    done = run(settings, pool=pool)
    key = done.run.instance_key()
    with Environment(settings, pool=pool, key=key) as env:
        for record in done.records:
            with env.reset(seed=record.seed) as episode:
                result = _play(episode, "baseline")
            assert result.done and result.grade is not None
            assert result.grade.outcome == record.outcome
            assert result.grade.score == pytest.approx(record.score, abs=1e-12)
            assert result.reward == (1.0 if record.passed else 0.0)
            assert episode.steps == record.steps


def test_reset_gives_prompts_and_both_tool_shapes_and_no_secret(pool):
    key = bytes(range(32))
    with Environment(_settings(), pool=pool, key=key) as env:
        episode = env.reset(seed=3)
        obs = episode.observation
        assert obs.seed == 3 and obs.max_steps == 20
        assert "train_df" in obs.task_prompt and obs.system_prompt
        assert [t["name"] for t in obs.tools] == ["python_expression", "submit_answer"]
        assert [t["function"]["name"] for t in obs.openai_tools] == [
            "python_expression",
            "submit_answer",
        ]
        assert obs.openai_tools[0]["function"]["parameters"] == obs.tools[0]["input_schema"]
        result = _play(episode, "baseline")
        seen = json.dumps([obs.system_prompt, obs.task_prompt, episode.transcript], default=str)
        assert key.hex() not in seen and str(int.from_bytes(key, "big")) not in seen
        assert result.done
        episode.close()
        # Without a fixed key, two environments draw different instances for the same seed.
    with Environment(_settings(), pool=pool) as a, Environment(_settings(), pool=pool) as b:
        shape = "print(round(float(train_df['num_0'].iloc[0]), 12))"
        call = [{"id": "c", "name": "python_expression", "input": {"expression": shape}}]
        with a.reset(seed=0) as x, b.reset(seed=0) as y:
            assert x.step(call).tool_results[0].content != y.step(call).tool_results[0].content


def test_bad_tool_calls_are_answered_and_the_episode_goes_on(pool):
    with Environment(_settings(), pool=pool) as env, env.reset() as episode:
        result = episode.step(
            [
                {"id": "a", "function": {"name": "python_expression", "arguments": '{"expr'}},
                {"id": "b", "name": "rm_rf", "input": {}},
                {"id": "c", "name": "python_expression", "input": "not an object"},
                {
                    "id": "d",
                    "type": "function",
                    "function": {"name": "python_expression", "arguments": '{"expression": "1+1"}'},
                },
            ]
        )
        assert not result.done
        a, b, c, d = result.tool_results
        assert a.is_error and "not valid JSON" in a.content
        assert b.is_error and "unknown tool 'rm_rf'" in b.content
        assert c.is_error and "must be an object" in c.content
        assert not d.is_error and d.content.strip() == "2"
        assert [r.call_id for r in result.tool_results] == ["a", "b", "c", "d"]


def test_an_episode_ends_at_its_end_or_its_step_limit_and_not_after(pool):
    with Environment(_settings(**{"agent.max_steps": 2}), pool=pool) as env:
        with env.reset() as episode:
            result = episode.step([], end="the agent ended its turn without submitting")
            assert result.done and result.grade.outcome == "no_submission"
            assert result.reward == 0.0 and episode.steps == 1
            assert result.grade.reasons == ["the agent ended its turn without submitting"]
            with pytest.raises(RuntimeError, match="after the episode ended"):
                episode.step([])
        with env.reset() as episode:
            assert not episode.step([]).done  # a turn cut off without a call goes on
            result = episode.step([])
            assert result.done and "step limit (2)" in result.end_reason
            assert result.grade.outcome == "no_submission"


def test_margin_reward_keeps_every_gate_absolute(pool):
    with Environment(_settings(), pool=pool, reward="margin") as env:
        with env.reset(seed=1) as honest:
            result = _play(honest, "baseline")
            grade = result.grade
            assert grade.gates_passed
            assert result.reward == pytest.approx(grade.threshold - grade.score)
        with env.reset(seed=1) as leaky:
            result = _play(leaky, "leaky")
            assert result.grade.outcome == "failed" and "leak" in result.grade.failed_checks
            assert result.reward == -1.0


def test_reward_functions():
    def grade(**kw) -> Grade:
        base = dict(
            outcome="failed",
            passed=False,
            metric="holdout_regret",
            score=0.05,
            threshold=0.04,
            lower_is_better=True,
            metrics={},
            reasons=[],
            leaks_detected=[],
            checks={},
            gates_passed=True,
        )
        return Grade(**{**base, **kw})

    assert pass_reward(grade(outcome="passed", passed=True, score=0.03)) == 1.0
    assert pass_reward(grade()) == 0.0
    assert margin_reward(grade()) == pytest.approx(-0.01)
    assert margin_reward(grade(outcome="passed", passed=True, score=0.03)) == pytest.approx(0.01)
    assert margin_reward(
        grade(metric="auroc", lower_is_better=False, score=0.9, threshold=0.8)
    ) == (pytest.approx(0.1))
    assert margin_reward(grade(gates_passed=False, score=0.0)) == -1.0
    assert margin_reward(grade(outcome="no_submission", score=None, gates_passed=False)) == -1.0
    assert margin_reward(grade(score=-5.0)) == 1.0  # clipped
    with pytest.raises(ValueError, match="reward must be"):
        Environment(_settings(), reward="accuracy")


def test_tool_calls_from_either_api():
    calls = tool_calls_from(
        [
            ToolCall("x", "submit_answer", {"y_pred_proba": [0.5]}),
            {"id": "y", "name": "python_expression", "input": {"expression": "1"}},
            {"id": "z", "function": {"name": "python_expression", "arguments": "[1]"}},
        ]
    )
    assert [(c.id, c.name, c.problem is None) for c in calls] == [
        ("x", "submit_answer", True),
        ("y", "python_expression", True),
        ("z", "python_expression", False),
    ]


def test_episode_files_go_to_a_folder_when_asked(pool, tmp_path):
    with (
        Environment(_settings(), pool=pool, results_dir=tmp_path) as env,
        env.reset(seed=4) as episode,
    ):
        result = _play(episode, "baseline")
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("seed4-")
    saved = json.loads((folder / "grade.json").read_text())
    assert saved["outcome"] == result.grade.outcome and saved["score"] == result.grade.score
    kinds = [json.loads(line)["type"] for line in (folder / "transcript.jsonl").open()]
    assert kinds[0] == "begin" and "submission" in kinds


def test_many_episodes_from_one_event_loop(pool):
    async def main() -> list:
        async with AsyncEnvironment(_settings(), pool=pool, max_threads=16) as env:

            async def one(seed: int):
                episode = await env.reset(seed)
                async with episode:
                    for turn in range(len(POLICIES["baseline"].turns)):
                        result = await episode.step(_calls("baseline", turn))
                        if result.done:
                            return seed, result
                return seed, None

            return await asyncio.gather(*(one(seed) for seed in range(24)))

    results = asyncio.run(main())
    assert sorted(seed for seed, _ in results) == list(range(24))
    outcomes = [result.grade.outcome for _, result in results]
    assert set(outcomes) <= {"passed", "failed"}, outcomes
    assert all(result.reward in (0.0, 1.0) for _, result in results)


@pytest.mark.parametrize("index", [0, 1])
def test_the_examples_in_the_environment_page_run(tmp_path, index):
    page = (Path(__file__).resolve().parents[1] / "docs" / "environment.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 2
    out = subprocess.run(
        [sys.executable, "-c", blocks[index]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line]
    if index == 0:
        assert lines == ["(800, 17)", "True 0.0 no_submission"]
    else:
        rewards = ast.literal_eval(lines[-1])
        assert len(rewards) == 8 and set(rewards) <= {0.0, 1.0}


def test_closing_an_episode_ends_a_step_whose_task_was_cancelled(pool):
    # A trainer that gives up on a slow step (a timeout, a cancelled rollout) closes the
    # episode: the sandbox worker is ended, the step's thread is freed, nothing leaks out,
    # even when that step holds the only thread the environment has.
    async def main() -> float:
        async with AsyncEnvironment(_settings(), pool=pool, max_threads=1) as env:
            episode = await env.reset(0)
            slow = [{"id": "s", "name": "python_expression", "input": {"expression": _SLEEP}}]
            task = asyncio.ensure_future(episode.step(slow))
            await asyncio.sleep(1.0)
            task.cancel()
            started = time.monotonic()
            await episode.close()
            return time.monotonic() - started

    assert asyncio.run(main()) < 50  # well before the step's own 60 s tool timeout


_SLEEP = "import time\nfor _ in range(600):\n    time.sleep(0.1)"
