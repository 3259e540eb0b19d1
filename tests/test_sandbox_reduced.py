"""Reduced isolation (no root: rlimits, a process group and a scrubbed environment), concurrency
from many threads, and recovery when the zygote itself dies."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from leakbench.sandbox import SandboxError, SandboxLimits, SandboxPool

# Generous: on a busy machine even a trivial call may wait a while for a core. SHORT is for the
# one call that must be stopped by its timeout.
LIMITS = SandboxLimits(call_timeout_s=60.0, memory_mb=1024)
SHORT = dataclasses.replace(LIMITS, call_timeout_s=1.0)


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
    with reduced.open(*frames(), SHORT) as session:
        result = session.execute("sum(range(10**12))")
        assert result.restarted and result.timed_out
        assert session.execute("train_df.shape").output == "(50, 2)\n"


def test_reduced_kill_takes_the_process_group(reduced):
    with reduced.open(*frames(), LIMITS) as session:
        pid = session.execute("import subprocess\np = subprocess.Popen(['sleep', '600'])\np.pid")
        child = _process(int(pid.output))
        try:
            session.close()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(child):
                time.sleep(0.02)
            assert not _alive(child)
        finally:
            if _alive(child):  # not left behind for ten minutes when the test fails
                child.kill()


def _process(pid: int) -> psutil.Process | None:
    """A handle on a live process, or None if it is gone already. Unlike a bare pid, it does not
    mistake a later process that got the same pid (pids wrap quickly on a busy machine)."""
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _alive(proc: psutil.Process | None) -> bool:
    if proc is None:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
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
    deadline = time.monotonic() + 240
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "episodes still running"
    assert errors == []


def test_closed_pool_leaves_no_processes(tmp_path):
    pool = SandboxPool(grace_s=0.5)
    pool.start()
    session = pool.open(*frames(), LIMITS)
    worker, zygote = _process(session.pid), _process(pool._proc.pid)
    assert _alive(worker) and _alive(zygote)
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
    deadline = time.monotonic() + 60
    while (spare := pool._spare) is None:
        assert time.monotonic() < deadline, "no spare worker was forked"
        time.sleep(0.01)
    return spare[1].pid


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
            unused = _process(other)
            with pool.open(*frames(), SandboxLimits(call_timeout_s=2.0)) as third:
                assert third.pid != other
            deadline = time.monotonic() + 30
            while _alive(unused):
                assert time.monotonic() < deadline, "the unused spare was not killed"
                time.sleep(0.01)
        last = _process(_wait_for_spare(pool))
    assert not _alive(last)  # closing the pool kills the spare too


def test_no_spare_when_switched_off():
    with (
        SandboxPool(isolation="reduced", spare_workers=False) as pool,
        pool.open(*frames(), LIMITS) as session,
    ):
        assert session.execute("1").ok
        time.sleep(0.2)
        assert pool._spare is None
