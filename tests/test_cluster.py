"""Episodes on a Ray cluster (``run.executor = "ray"``, leakbench.runner.cluster).

The tests marked ``ray`` start a real Ray cluster of two nodes on this machine
(``ray.cluster_utils.Cluster``, one CPU each) and run only where the ``ray`` extra is installed;
the others run everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leakbench.agents import make_agent
from leakbench.env.prompts import build_prompts
from leakbench.errors import LeakbenchError
from leakbench.runner.cluster import NodeEpisodes, _write_episode
from leakbench.runner.episode import Episode, EpisodeEnv
from leakbench.runner.run import QuietObserver, Runner, run
from leakbench.sandbox import SandboxLimits, SandboxPool
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.store.runs import EpisodeRecord, RunDir
from leakbench.task.generate import make_instance
from leakbench.task.keys import new_key
from tests import fake_ray

RUNS = 20


def _settings(results: Path, **flags) -> Settings:
    given = {"agent.model": "local/baseline", "run.runs": RUNS, "run.results_dir": str(results)}
    return resolve(SettingsSources(preset="default", environ={}, flags={**given, **flags}))


def _outcomes(records: list[EpisodeRecord]) -> list[tuple[int, str, float | None]]:
    return [(r.index, r.outcome, r.score) for r in records]


# -- everywhere ----------------------------------------------------------------------------------


def test_executor_ray_without_ray_says_how_to_install_it(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, installed or not
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--executor", "ray", "--runs", "1")
    assert result.exit_code == 1, result.output
    assert 'pip install "leakbench[ray]"' in result.output
    assert not results.exists() or not any(results.iterdir())  # no run folder made


def test_an_unknown_executor_is_bad_usage(cli, tmp_path):
    result = cli("--results-dir", tmp_path / "r", "run", "--executor", "slurm", "--runs", "1")
    assert result.exit_code == 2
    assert "slurm" in result.output


def test_a_node_plays_an_episode_as_a_local_run_does(tmp_path):
    # The actor class without Ray: same key and seed, same record and the same files.
    settings = _settings(tmp_path, **{"run.runs": 1})
    key = new_key()
    prompts = build_prompts(settings)
    # What an actor killed with its node left behind: the next actor on the machine removes it.
    from leakbench.runner.cluster import SCRATCH_PREFIX
    from leakbench.store.files import owned_temp_folder

    abandoned, owner = owned_temp_folder(SCRATCH_PREFIX)
    os.close(owner)
    node = NodeEpisodes(settings, prompts, node_cpus=1)
    assert not Path(abandoned).exists()
    try:
        info = node.start(key, {"LEAKBENCH_TEST_SECRET": "s3cr3t-value"})
        assert info["isolation"] in ("full", "reduced")
        data, files = node.run_episode(0)
        # The node's secrets are in its own environment, never in a sandbox's.
        instance = make_instance(settings.task, settings.task.seed, key=key)
        session = node.pool.open(
            instance.train, instance.test, SandboxLimits.from_settings(settings)
        )
        try:
            seen = session.execute("import os; print(sorted(os.environ.items()))").output
        finally:
            session.close()
        assert os.environ.get("LEAKBENCH_TEST_SECRET") == "s3cr3t-value"
        assert "s3cr3t" not in seen and "LEAKBENCH_TEST_SECRET" not in seen
        scratch = node.scratch
        # The episode's folder is gone once handed back; the actor's owner lock stays.
        assert [p.name for p in scratch.iterdir()] == ["owner.lock"]
    finally:
        node.close()
        os.environ.pop("LEAKBENCH_TEST_SECRET", None)
    assert not scratch.exists()

    local_run = RunDir.create(tmp_path / "local", settings, [], key=key)
    env = EpisodeEnv(
        settings=settings,
        pool=SandboxPool(),
        make_agent=lambda: make_agent(settings.agent.model, settings),
        prompts=prompts,
        sandbox_slots=threading.Semaphore(1),
        instance_key=key,
    )
    with contextlib.closing(env.pool):
        env.pool.launch()
        local = Episode(env, 0, local_run.fresh_episode_dir(0)).run()
    record = EpisodeRecord.model_validate(data)
    assert (record.outcome, record.score) == (local.outcome, local.score)
    on_disk = sorted(
        p.relative_to(local_run.episode_dir(0)).as_posix()
        for p in local_run.episode_dir(0).rglob("*")
        if p.is_file()
    )
    assert sorted(files) == on_disk
    assert "grade.json" in files and "transcript.jsonl" in files
    assert json.loads(files["grade.json"])["score"] == local.score


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b", ""])
def test_the_driver_refuses_a_file_name_that_leaves_the_episode_folder(tmp_path, name):
    settings = _settings(tmp_path, **{"run.runs": 1})
    run_dir = RunDir.create(tmp_path / "r", settings, [])
    with pytest.raises(LeakbenchError, match="a node sent a file named"):
        _write_episode(run_dir, 0, {name: b"x"})
    assert not (tmp_path / "r" / "escape.txt").exists()


def test_resume_may_move_a_run_between_executors(cli, tmp_path):
    # Where episodes run changes how fast, not what is measured: a resume may change it.
    results = tmp_path / "results"
    first = cli("--results-dir", results, "run", "--runs", "1", "--json")
    assert first.exit_code == 0, first.output
    (folder,) = results.iterdir()
    settings = (folder / "settings.toml").read_text()
    assert 'executor = "local"' in settings
    again = cli(
        "--results-dir",
        results,
        "run",
        "--resume",
        folder.name,
        "--executor",
        "local",
        "--ray-address",
        "10.0.0.1:6379",
    )
    assert again.exit_code == 0, again.output
    assert "were made with other settings" not in again.output


def _on_fake_ray(tmp_path, monkeypatch, runs: int):
    fake = fake_ray.install(monkeypatch, {"node-a": 1, "node-b": 1})
    flags = {"run.runs": runs, "run.executor": "ray", "run.concurrency": 6}
    settings = _settings(tmp_path, **{**flags, "run.sandbox_concurrency": 1})
    return fake, settings, RunDir.create(tmp_path, settings, [])


def _indices_logged(run_dir: RunDir) -> list[int]:
    lines = (run_dir.path / "episodes.jsonl").read_text().splitlines()
    return sorted(json.loads(line)["index"] for line in lines)


def test_the_driver_plays_a_lost_nodes_episodes_again_and_writes_each_once(tmp_path, monkeypatch):
    # The dispatching logic, with Ray's calls played in this process (tests/fake_ray.py).
    fake, settings, made = _on_fake_ray(tmp_path, monkeypatch, runs=8)
    seen: list[int] = []

    def on_finished(record: EpisodeRecord) -> None:
        seen.append(record.index)
        if len(seen) == 2:
            fake.kill_node("node-b")  # mid-episode: its actor and sandboxes go

    with Runner(settings, resume=made) as runner:
        runner.start()
        assert runner.cluster is not None and runner.cluster.node_count == 2
        result = runner.execute(QuietObserver(on_finished))
        stats = runner.cluster.stats
    assert stats.nodes_lost == 1 and stats.rerun >= 1
    assert [r.index for r in result.records] == list(range(8))
    assert {r.outcome for r in result.records} <= {"passed", "failed"}
    assert _indices_logged(made) == list(range(8))  # each index written once
    assert sorted(_files(made.path)) == list(range(8))
    manifest = RunDir.open(made.path).manifest
    assert (manifest.executor, manifest.episodes_rerun) == ("ray", stats.rerun)
    assert fake.init_calls[0]["address"] is None  # no address: a Ray started for the run
    assert not fake.is_initialized()  # and left at the end


def test_the_command_line_runs_on_a_cluster_and_says_where(cli, tmp_path, monkeypatch):
    fake_ray.install(monkeypatch, {"node-a": 1, "node-b": 2})
    results = tmp_path / "results"
    result = cli(
        "--results-dir", results, "run", "--executor", "ray", "--ray-address", "auto",
        "--runs", "4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ray: 2 nodes, one sandbox pool each" in result.output
    assert "ray: episodes per node:" in result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert (summary["executor"], summary["episodes"], summary["error"]) == ("ray", 4, 0)
    (folder,) = results.iterdir()
    assert 'executor = "ray"' in (folder / "settings.toml").read_text()
    assert sorted(_files(folder)) == [0, 1, 2, 3]
    shown = cli("--results-dir", results, "view", folder.name)
    assert shown.exit_code == 0, shown.output
    assert "4/4 episodes done · on ray" in shown.stdout
    logs = tmp_path / "logs"
    exported = cli("--results-dir", results, "export", folder.name, "--out", logs)
    assert exported.exit_code == 0, exported.output
    assert len(list(logs.iterdir())) == 1  # one Inspect log of the cluster run


def test_a_run_that_loses_every_node_stops_resumable(tmp_path, monkeypatch):
    fake, settings, made = _on_fake_ray(tmp_path, monkeypatch, runs=6)

    def on_finished(record: EpisodeRecord) -> None:
        fake.kill_node("node-a")
        fake.kill_node("node-b")

    with (
        pytest.raises(LeakbenchError, match="every Ray node was lost") as raised,
        Runner(settings, resume=made) as runner,
    ):
        runner.start()
        runner.execute(QuietObserver(on_finished))
    assert f"leakbench run --resume {made.run_id}" in (raised.value.hint or "")
    stopped = RunDir.open(made.path)
    assert stopped.manifest.status == "interrupted"
    kept = _indices_logged(stopped)
    assert 1 <= len(kept) < 6
    # Resumed on this machine: the rest, each once, with the run's key.
    local = stopped.settings().with_overrides({"run.executor": "local"})
    result = run(local, resume=stopped)
    assert [r.index for r in result.records] == list(range(6))
    assert _indices_logged(stopped) == list(range(6))


# -- on a real two-node Ray cluster ------------------------------------------------------------

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="needs the ray extra: pip install 'leakbench[ray]'",
)


@needs_ray
@pytest.mark.parametrize("case", ["silent address", "no cluster", "stale record"])
def test_a_cluster_nobody_answers_at_is_one_line_and_no_run_folder(
    cli, tmp_path, monkeypatch, case
):
    # Ray alone waits forever on a HOST:PORT that never answers, and "auto" follows the
    # address `ray start` recorded on this machine even when that cluster is gone.
    from ray._private import services

    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(
        services,
        "find_bootstrap_address",
        lambda temp_dir: "127.0.0.1:1" if case == "stale record" else None,
    )
    address = "127.0.0.1:1" if case == "silent address" else "auto"
    results = tmp_path / "results"
    started = time.monotonic()
    result = cli("--results-dir", results, "run", "--executor", "ray", "--ray-address", address)
    assert result.exit_code == 1, result.output
    assert f"cannot join the Ray cluster at {address}" in result.output
    if case != "no cluster":  # (Ray may spell 127.0.0.1 as this machine's address)
        assert re.search(r"nothing answers at [\d.]+:1 \(", result.output), result.output
    assert time.monotonic() - started < 60
    assert not results.exists() or not any(results.iterdir())


@pytest.fixture
def cluster() -> Iterator[object]:
    """Two nodes of one CPU each on this machine, in a temp folder of their own (other Rays on
    the machine are left alone)."""
    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="lb-ray-")  # short: Ray's socket paths must fit 107 bytes
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp},
    )
    try:
        made.add_node(num_cpus=1, temp_dir=temp)
        made.wait_for_nodes()
        made.temp = temp  # type: ignore[attr-defined]
        yield made
    finally:
        if ray.is_initialized():
            ray.shutdown()
        made.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[bytes, list[tuple[int, str, float | None]]]:
    """The same 20 episodes run locally: the key and their outcomes."""
    key = new_key()
    results = tmp_path_factory.mktemp("local")
    settings = _settings(results, **{"run.concurrency": 2})
    result = run(settings, resume=RunDir.create(results, settings, [], key=key))
    return key, _outcomes(result.records)


def _cluster_settings(results: Path, cluster, **flags) -> Settings:
    base = {
        "run.executor": "ray",
        "run.ray_address": cluster.address,
        "run.concurrency": 4,
        "run.sandbox_concurrency": 1,
    }
    return _settings(results, **{**base, **flags})


def _files(run_dir: Path) -> dict[int, list[str]]:
    return {
        int(ep.name): sorted(p.relative_to(ep).as_posix() for p in ep.rglob("*") if p.is_file())
        for ep in sorted((run_dir / "episodes").iterdir())
    }


@needs_ray
@pytest.mark.slow
def test_a_cluster_run_has_the_outcomes_and_folder_of_a_local_run(
    cli, tmp_path, cluster, reference
):
    key, expected = reference
    settings = _cluster_settings(tmp_path, cluster)
    made = RunDir.create(tmp_path, settings, [], key=key)
    with Runner(settings, resume=made) as runner:
        runner.start()
        assert runner.cluster is not None and runner.cluster.node_count == 2
        result = runner.execute()
        played = dict(runner.cluster.stats.episodes)
    assert _outcomes(result.records) == expected
    assert len(played) == 2 and sum(played.values()) == RUNS  # both nodes played
    manifest = RunDir.open(made.path).manifest
    assert (manifest.status, manifest.executor, manifest.episodes_rerun) == ("completed", "ray", 0)
    files = _files(made.path)
    assert sorted(files) == list(range(RUNS))
    for names in files.values():
        assert {"grade.json", "instance.json", "transcript.jsonl"} <= set(names)
    import ray

    assert not ray.is_initialized()  # the runner left the Ray it joined
    # The commands that read runs read it as a local one.
    for command in (("report",), ("view", made.run_id, "3"), ("grade", made.run_id)):
        result = cli("--results-dir", tmp_path, *command)
        assert result.exit_code == 0, (command, result.output)
    assert _outcomes(RunDir.open(made.path).records()) == expected  # re-graded, same verdicts

    # The secret key reached no file Ray wrote on either node (logs, session data).
    secrets = [key, key.hex().encode(), base64.b64encode(key)]
    for path in Path(cluster.temp).rglob("*"):
        if path.is_file() and not path.is_socket():
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                assert not any(s in data for s in secrets), path


@needs_ray
def test_joining_ray_keeps_the_callers_sigterm_handler(tmp_path, cluster):
    # ray.init puts in a SIGTERM handler of its own; the command line's (SIGTERM -> the run
    # marked interrupted, exit 143 with the resume command) must survive it.
    from leakbench.runner.cluster import RayEpisodes

    def mine(signum, frame):  # pragma: no cover - never called
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        joined = RayEpisodes(_cluster_settings(tmp_path, cluster))
        joined.join()
        try:
            assert signal.getsignal(signal.SIGTERM) is mine
        finally:
            joined.close()
    finally:
        signal.signal(signal.SIGTERM, before)


@needs_ray
@pytest.mark.slow
def test_model_api_secrets_reach_the_nodes_in_memory_only(tmp_path, cluster, monkeypatch):
    # An openai/ model through the real SDK on both nodes: the API key and the instance key
    # cross to the actors as call arguments; no file Ray writes holds either.
    from leakbench.agents.local import POLICIES
    from tests.fake_openai import FakeOpenAI, ScriptedConversation, tool_calls_reply

    fit = tool_calls_reply(
        [("python_expression", {"expression": POLICIES["baseline"].turns[1][0]})]
    )
    key = new_key()
    with FakeOpenAI(ScriptedConversation([fit])) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        settings = _cluster_settings(
            tmp_path, cluster, **{"agent.model": "openai/fake-model", "run.runs": 4}
        )
        made = RunDir.create(tmp_path, settings, [], key=key)
        result = run(settings, resume=made)
        api_key = server.api_key
    assert [(r.steps, r.outcome in ("passed", "failed")) for r in result.records] == [(1, True)] * 4
    secrets = [api_key.encode(), key, key.hex().encode(), base64.b64encode(key)]
    for path in Path(cluster.temp).rglob("*"):
        if path.is_file() and not path.is_socket():
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                assert not any(s in data for s in secrets), path
    for path in made.path.rglob("*"):
        if path.is_file() and "private" not in path.parts:
            assert not any(s in path.read_bytes() for s in secrets), path


@needs_ray
@pytest.mark.slow
def test_a_node_lost_mid_run_costs_no_episode_and_counts_none_twice(tmp_path, cluster, reference):
    key, expected = reference
    (doomed,) = cluster.worker_nodes
    settings = _cluster_settings(
        tmp_path, cluster, **{"run.concurrency": 8, "run.node_concurrency": 4}
    )
    made = RunDir.create(tmp_path, settings, [], key=key)
    killed: list[int] = []
    seen: list[int] = []

    def on_finished(record: EpisodeRecord) -> None:
        seen.append(record.index)
        if len(seen) == 4:
            killed.append(record.index)
            cluster.remove_node(doomed)  # its raylet, actor and sandboxes, mid-episode

    with Runner(settings, resume=made) as runner:
        runner.start()
        result = runner.execute(QuietObserver(on_finished))
        stats = runner.cluster.stats
    assert killed, "the node was never killed"
    assert stats.nodes_lost == 1 and stats.rerun >= 1
    assert _outcomes(result.records) == expected  # exactly the 20, each once
    lines = (made.path / "episodes.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == list(range(RUNS))
    manifest = RunDir.open(made.path).manifest
    assert manifest.status == "completed" and manifest.episodes_rerun == stats.rerun


@needs_ray
@pytest.mark.slow
def test_killing_the_driver_then_resuming_loses_and_repeats_nothing(tmp_path, cluster):
    results = tmp_path / "results"
    env = {**os.environ, "NO_COLOR": "1"}
    command = [sys.executable, "-m", "leakbench", "--results-dir", str(results), "run"]
    driver = subprocess.Popen(
        [*command, "--executor", "ray", "--ray-address", cluster.address, "--runs", str(RUNS),
         "-j", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        log: Path | None = None
        while time.monotonic() < deadline and driver.poll() is None:
            found = list(results.glob("*/episodes.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 3:
                log = found[0]
                break
            time.sleep(0.05)
        assert log is not None, driver.stderr.read().decode() if driver.stderr else ""
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    before = len(log.read_text().splitlines())
    assert before < RUNS
    folder = log.parent
    resumed = subprocess.run(
        [*command, "--resume", folder.name, "--ray-address", cluster.address],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    finished = RunDir.open(folder)
    lines = (folder / "episodes.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == list(range(RUNS))
    assert finished.manifest.status == "completed"
    assert sorted(_files(folder)) == list(range(RUNS))
    # And they are the episodes a local run with the run's key plays.
    settings = _settings(tmp_path / "local", **{"run.concurrency": 2})
    local = run(
        settings,
        resume=RunDir.create(tmp_path / "local", settings, [], key=finished.instance_key()),
    )
    assert _outcomes(finished.records()) == _outcomes(local.records)
