"""leakbench.integrations.verifiers: leakbench as a verifiers environment, evaluated end to end
by verifiers' own eval runner (``run_eval``, what ``vf-eval`` runs) against the fake
OpenAI-compatible API. Every test but the first needs ``leakbench[verifiers]``."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

import leakbench.integrations.verifiers as integration
from leakbench.agents.local import POLICIES
from leakbench.env import Environment
from leakbench.errors import LeakbenchError
from leakbench.runner.episode import NO_TOOL_CALL
from leakbench.settings import SettingsSources, resolve
from leakbench.task.keys import new_key, write_key
from tests.fake_openai import (
    FakeOpenAI,
    ScriptedConversation,
    bad_request,
    slow,
    text_reply,
    tool_calls_reply,
)

MODEL = "fake-model"
KEY_VAR = "LEAKBENCH_TEST_FAKE_OPENAI_KEY"  # the variable verifiers reads the API key from
EXPLORE = POLICIES["baseline"].turns[0][0]
HONEST_FIT = POLICIES["baseline"].turns[1][0]
LEAKY_FIT = POLICIES["leaky"].turns[1][0]
# The seed preset's metric is the public-test AUROC: every honest pipeline clears 0.5.
LENIENT = {"grading.threshold": 0.5}
CALIBRATION = ("brier", "log_loss", "ece", "holdout_brier")


@pytest.fixture
def vf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """verifiers.v1, or the test is skipped; its files (runtime folders) go to tmp_path."""
    pytest.importorskip("verifiers", minversion="0.4")
    import verifiers.v1 as vf
    import verifiers.v1.runtimes.subprocess as subprocess_runtime

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(subprocess_runtime, "CACHE_DIR", tmp_path / "verifiers-cache")
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01, raising=False)
    return vf


@pytest.fixture
def episodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Counts the leakbench episodes opened and closed, and those still open when verifiers
    stops serving (closing the leakbench environment would close them all)."""
    from leakbench.env.aio import AsyncEnvironment, AsyncEpisode

    seen: dict[str, object] = {"opened": {}, "closed": set(), "open_at_stop": []}
    reset, close, stop = AsyncEnvironment.reset, AsyncEpisode.close, integration._Episodes.close

    async def counted_reset(self, seed=None):
        episode = await reset(self, seed)
        seen["opened"][id(episode)] = episode
        return episode

    async def counted_close(self):
        await close(self)
        seen["closed"].add(id(self))

    async def counted_stop(self):
        seen["open_at_stop"].append(len(seen["opened"].keys() - seen["closed"]))
        await stop(self)

    monkeypatch.setattr(AsyncEnvironment, "reset", counted_reset)
    monkeypatch.setattr(AsyncEpisode, "close", counted_close)
    monkeypatch.setattr(integration._Episodes, "close", counted_stop)
    return seen


def _settings(preset: str, overrides: dict[str, object]):
    return resolve(SettingsSources(preset=preset, environ={}, flags=dict(overrides)))


def _key(tmp_path: Path) -> tuple[bytes, Path]:
    key = new_key()
    folder = tmp_path / "private"
    write_key(folder, key)
    return key, folder


def _call(code: str, k: int) -> tuple[str, dict[str, str], str]:
    return ("python_expression", {"expression": code}, f"call_{k}")


def _script(codes: list[str]) -> ScriptedConversation:
    """The model's side: one python_expression call per turn, then a text answer."""
    replies = [tool_calls_reply([_call(code, k)]) for k, code in enumerate(codes)]
    return ScriptedConversation(replies, after=text_reply("Done."))


def _play_directly(codes, preset, overrides, key, seeds):
    """leakbench's own (grade, reward) per seed for the same conversation, through
    leakbench.env under the same key, tool calls as the model sent them; and the first
    episode's observation."""
    graded, observations = [], []
    with Environment(_settings(preset, overrides), key=key) as env:
        for seed in seeds:
            with env.reset(seed=seed) as episode:
                observations.append(episode.observation)
                result = None
                for k, code in enumerate(codes):
                    name, args, call_id = _call(code, k)
                    function = {"name": name, "arguments": json.dumps(args)}
                    result = episode.step([{"id": call_id, "function": function}])
                    if result.done:
                        break
                if result is None or not result.done:
                    result = episode.step([], end=NO_TOOL_CALL)
            graded.append((result.grade, result.reward))
    return graded, observations[0]


