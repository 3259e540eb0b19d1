"""Throughput of `leakbench run` against the same work done directly, without the harness.

    python -m bench.run [--episodes N] [--preset default]

Prints, in one run on this machine:
- episodes/s of local/baseline through the harness at concurrency 1, 2 and 4 (zygote already
  warm), against episodes/s of the same instance generation, model fit, evidence predictions and
  grading done directly in plain processes (1 and 2 of them): the ratio is the harness overhead;
- the CPU one episode costs the whole machine (kernel included), directly and through the harness,
  and through the harness with the refit checks off and on (their price);
- episodes/s against the fake Anthropic server with a simulated 50 ms model latency per reply at
  concurrency 32 (two model turns per episode: explore, then submit), once with a constant
  submission (model-bound) and once with the baseline pipeline (sandbox-CPU-bound).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from leakbench.agents import make_agent
from leakbench.agents.local import POLICIES
from leakbench.env.prompts import build_prompts
from leakbench.grading.audit import collect_evidence
from leakbench.grading.grade import grade
from leakbench.runner.run import QuietObserver, execute_run
from leakbench.sandbox import SandboxPool
from leakbench.sandbox.introspect import fingerprint
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.store.runs import RunDir
from leakbench.task.generate import make_instance
from leakbench.task.keys import new_key


def _timed_run(settings: Settings, pool: SandboxPool, client: object = None) -> float:
    """Episodes/s of one run of ``settings`` in a throw-away results folder."""
    with tempfile.TemporaryDirectory() as results:
        run = RunDir.create(Path(results), settings, ["bench"])
        start = time.perf_counter()
        result = execute_run(
            run,
            settings,
            lambda: make_agent(settings.agent.model, settings, client),
            build_prompts(settings),
            pool,
            QuietObserver(),
        )
        elapsed = time.perf_counter() - start
    bad = [r for r in result.records if r.outcome not in ("passed", "failed")]
    assert not bad, bad[0]
    return len(result.records) / elapsed


def busy_cpu_s() -> float:
    """CPU seconds this machine has spent busy (all processes, kernel work included)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def harness_rate(settings: Settings, pool: SandboxPool, episodes: int, concurrency: int) -> float:
    return _timed_run(
        settings.with_overrides(
            {"agent.model": "local/baseline", "run.runs": episodes, "run.concurrency": concurrency}
        ),
        pool,
    )


def direct_episode(args: tuple[Settings, int, bytes | None]) -> bool:
    """The work of one episode with no harness: generate, fit, predict, audit, grade."""
    settings, seed, key = args
    instance = make_instance(settings.task, seed, key=key)
    namespace = {"train_df": instance.train, "test_df": instance.test, "np": np, "pd": pd}
    captured: dict = {}
    namespace["submit_answer"] = captured.update
    for codes in POLICIES["baseline"].turns:
        for code in codes:
            if "train_df.dtypes" not in code:  # the exploring call only prints
                exec(code, namespace)
    evidence = collect_evidence(_InProcess(captured["pipeline"]), instance, settings.grading)
    return grade(instance, captured["y_pred_proba"], settings.grading, evidence).passed


class _InProcess:
    """The fitted pipeline answering the audit directly, as a sandbox session would."""

    def __init__(self, pipe: object) -> None:
        self.pipe = pipe

    def predict_proba(self, frame, timeout_s=None):
        return self.pipe.predict_proba(frame)[:, 1]

    def fingerprint(self) -> dict:
        return fingerprint(self.pipe)


def _single_thread() -> None:
    # The sandbox runs BLAS/OpenMP single-threaded; the direct baseline must too, or it would
    # borrow the other core and the comparison would say nothing.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def direct_rate(settings: Settings, episodes: int, processes: int) -> float:
    key = None if settings.task.public_seeds else new_key()
    jobs = [(settings, seed, key) for seed in range(episodes)]
    with ProcessPoolExecutor(processes, initializer=_single_thread) as executor:
        list(executor.map(direct_episode, jobs[:processes]))  # warm the imports
        start = time.perf_counter()
        list(executor.map(direct_episode, jobs))
        return episodes / (time.perf_counter() - start)


