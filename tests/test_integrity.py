"""Nothing a worker, a neighbour, a full disk or an interruption does can hang a run, lose an
episode or buy the agent a re-roll (issue 11)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from leakbench.sandbox import SandboxLimits, SandboxPool
from leakbench.sandbox import pool as pool_module
from leakbench.store.runs import RunBusy, RunDir
from tests.test_run import _spawn, _wait_for_lines
from tests.test_sandbox import LIMITS, make_frames

full_only = pytest.mark.skipif(os.geteuid() != 0, reason="full isolation needs root")
ROOT = str(Path(__file__).resolve().parents[1])


# -- neighbours ---------------------------------------------------------------------------------


def _hold_base_in_new_pid_namespace(tmpdir: Path) -> subprocess.Popen:
    """A process in a pid namespace of its own that owns a scratch base (as a pool does) and
    waits: its pid means nothing here, only its lock says it is alive."""
    code = textwrap.dedent(
        """
        import sys, time
        from leakbench.sandbox.pool import _owned_base
        base, fd = _owned_base()
        print(base, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": ROOT}
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@full_only
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_pool_never_sweeps_the_scratch_of_a_live_harness_in_another_pid_namespace(
    tmp_path, monkeypatch
):
    tmpdir = tmp_path / "shared-tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    neighbour = _hold_base_in_new_pid_namespace(tmpdir)
    try:
        assert neighbour.stdout is not None
        base = Path(neighbour.stdout.readline().strip())
        assert base.parent == tmpdir and base.is_dir()
        # its owner file holds a pid from another namespace: no process here may have it
        pool_module._sweep_abandoned()
        assert base.is_dir(), "a live neighbour's scratch was deleted"
        with SandboxPool(isolation="reduced", spare_workers=False) as pool:
            pool.start()
            assert base.is_dir()
    finally:
        os.killpg(neighbour.pid, signal.SIGKILL)
        neighbour.wait(timeout=60)
    # its lock goes with it (once the process inside has exited): the base is abandoned, and a
    # sweep removes it
    deadline = time.monotonic() + 60
    while base.exists() and time.monotonic() < deadline:
        pool_module._sweep_abandoned()
        time.sleep(0.1)
    assert not base.exists()


def test_a_scratch_folder_being_made_is_never_taken_for_abandoned(tmp_path, monkeypatch):
    # A neighbour sweeps at the worst moment: after the new folder and its lock file exist,
    # before the lock is taken. The lock file gets its name only once locked, so the sweep
    # passes the folder by.
    from leakbench.store import files

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    real_flock = files.fcntl.flock
    swept: list[bool] = []

    def flock_after_a_neighbours_sweep(fd: int, operation: int) -> None:
        if not swept and not operation & files.fcntl.LOCK_NB:
            swept.append(True)
            files.sweep_abandoned("leakbench-test-")
        real_flock(fd, operation)

    monkeypatch.setattr(files.fcntl, "flock", flock_after_a_neighbours_sweep)
    folder, fd = files.owned_temp_folder("leakbench-test-")
    try:
        assert swept and Path(folder).is_dir()
        assert (Path(folder) / files.OWNER_LOCK).is_file()
        files.sweep_abandoned("leakbench-test-")  # held: left alone
        assert Path(folder).is_dir()
    finally:
        os.close(fd)
    files.sweep_abandoned("leakbench-test-")  # released: abandoned, removed
    assert not Path(folder).exists()


def test_uid_blocks_are_leased_once_across_harnesses(monkeypatch):
    picks = iter([7, 7, 7, 8])
    monkeypatch.setattr(pool_module.secrets, "randbelow", lambda n: next(picks))
    first = pool_module._UidLease.take()
    try:
        # another "harness" (another open file description) finds block 7 taken: 8 it is
        second = pool_module._UidLease.take()
        try:
            assert first.first == pool_module.UID_BASE + 7 * pool_module.UID_BLOCK
            assert second.first == pool_module.UID_BASE + 8 * pool_module.UID_BLOCK
        finally:
            second.release()
    finally:
        first.release()
    top = pool_module.UID_BASE + pool_module.UID_BLOCKS * pool_module.UID_BLOCK
    assert top < 2**31  # every uid fits a signed 32-bit uid_t


def test_uid_blocks_are_leased_across_processes(tmp_path):
    """A block leased by another process (another harness) is never handed out here."""
    code = textwrap.dedent(
        """
        import sys, time
        from leakbench.sandbox import pool
        pool.secrets.randbelow = lambda n: 11
        lease = pool._UidLease.take()
        print(lease.first, flush=True)
        time.sleep(600)
        """
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        theirs = int(other.stdout.readline())
        picks = iter([11, 11, 12])
        original = pool_module.secrets.randbelow
        pool_module.secrets.randbelow = lambda n: next(picks)
        try:
            ours = pool_module._UidLease.take()
        finally:
            pool_module.secrets.randbelow = original
        ours.release()
        assert theirs == pool_module.UID_BASE + 11 * pool_module.UID_BLOCK
        assert ours.first == pool_module.UID_BASE + 12 * pool_module.UID_BLOCK
    finally:
        other.kill()
        other.wait(timeout=60)


@full_only
def test_a_worker_cannot_fill_the_disk_its_scratch_is_a_small_tmpfs():
    limits = SandboxLimits(call_timeout_s=120.0, memory_mb=1024, scratch_mb=16)
    train, test = make_frames()
    with SandboxPool(spare_workers=False) as pool, pool.open(train, test, limits) as session:
        code = textwrap.dedent(
            """
            import os
            written = 0
            try:
                with open("filler.bin", "wb") as f:
                    while written < 64 * 2**20:
                        f.write(b"x" * 2**20)
                        f.flush()
                        written += 2**20
            except OSError as exc:
                print("refused", exc.errno, written // 2**20)
            """
        )
        result = session.execute(code)
        assert result.ok and not result.restarted, result.output
        word, code_, mb = result.output.split()
        assert word == "refused" and int(code_) == errno.ENOSPC and int(mb) <= 16
        # the episode goes on: the worker is alive and can free its own space
        assert session.execute("os.remove('filler.bin'); 1 + 1").output == "2\n"


# -- hostile workers ----------------------------------------------------------------------------


def test_a_submission_flood_ends_the_call_not_the_harness():
    train, test = make_frames()
    answered = []

    def on_submit(request):
        from leakbench.sandbox import SubmitReply

        answered.append(request)
        return SubmitReply(False, "no")

    pool = SandboxPool(isolation="reduced", spare_workers=False)
    with pool, pool.open(train, test, LIMITS) as session:
        flood = "for _ in range(1000):\n    submit_answer({'y_pred_proba': [0.5] * 100})"
        result = session.execute(flood, on_submit=on_submit)
        assert result.restarted and not result.ok
        assert "more than 100 submissions" in result.output
        assert len(answered) == 100
        assert session.execute("1 + 1").output.endswith("2\n")


def test_an_oversize_frame_during_a_call_is_the_workers_fault():
    train, test = make_frames()
    oversize = textwrap.dedent(
        """
        import os, socket
        body = b'{"type": "result", "output": "' + b"x" * (9 * 2**20) + b'"}'
        socket.socket(fileno=os.dup(3)).sendall(len(body).to_bytes(8, "big") + body)
        """
    )
    pool = SandboxPool(isolation="reduced", spare_workers=False)
    with pool, pool.open(train, test, LIMITS) as session:
        result = session.execute(oversize)
        assert result.restarted and "limit" in result.output
        assert session.execute("1 + 1").output.endswith("2\n")


# -- the run: appends, signals, second writers, resumes -----------------------------------------


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def test_a_failing_append_stops_the_run_with_a_clear_message_and_resume_finishes_it(
    cli, tmp_path, monkeypatch
):
    results = tmp_path / "results"
    real_append = RunDir.append
    calls = {"n": 0}

    def append(self, record):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(self, record)

    monkeypatch.setattr(RunDir, "append", append)
    result = cli(
        "--results-dir", results, "run", "--model", "local/baseline", "--runs", "6", "-j", "1"
    )
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.output
    run = next(results.iterdir())
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    assert len(_records(run)) == 2
    monkeypatch.setattr(RunDir, "append", real_append)
    again = cli("--results-dir", results, "run", "--resume", run.name)
    assert again.exit_code == 0, again.output
    assert sorted(r["index"] for r in _records(run)) == list(range(6))


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    results = tmp_path / "results"
    with _spawn(results, 40) as proc:
        run = _wait_for_lines(results, 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert f"leakbench run --resume {run.name}" in stderr.decode()
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    records = _records(run)
    assert records and all(r["outcome"] != "error" for r in records)  # nothing spurious


def test_a_second_writer_of_a_run_is_refused_in_one_line(cli, tmp_path):
    results = tmp_path / "results"
    first = cli("--results-dir", results, "run", "--model", "local/baseline", "--runs", "1")
    assert first.exit_code == 0, first.output
    run = RunDir.open(next(results.iterdir()))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with run.writing("test"):
            holding.set()
            release.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(60)
        other = RunDir.open(run.path)  # another writer (the same object would nest)
        with pytest.raises(RunBusy, match="being written by another leakbench"):
            other.writing("x").__enter__()
        for args in (
            ("run", "--resume", run.run_id, "--runs", "1"),
            ("grade", run.run_id, "--threshold", "0.5"),
        ):
            result = cli("--results-dir", results, *args)
            assert result.exit_code == 1, result.output
            assert "being written by another leakbench" in result.stderr
            assert result.stderr.strip().count("\n") == 0
    finally:
        release.set()
        holder.join(60)
    assert not holder.is_alive()


def test_resume_refuses_a_setting_changed_in_any_layer(cli, tmp_path, monkeypatch):
    results = tmp_path / "results"
    first = cli("--results-dir", results, "run", "--model", "local/baseline", "--runs", "1")
    assert first.exit_code == 0, first.output
    run = next(results.iterdir()).name
    monkeypatch.setenv("LEAKBENCH_GRADING__THRESHOLD", "0.5")
    result = cli("--results-dir", results, "run", "--resume", run)
    assert result.exit_code == 2 and "grading.threshold" in result.stderr
    monkeypatch.delenv("LEAKBENCH_GRADING__THRESHOLD")
    config = tmp_path / "more.toml"
    config.write_text("[agent]\nmax_steps = 3\n")
    result = cli("--results-dir", results, "-c", config, "run", "--resume", run)
    assert result.exit_code == 2 and "agent.max_steps" in result.stderr
    # what only changes speed may change
    monkeypatch.setenv("LEAKBENCH_RUN__CONCURRENCY", "3")
    assert cli("--results-dir", results, "run", "--resume", run).exit_code == 0


def test_episodes_in_error_make_the_run_loud_and_resume_runs_them_again(cli, tmp_path, monkeypatch):
    from leakbench.env import episode

    real = episode.make_instance

    def broken(task, seed, *, key):
        if seed == 1:
            raise RuntimeError("the machine broke")
        return real(task, seed, key=key)

    monkeypatch.setattr(episode, "make_instance", broken)
    results = tmp_path / "results"
    args = ("--results-dir", results, "run", "--model", "local/baseline", "--runs", "3")
    result = cli(*args, "--json")
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed_with_errors" and summary["error"] == 1
    assert summary["errors"][0]["message"].endswith("the machine broke")
    assert "1 of 3 episodes ended in error" in result.stderr and "--resume" in result.stderr
    monkeypatch.setattr(episode, "make_instance", real)
    run = next(results.iterdir())
    again = cli("--results-dir", results, "run", "--resume", run.name)
    assert again.exit_code == 0, again.output
    assert [r["outcome"] != "error" for r in _records(run)] == [True] * 3
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"


def test_write_atomic_keeps_the_umask(tmp_path):
    from leakbench.store.files import write_atomic

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    write_atomic(tmp_path / "b.txt", "x", mode=0o600)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_an_unusable_results_folder_is_one_line(cli, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    result = cli("--results-dir", blocker, "run", "--model", "local/baseline", "--runs", "1")
    assert result.exit_code == 1, result.output
    assert "cannot make a run folder" in result.stderr and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0


def test_ctrl_c_during_start_up_marks_the_run_interrupted(cli, tmp_path, monkeypatch):
    from leakbench.env import prompts

    def interrupted(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(prompts, "build_prompts", interrupted)
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--model", "local/baseline", "--runs", "2")
    assert result.exit_code == 130, result.output
    run = next(results.iterdir())
    assert f"leakbench run --resume {run.name}" in result.stderr
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"


def test_regrade_measures_a_check_that_was_off_during_the_run(cli, tmp_path):
    results = tmp_path / "results"
    config = tmp_path / "off.toml"
    config.write_text("[grading]\nleak_audit = false\n")
    args = ("--results-dir", results, "-c", config, "run", "--model", "local/leaky")
    first = cli(*args, "--runs", "1")
    assert first.exit_code == 0, first.output
    run = next(results.iterdir())
    grade_file = run / "episodes" / "0000" / "grade.json"
    before = json.loads(grade_file.read_text())
    assert "leak_audit" not in before["checks"]["measured"] and not before["leaks_detected"]
    # re-graded under the preset (audit on): the stored pipeline is audited now, not called clean
    again = cli("--results-dir", results, "grade", run.name)
    assert again.exit_code == 0, again.output
    after = json.loads(grade_file.read_text())
    assert "leak_audit" in after["checks"]["measured"]
    assert after["leaks_detected"] and "leak" in after["failed_checks"]
    assert _records(run)[0]["leaks_detected"] == after["leaks_detected"]