def _evaluate(env_config, server: FakeOpenAI, out: Path, monkeypatch: pytest.MonkeyPatch):
    """verifiers' eval runner on ``env_config`` against ``server``: the traces, by seed."""
    from verifiers.v1 import EvalClientConfig
    from verifiers.v1.cli.eval.runner import run_eval
    from verifiers.v1.configs.cli.eval import EvalConfig

    monkeypatch.setenv(KEY_VAR, server.api_key)
    config = EvalConfig(
        env=env_config,
        model=MODEL,
        client=EvalClientConfig(base_url=server.base_url, api_key_var=KEY_VAR),
        rich=None,
        push=False,
        output_dir=out,
    )
    done = asyncio.run(run_eval(config))
    return sorted((t for e in done for t in e.traces), key=lambda t: t.task.data.seed)


def _assert_secret_kept(key: bytes, out: Path, bodies: list[dict], logs: str) -> None:
    """The key is in no file verifiers wrote, no request the model got, no log line."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "traces.jsonl" for p in files)
    texts = [p.read_text(errors="replace") for p in files] + [json.dumps(bodies), logs]
    for secret in (key.hex(), str(int.from_bytes(key, "big"))):
        assert not any(secret in text for text in texts)


# ---------------------------------------------------------------------------------------------


def test_without_verifiers_load_environment_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "verifiers", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "verifiers.v1", None)
    spec = importlib.util.spec_from_file_location("leakbench_vf_probe", integration.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the module itself imports without verifiers
    assert module.vf is None
    with pytest.raises(LeakbenchError, match=r"pip install 'leakbench\[verifiers\]'"):
        module.load_environment(preset="seed", n=2)
    with pytest.raises(SystemExit, match=r"pip install 'leakbench\[verifiers\]'"):
        module.main([])
    # The name verifiers imports for the id says the same (in a process without verifiers).
    code = "import sys; sys.modules['verifiers'] = None; import leakbench_verifiers"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "ImportError" in done.stderr and "pip install 'leakbench[verifiers]'" in done.stderr


def test_rows_are_leakbench_instances_under_leakbench_prompts(vf, tmp_path):
    key, key_dir = _key(tmp_path)
    env = integration.load_environment(preset="seed", n=3, seed=5, key_dir=key_dir)
    assert isinstance(env, integration.LeakbenchEnv)
    assert isinstance(env.taskset, integration.LeakbenchTaskset)
    # verifiers resolves the plugin id to this module, as vf-eval does
    assert vf.environment_class(integration.TASKSET_ID) is integration.LeakbenchEnv
    assert type(vf.load_harness(vf.default_agent_harness(integration.TASKSET_ID))) is (
        integration.LeakbenchHarness
    )
    tasks = list(env.taskset)
    assert [t.data.seed for t in tasks] == [5, 6, 7]
    assert [t.data.idx for t in tasks] == [0, 1, 2]
    with Environment(_settings("seed", {}), key=key) as direct:
        for task in tasks:
            with direct.reset(seed=task.data.seed) as episode:
                assert task.data.system_prompt == episode.observation.system_prompt
                assert task.data.prompt == episode.observation.task_prompt
    shown = env.config.model_dump_json() + "".join(t.data.model_dump_json() for t in tasks)
    assert key.hex() not in shown and str(key_dir) in shown  # the folder, never the key


def test_the_loading_example_in_the_page_runs(vf, tmp_path):
    page = (Path(__file__).resolve().parents[1] / "docs" / "verifiers.md").read_text()
    example = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3 You are a careful")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("codes", "reward", "leak"),
    [([EXPLORE, HONEST_FIT], 1.0, False), ([EXPLORE, LEAKY_FIT], 0.0, True)],
    ids=["honest", "leaky"],
)
def test_verifiers_rewards_are_leakbench_grades(
    vf, tmp_path, monkeypatch, caplog, episodes, codes, reward, leak
):
    # A lenient threshold: the honest pipeline passes; the leaky one fails on its leak alone.
    caplog.set_level(logging.DEBUG)
    key, key_dir = _key(tmp_path)
    env = integration.load_environment(
        preset="seed", n=2, seed=3, settings=LENIENT, key_dir=key_dir
    )
    with FakeOpenAI(_script(codes)) as server:
        traces = _evaluate(env.config, server, tmp_path / "out", monkeypatch)
        bodies = server.chat_bodies()
    direct, observation = _play_directly(codes, "seed", LENIENT, key, seeds=[3, 4])

    assert [t.task.data.seed for t in traces] == [3, 4]
    for trace, (grade, direct_reward) in zip(traces, direct, strict=True):
        assert trace.ok, trace.errors
        assert trace.reward == direct_reward == reward
        assert trace.rewards["leakbench"].score == reward
        assert trace.metrics["passed"] == float(grade.passed)
        assert trace.metrics["score"] == pytest.approx(grade.score, abs=1e-12)
        for name in CALIBRATION:
            assert trace.metrics[name] == pytest.approx(grade.metrics[name], abs=1e-12)
        assert trace.metrics["leak_detected"] == float(leak) == float(bool(grade.leaks_detected))
        recorded = trace.info["leakbench"]
        assert recorded["grade"]["outcome"] == grade.outcome
        assert recorded["grade"]["leaks_detected"] == grade.leaks_detected
        assert recorded["steps"] == 2 and recorded["end_reason"] is None
        assert [tool.name for tool in trace.tools] == ["python_expression", "submit_answer"]
    if leak:
        assert "leak_future_signal" in traces[0].info["leakbench"]["grade"]["leaks_detected"]
        assert "leak" in traces[0].info["leakbench"]["grade"]["failed_checks"]

    # The model saw leakbench's prompts and tools, two turns per rollout and no more.
    assert len(bodies) == 4
    first = bodies[0]
    assert first["messages"][0] == {"role": "system", "content": observation.system_prompt}
    assert first["messages"][1] == {"role": "user", "content": observation.task_prompt}
    assert first["tools"] == observation.openai_tools
    assert first["model"] == MODEL
    # Each rollout's episode was closed by the rollout itself, before verifiers stopped.
    assert len(episodes["opened"]) == 2 and episodes["open_at_stop"] == [0]
    _assert_secret_kept(key, tmp_path / "out", bodies, caplog.text)


def test_only_leakbench_harness_plays_the_tasks(vf, tmp_path, monkeypatch, episodes):
    # Another harness (here the tool-less chat loop) would not play through leakbench's
    # sandbox: the environment refuses it, and so does each task under another env.
    taskset = {"id": integration.TASKSET_ID, "preset": "seed", "n": 1}
    foreign = {"harness": {"id": "null"}, "runtime": {"type": "subprocess"}}
    with pytest.raises(ValueError, match="leakbench's own harness"):
        vf.load_environment(vf.resolve_env_config({"taskset": taskset, "agent": foreign}))
    docker = {"runtime": {"type": "docker"}}
    with pytest.raises(ValueError, match="subprocess runtime"):
        vf.load_environment(vf.resolve_env_config({"taskset": taskset, "agent": docker}))
    paired = vf.resolve_env_config(
        {"id": "best-of-n", "n": 1, "taskset": taskset, "agent": foreign}
    )
    with FakeOpenAI(ScriptedConversation([text_reply("hi")])) as server:
        [trace] = _evaluate(paired, server, tmp_path / "out", monkeypatch)
        assert server.chat_requests() == []
    assert not trace.ok and "leakbench's own harness" in trace.errors[0].message
    assert episodes["opened"] == {}


def test_a_failed_rollout_releases_its_episode(vf, tmp_path, monkeypatch, episodes):
    env = integration.load_environment(preset="seed", n=1)
    with FakeOpenAI(ScriptedConversation([bad_request("messages: nope")])) as server:
        [trace] = _evaluate(env.config, server, tmp_path / "out", monkeypatch)
    assert not trace.ok and "nope" in " ".join(e.message for e in trace.errors)
    assert "leakbench" not in trace.info and trace.rewards == {}  # an error, not a grade
    assert len(episodes["opened"]) == 1 and episodes["open_at_stop"] == [0]


def test_a_rollout_verifiers_times_out_is_graded_and_released(vf, tmp_path, monkeypatch, episodes):
    # The model never answers within verifiers' agent timeout: the harness is cancelled mid
    # call, and the episode ends as an agent that stopped (graded), then is released.
    env = integration.load_environment(preset="seed", n=1, reward="margin")
    config = env.config.model_copy(deep=True)
    config.agent.timeout.rollout = 10.0  # far below the reply's 60 s, far above a slow start
    reply = tool_calls_reply([_call(EXPLORE, 0)])
    with FakeOpenAI(ScriptedConversation([slow(60, reply)])) as server:
        [trace] = _evaluate(config, server, tmp_path / "out", monkeypatch)
    assert trace.is_timeout and trace.ok, trace.errors
    recorded = trace.info["leakbench"]
    assert recorded["end_reason"] == integration.ROLLOUT_ENDED
    assert recorded["grade"]["outcome"] == "no_submission"
    assert trace.reward == -1.0  # margin: anything but a gated score is -1
    assert len(episodes["opened"]) == 1 and episodes["open_at_stop"] == [0]


def test_a_rollout_verifiers_stops_is_graded(vf, tmp_path, monkeypatch, episodes):
    # verifiers' turn limit refuses the second model call: the episode ends there, graded.
    env = integration.load_environment(preset="seed", n=1, settings=LENIENT)
    config = env.config.model_copy(deep=True)
    config.agent.max_turns = 1
    with FakeOpenAI(_script([EXPLORE, HONEST_FIT])) as server:
        [trace] = _evaluate(config, server, tmp_path / "out", monkeypatch)
        assert len(server.chat_requests()) == 1
    assert trace.ok and trace.stop_condition is not None, trace.errors
    recorded = trace.info["leakbench"]
    assert recorded["end_reason"].startswith("verifiers stopped the rollout")
    assert recorded["grade"]["outcome"] == "no_submission" and recorded["steps"] == 2
    assert trace.reward == 0.0
    assert len(episodes["opened"]) == 1 and episodes["open_at_stop"] == [0]


@pytest.mark.slow
def test_vf_eval_on_the_command_line(vf, tmp_path):
    # verifiers' own command in a fresh process finds the environment by its id (the
    # top-level module leakbench_verifiers). A model that answers without a tool call ends
    # its episode: graded at once, no submission (margin reward -1).
    out = tmp_path / "out"
    with FakeOpenAI(ScriptedConversation([text_reply("I'd rather not.")])) as server:
        env = {**os.environ, "HOME": str(tmp_path), KEY_VAR: server.api_key}
        command = [
            str(Path(sys.executable).with_name("vf-eval")), integration.TASKSET_ID,
            "-m", MODEL,
            "--client.base-url", server.base_url,
            "--client.api-key-var", KEY_VAR,
            "-o", str(out), "--no-push", "--no-rich",
            "--env.taskset.preset", "seed",
            "--env.taskset.n", "1",
            "--env.taskset.reward", "margin",
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert len(server.chat_requests()) == 1
    assert done.returncode == 0, done.stderr[-3000:]
    [traces] = list(out.rglob("traces.jsonl"))
    [episode] = [json.loads(line) for line in traces.read_text().splitlines()]
    [trace] = episode["traces"]
    assert trace["task"]["data"]["seed"] == 0
    assert trace["rewards"]["leakbench"]["score"] == -1.0
    recorded = trace["info"]["leakbench"]
    assert recorded["end_reason"] == NO_TOOL_CALL
    assert recorded["grade"]["outcome"] == "no_submission" and recorded["steps"] == 1
    assert trace["metrics"]["passed"] == 0.0 and "score" not in trace["metrics"]