def fake_server_rate(settings: Settings, pool: SandboxPool, episodes: int, fit: bool) -> float:
    """Episodes/s through the real SDK against the fake API (50 ms per reply), concurrency 32.

    Two model turns per episode: explore, then submit. With ``fit`` the submission is the
    baseline pipeline (sandbox CPU dominates); without, the agent submits constant
    probabilities and no pipeline (the model's latency and the harness dominate).
    """
    from leakbench.agents.anthropic import make_client
    from tests.fake_anthropic import FakeAnthropic, ScriptedConversation, tool_use_reply

    explore = tool_use_reply([("python_expression", {"expression": "train_df.shape"})])
    code = (
        POLICIES["baseline"].turns[1][0]
        if fit
        else 'submit_answer({"y_pred_proba": np.full(len(test_df), 0.5)})'
    )
    submit = tool_use_reply([("python_expression", {"expression": code})])
    settings = settings.with_overrides(
        {"agent.model": "anthropic/claude-haiku-4-5", "run.runs": episodes, "run.concurrency": 32}
    )
    if not fit:
        settings = settings.with_overrides({"grading.require_pipeline": False})
    with FakeAnthropic(ScriptedConversation([explore, submit]), latency_s=0.05) as server:
        client = make_client(settings.run, api_key=server.api_key, base_url=server.base_url)
        return _timed_run(settings, pool, client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    settings = resolve(SettingsSources(preset=args.preset, environ={}))
    print(f"preset {args.preset}, {args.episodes} episodes per figure, {os.cpu_count()} cores")
    direct, cpu_direct, cpu_harness = {}, {}, {}  # keyed by processes / concurrency
    for p in (1, 2):
        before = busy_cpu_s()
        direct[p] = direct_rate(settings, args.episodes, p)
        cpu_direct[p] = 1000 * (busy_cpu_s() - before) / (args.episodes + p)  # + warm-up
        print(f"direct, {p} process(es):                 {direct[p]:6.2f} episodes/s")
    with SandboxPool() as pool:
        print(f"isolation:                                {pool.isolation}")
        harness_rate(settings, pool, 4, 2)  # warm the harness's lazy imports, as above
        for concurrency in (1, 2, 4):
            before = busy_cpu_s()
            rate = harness_rate(settings, pool, args.episodes, concurrency)
            cpu_harness[concurrency] = 1000 * (busy_cpu_s() - before) / args.episodes
            base = direct[min(concurrency, 2)]
            print(
                f"harness, local/baseline, concurrency {concurrency}:  {rate:6.2f} episodes/s"
                f"  (overhead vs direct x{min(concurrency, 2)}: {base / rate - 1:+.0%})"
            )
        cpu = cpu_direct[1], cpu_harness[1]
        print(
            f"CPU per episode, whole machine: direct {cpu[0]:.0f} ms, harness {cpu[1]:.0f} ms "
            f"(overhead {cpu[1] - cpu[0]:.0f} ms)"
        )
        # The refit checks' price: the same run with them off (as before they existed) and on.
        by_refit = {}
        for on in (False, True):
            before = busy_cpu_s()
            harness_rate(
                settings.with_overrides({"grading.refit_check": on}), pool, args.episodes, 1
            )
            by_refit[on] = 1000 * (busy_cpu_s() - before) / args.episodes
        print(
            f"CPU per episode, refit checks off / on: {by_refit[False]:.0f} / {by_refit[True]:.0f} "
            f"ms (x{by_refit[True] / by_refit[False]:.2f})"
        )
        n = max(args.episodes, 64)
        for fit, what in ((False, "constant submission"), (True, "baseline pipeline")):
            rate = fake_server_rate(settings, pool, n, fit)
            print(
                f"fake Anthropic API, 50 ms/reply, concurrency 32, {what}: {rate:6.2f} episodes/s"
            )


if __name__ == "__main__":
    main()
