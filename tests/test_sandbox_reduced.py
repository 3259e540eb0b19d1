"""Reduced isolation (no root: rlimits, a process group and a scrubbed environment), concurrency
from many threads, and recovery when the zygote itself dies."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from leakbench.sandbox import SandboxError, SandboxLimits, SandboxPool

LIMITS = SandboxLimits(call_timeout_s=1.0, memory_mb=1024)


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    train = pd.DataFrame({"num_0": rng.normal(size=50), "target": rng.integers(0, 2, 50)})
    return train, train.drop(columns="target")


@pytest.fixture(scope="module")
def reduced():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        with SandboxPool(isolation="reduced", grace_s=0.5) as pool:
            yield pool


def test_reduced_pool_reports_and_works(reduced):
    assert reduced.isolation == "reduced"
    with reduced.open(*frames(), LIMITS) as session:
        assert session.execute("train_df.shape").output == "(50, 2)\n"
        result = session.execute("import os\n'ANTHROPIC_API_KEY' in os.environ, os.getcwd()")
        assert result.output.startswith("(False, ")
        assert "leakbench-sandbox-" in result.output  # its scratch folder
        assert "MemoryError" in session.execute("bytearray(10**11)").output
        result = session.execute("sum(range(10**12))")
        assert result.restarted and result.timed_out
        assert session.execute("train_df.shape").output == "(50, 2)\n"


def test_reduced_kill_takes_the_process_group(reduced):
    with reduced.open(*frames(), LIMITS) as session:
        pid = session.execute("import subprocess\np = subprocess.Popen(['sleep', '60'])\np.pid")
        child = int(pid.output)
        session.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.02)
        assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_many_threads_share_one_pool(reduced):
    errors: list[str] = []

    def episode(i: int) -> None:
        try:
            with reduced.open(*frames(), LIMITS) as session:
                session.execute(f"mine = {i}")
                for _ in range(5):
                    out = session.execute("mine").output
                    if out != f"{i}\n":
                        errors.append(f"{i}: {out!r}")
        except Exception as exc:
            errors.append(f"{i}: {exc!r}")

    threads = [threading.Thread(target=episode, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_closed_pool_leaves_no_processes(tmp_path):
    pool = SandboxPool(grace_s=0.5)
    pool.start()
    session = pool.open(*frames(), LIMITS)
    worker, zygote = session.pid, pool._proc.pid
    base = pool._base
    pool.close()
    assert not _alive(worker) and not _alive(zygote)
    assert not os.path.exists(base)
    with pytest.raises(SandboxError, match="closed"):
        pool.open(*frames(), LIMITS)


def test_zygote_death_is_recovered(reduced):
    old = reduced.open(*frames(), LIMITS)
    old.execute("x = 1")
    os.kill(reduced._proc.pid, signal.SIGKILL)
    reduced._proc.wait()
    # The next open starts a new zygote; the old worker died with its zygote (PDEATHSIG) and
    # the old session says so and carries on with a fresh worker.
    with reduced.open(*frames(), LIMITS) as fresh:
        assert fresh.execute("1 + 1").output == "2\n"
    result = old.execute("x")
    assert result.restarted
    assert old.execute("train_df.shape").output == "(50, 2)\n"
    old.close()


def _wait_for_spare(pool: SandboxPool) -> int:
    deadline = time.monotonic() + 10
    while pool._spare is None:
        assert time.monotonic() < deadline, "no spare worker was forked"
        time.sleep(0.01)
    return pool._spare[1].pid


def test_the_next_worker_is_forked_ahead_and_has_run_nothing():
    with SandboxPool(isolation="reduced", grace_s=0.5) as pool:
        with pool.open(*frames(), LIMITS) as first:
            assert first.execute("secret = 7").ok
            spare = _wait_for_spare(pool)
            assert spare != first.pid
            with pool.open(*frames(), LIMITS) as second:
                assert second.pid == spare  # handed out, not forked on demand
                assert second.execute("'secret' in globals()").output == "False\n"
                assert second.execute("train_df.shape").output == "(50, 2)\n"
            # Other limits: the spare forked for the old ones is not used, and it is killed.
            other = _wait_for_spare(pool)
            with pool.open(*frames(), SandboxLimits(call_timeout_s=2.0)) as third:
                assert third.pid != other
            deadline = time.monotonic() + 5
            while _alive(other):
                assert time.monotonic() < deadline, "the unused spare was not killed"
                time.sleep(0.01)
        last = _wait_for_spare(pool)
    assert not _alive(last)  # closing the pool kills the spare too


def test_no_spare_when_switched_off():
    with (
        SandboxPool(isolation="reduced", spare_workers=False) as pool,
        pool.open(*frames(), LIMITS) as session,
    ):
        assert session.execute("1").ok
        time.sleep(0.2)
        assert pool._spare is None
