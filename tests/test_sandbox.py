"""The sandbox contains runaway and hostile agent code (SPEC §5.2, issue 3).

Each attack runs in its own session while a bystander session holds state; after every attack the
harness, the pool and the bystander must still work and the bystander must keep its variables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leakbench.sandbox import CallResult, SandboxLimits, SandboxPool

FAKE_KEY = "sk-ant-fake-key-for-tests-0123456789"
# Calls that are not about the timeout get a generous one: on a busy machine even `1 + 1` may
# wait a second for a core. The attacks that are about it get a short one, SHORT.
LIMITS = SandboxLimits(call_timeout_s=60.0, memory_mb=1024, max_processes=16)
SHORT = dataclasses.replace(LIMITS, call_timeout_s=1.0)
# How long an interrupted call may take to yield before its worker is killed: long enough that
# a busy machine does not turn a soft timeout into a restart.
GRACE_S = 5.0


def make_frames(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"num_{i}": rng.normal(size=n) for i in range(5)})
    frame["cat0"] = pd.Categorical(rng.integers(0, 4, n))
    frame["target"] = (frame["num_0"] + rng.normal(size=n) > 0).astype(int)
    frame["leak_future_signal"] = frame["target"]
    train = frame.iloc[: n // 2].reset_index(drop=True)
    test = frame.iloc[n // 2 :].drop(columns="target").reset_index(drop=True)
    return train, test


@pytest.fixture(scope="module")
def pool():
    # The harness environment holds a key while the zygote starts; no worker may ever see it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        mp.setenv("LEAKBENCH_SECRET", "hush")
        with SandboxPool(grace_s=GRACE_S) as p:
            yield p


@pytest.fixture(scope="module")
def bystander(pool):
    train, test = make_frames()
    with pool.open(train, test, LIMITS) as session:
        assert session.execute("kept = 41 + 1").ok
        yield session


@contextlib.contextmanager
def attacked(pool, bystander, limits: SandboxLimits):
    """A session for one attack; afterwards, checks that the attack hurt nobody else."""
    train, test = make_frames()
    with pool.open(train, test, limits) as s:
        yield s
    assert bystander.execute("kept").output == "42\n"
    with pool.open(train, test, LIMITS) as fresh:
        assert fresh.execute("train_df.shape").output == "(100, 8)\n"


@pytest.fixture
def session(pool, bystander):
    with attacked(pool, bystander, LIMITS) as s:
        yield s


@pytest.fixture
def short_session(pool, bystander):
    """For the attacks that only a timeout stops."""
    with attacked(pool, bystander, SHORT) as s:
        yield s


full_only = pytest.mark.skipif(os.geteuid() != 0, reason="full isolation needs root")


def failed_or_restarted(result: CallResult) -> bool:
    return (not result.ok) or result.restarted


# -- python_expression semantics ----------------------------------------------------------------


def test_state_persists_and_trailing_expression_is_shown(session):
    assert session.execute("x = train_df.shape[0] * 2").output == ""
    result = session.execute("y = x + 1\ny")
    assert result.ok and result.output == "201\n"
    assert session.execute("train_df.shape").output == "(100, 8)\n"
    assert session.execute("[type(v).__name__ for v in (pd, np, sklearn, scipy)]").ok


def test_workers_collect_their_garbage(session):
    # The zygote imports with the cyclic GC off (faster), then turns it on before any fork: a
    # worker that inherited it off would keep every reference cycle agent code makes.
    result = session.execute("import gc; gc.isenabled(), gc.get_freeze_count() > 0")
    assert result.ok and result.output == "(True, True)\n"


def test_exception_is_a_tool_error_with_only_the_users_traceback(session):
    result = session.execute("def f():\n    return 1 / 0\nf()")
    assert not result.ok and not result.restarted
    assert "ZeroDivisionError: division by zero" in result.output
    assert "return 1 / 0" in result.output
    assert "worker.py" not in result.output and "leakbench" not in result.output


def test_output_is_truncated_with_a_marker(session):
    result = session.execute("print('x' * 10**8)")
    assert "[output truncated: " in result.output
    assert len(result.output) < LIMITS.stdout_max_chars + 200
    assert session.execute("1 + 1").output == "2\n"


def test_c_level_writes_are_captured(session):
    result = session.execute("import os\nos.write(1, b'from fd one\\n')\nos.write(2, b'fd two\\n')")
    assert "from fd one" in result.output and "fd two" in result.output


def test_print_values_guard_withholds_raw_data(session):
    # 8 columns x factor 2 = 16 numbers allowed.
    result = session.execute("print(train_df.head(10))")
    assert result.ok and "output withheld" in result.output
    assert "num_0" not in result.output
    assert session.execute("print(train_df['num_0'].mean().round(3))").output.count(".") == 1


def test_soft_timeout_interrupts_and_keeps_state(short_session):
    session = short_session
    session.execute("keep = 'me'")
    result = session.execute("while True: pass")
    assert result.timed_out and not result.ok and not result.restarted
    assert "interrupted" in result.output
    assert session.execute("keep").output == "'me'\n"


def test_c_level_loop_is_killed_and_restarted_with_data(short_session):
    session = short_session
    session.execute("gone = 1")
    start = time.monotonic()
    result = session.execute("sum(range(10**12))")
    # Run to its end the sum would take hours; killed, the call ends after timeout + grace.
    assert time.monotonic() - start < 120
    assert result.restarted and result.timed_out and not result.ok
    assert "state" in result.output or "variables" in result.output
    assert "NameError" in session.execute("gone").output
    assert session.execute("train_df.shape").output == "(100, 8)\n"


def test_own_signal_handler_ends_in_a_restart(short_session):
    # The agent's handler replaces the sandbox's interrupt, so only the hard kill can stop it.
    code = "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nwhile True: pass"
    result = short_session.execute(code)
    assert result.restarted and result.timed_out


def test_memory_bomb_is_a_memory_error(session):
    result = session.execute("bytearray(10**11)")
    assert failed_or_restarted(result) and "MemoryError" in result.output


def test_os_exit_restarts_the_worker(session):
    session.execute("gone = 1")
    result = session.execute("import os\nos._exit(0)")
    assert result.restarted and not result.ok
    assert "NameError" in session.execute("gone").output


def test_killing_the_parent_hurts_nobody(session, pool):
    result = session.execute("import os\nos.kill(os.getppid(), 9)")
    assert result.ok or result.restarted
    assert pool._proc.poll() is None  # the zygote is alive


def test_exit_is_an_error_not_a_crash(session):
    result = session.execute("import sys\nsys.exit(3)")
    assert not result.ok and not result.restarted and "SystemExit" in result.output


@full_only
def test_fork_bomb_is_contained(short_session):
    session = short_session
    result = session.execute("import os\nwhile True: os.fork()")
    assert failed_or_restarted(result)
    # No process of the bomb survives the call. Counted in the worker's own pid namespace, so
    # whatever else runs on the machine (another suite's workers too) does not count.
    assert (
        session.execute("import os\nlen([p for p in os.listdir('/proc') if p.isdigit()])").output
        == "1\n"
    )


# -- containment ----------------------------------------------------------------------------------


def test_environment_is_scrubbed(session, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    result = session.execute(
        "import os\n"
        "env = dict(os.environ)\n"
        "raw = open('/proc/self/environ', 'rb').read().decode()\n"
        "[k for k in env if 'ANTHROPIC' in k or 'LEAKBENCH' in k or 'PYTHONPATH' in k], "
        "'sk-ant' in raw or 'hush' in raw"
    )
    assert result.output == "([], False)\n"


@full_only
def test_network_is_unreachable(session):
    for host, port in (("127.0.0.1", 80), ("8.8.8.8", 53), ("1.1.1.1", 80)):
        code = (
            "import socket, errno\n"
            "try:\n"
            f"    socket.create_connection(({host!r}, {port}), timeout=2)\n"
            "    r = 'connected'\n"
            "except OSError as e:\n"
            "    r = errno.errorcode.get(e.errno)\n"
            "r"
        )
        assert session.execute(code).output == "'ENETUNREACH'\n", host


@full_only
@pytest.mark.parametrize("folder", ["/tmp", "/etc", "/usr", "REPO"])
def test_writes_outside_scratch_fail(session, folder):
    if folder == "REPO":  # not even in the worker's view
        folder = os.path.dirname(os.path.dirname(__file__))
    # A name of this test's own: another suite on the machine may be writing its own attempt.
    path = os.path.join(folder, f"leakbench-{uuid.uuid4().hex}")
    result = session.execute(f"open({path!r}, 'w').write('x')")
    assert not result.ok
    assert any(
        why in result.output
        for why in ("Read-only file system", "Permission denied", "No such file or directory")
    )
    assert not os.path.exists(path)


@full_only
def test_dev_shm_is_the_workers_own(session):
    name = f"/dev/shm/leakbench-{uuid.uuid4().hex}"
    assert session.execute(f"open({name!r}, 'w').write('x')").output == "1\n"
    assert not os.path.exists(name)  # a tmpfs of the worker's own, not the host's /dev/shm


def test_scratch_is_writable_and_private(session):
    result = session.execute(
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('ok')\n"
        "tempfile.NamedTemporaryFile().name.startswith(os.getcwd()), open('notes.txt').read()"
    )
    assert result.output == "(True, 'ok')\n"


@full_only
def test_private_label_file_is_unreadable(session):
    # What the harness relies on: private files are written 0600 by the harness user (root)
    # (leakbench.task.files.PRIVATE_MODE). The folder here is world-readable on purpose, so only
    # the file mode and the worker's own uid stand between the agent and the labels.
    folder = tempfile.mkdtemp(prefix="leakbench-private-")
    try:
        os.chmod(folder, 0o755)
        labels = os.path.join(folder, "test_answers.csv")
        with open(labels, "w") as fh:
            fh.write("target\n1\n0\n")
        os.chmod(labels, stat.S_IRUSR | stat.S_IWUSR)
        result = session.execute(f"open({labels!r}).read()")
        # Not in the worker's view at all; were it there, its mode would keep the worker out.
        assert not result.ok
        assert "FileNotFoundError" in result.output or "PermissionError" in result.output
        assert "target" not in result.output.split("Error")[-1]
    finally:
        os.unlink(labels)
        os.rmdir(folder)


@full_only
def test_harness_process_is_invisible(session):
    me = os.getpid()
    for name in ("environ", "mem", "cmdline"):
        result = session.execute(f"open('/proc/{me}/{name}', 'rb').read(64)")
        assert not result.ok, name
        assert "FileNotFoundError" in result.output or "PermissionError" in result.output
    result = session.execute(
        "import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())"
    )
    assert result.output == "[1]\n"  # only the worker itself, as pid 1 of its namespace


@full_only
def test_worker_runs_as_an_unprivileged_uid(session, pool):
    result = session.execute(
        "import os\nos.getuid() != 0 and os.getgid() != 0 and os.getgroups() == []"
    )
    assert result.output == "True\n"
    assert pool.isolation == "full"


def test_worker_holds_no_harness_or_zygote_handles(session):
    # Only stdin (/dev/null), the two output captures, its own socket and the capture memfd.
    result = session.execute("import os\nsorted(int(fd) for fd in os.listdir('/proc/self/fd'))")
    fds = eval(result.output)
    assert [fd for fd in fds if fd > 4] in ([], [5]), fds  # 5: the listdir handle itself


def test_dead_session_raises_clean_errors(pool):
    train, test = make_frames()
    session = pool.open(train, test, LIMITS)
    session.close()
    session.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        session.execute("1")


@full_only
def test_results_folder_and_secret_file_are_not_in_the_view(session):
    # world-readable on purpose (pytest's tmp_path is 0700, which alone would keep the worker out)
    base = Path(tempfile.mkdtemp(prefix="leakbench-hide-"))
    base.chmod(0o755)
    results = base / "results"
    (results / "run").mkdir(parents=True)
    (results / "run" / "grade.json").write_text("{}")
    dotenv = base / ".env"
    dotenv.write_text(f"ANTHROPIC_API_KEY={FAKE_KEY}\n")
    dotenv.chmod(0o644)  # readable by anyone: only the worker's view keeps it out
    try:
        listing = session.execute(f"import os; os.listdir({str(results)!r})")
        assert not listing.ok and "FileNotFoundError" in listing.output
        secret = session.execute(f"open({str(dotenv)!r}).read()")
        assert not secret.ok and "FileNotFoundError" in secret.output
        assert FAKE_KEY not in secret.output
        assert FAKE_KEY in dotenv.read_text()  # the harness's own view is untouched
    finally:
        shutil.rmtree(base)
