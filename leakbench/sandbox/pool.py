"""The harness side of the sandbox: one warm zygote per process, workers handed out as sessions."""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os
import queue
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leakbench.sandbox.models import SandboxError, SandboxLimits, WorkerHandle
from leakbench.store.files import owned_temp_folder, sweep_abandoned

if TYPE_CHECKING:
    import pandas as pd

    from leakbench.sandbox.session import Session

# Worker uids: far above real users and "nobody" (65534), below 2**31. Each pool leases one block
# of UID_BLOCK uids for its life (``_UidLease``), so no two harnesses on the machine hand out the
# same uid: per-uid process limits and file ownership stay per episode.
UID_BASE = 2_000_000
UID_BLOCK = 65_536
UID_BLOCKS = 32_000
ZYGOTE_START_TIMEOUT_S = 120.0
SPAWN_TIMEOUT_S = 30.0


class SandboxPool:
    """One warm zygote shared by all episodes of this process; thread-safe. Context manager."""

    def __init__(
        self,
        *,
        isolation: str = "auto",
        grace_s: float = 2.0,
        spare_workers: bool = True,
    ) -> None:
        """``isolation``: "auto" (full if root else reduced), "full" or "reduced".

        ``grace_s``: how long a timed-out call may take to yield before its worker is killed.
        ``spare_workers``: keep one worker forked and contained ahead of the next ``open``.
        """
        if isolation not in ("auto", "full", "reduced"):
            raise ValueError(f"isolation must be auto, full or reduced, not {isolation!r}")
        self._requested = isolation
        self.isolation = "reduced" if isolation == "reduced" else "full"
        # Set when workers get less than full isolation: why, and what they can see then.
        self.isolation_note: str | None = None
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._base: str | None = None
        self._closed = False
        self._counter = 0
        self._uids: _UidLease | None = None
        self._owner_lock: int | None = None  # flock held on the scratch base for the pool's life
        self._uids_in_use: set[int] = set()
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._reaper = _Reaper(self._release_uid)
        self._spare_workers = spare_workers
        self._spare: tuple[dict[str, Any], WorkerHandle] | None = None  # (limits, worker)
        self._refilling = False
        self._awaiting_hello = False  # launched, its hello not read yet (``launch``)
        self._log_path: str | None = None
        # A forgotten pool must not leave workers or root-owned scratch folders behind.
        atexit.register(self.close)

    def __enter__(self) -> SandboxPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the zygote (about a second, once); idempotent."""
        with self._lock:
            self._ensure_zygote()

    def open(self, train_df: pd.DataFrame, test_df: pd.DataFrame, limits: SandboxLimits) -> Session:
        """A new episode sandbox holding these two frames (the only data it ever gets)."""
        from leakbench.sandbox.session import Session  # pandas: not needed to launch the zygote

        session = Session(self, train_df, test_df, limits)
        self._sessions.add(session)
        return session

    def close(self) -> None:
        """Kill every worker and the zygote, and remove every scratch folder."""
        with self._lock:
            self._closed = True
            for session in list(self._sessions):
                session.close()
            self._stop_zygote()
        self._reaper.drain(timeout=10.0)
        atexit.unregister(self.close)
        if self._base:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
        if self._owner_lock is not None:
            os.close(self._owner_lock)  # releases the flock: nothing is left to sweep
            self._owner_lock = None
        if self._uids is not None:
            self._uids.release()
            self._uids = None

    # -- zygote -------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the zygote without waiting for it: it imports the scientific stack in its own
        process while the caller goes on (``start`` or the first ``open`` waits for it)."""
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            if self._proc is None or self._proc.poll() is not None:
                self._launch()

    def _ensure_zygote(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        if self._proc is not None and self._proc.poll() is None:
            if self._awaiting_hello:
                self._await_hello()
            return
        self._launch()
        self._await_hello()

    def _launch(self) -> None:
        self._stop_zygote()
        mode = self._requested
        if mode == "auto":
            mode = "full" if os.geteuid() == 0 else "reduced"
        if mode == "full" and os.geteuid() != 0:
            raise SandboxError("full isolation needs root; use isolation='reduced' or 'auto'")
        if self._base is None:
            _sweep_abandoned()
            self._base, self._owner_lock = _owned_base()
        if self._uids is None and mode == "full":  # reduced workers keep the harness's uid
            self._uids = _UidLease.take()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(__file__).resolve().parents[2])
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": root,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        log_path = self._log_path = os.path.join(self._base, "zygote.log")
        with open(log_path, "wb") as log:
            os.chmod(log_path, 0o600)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "leakbench.sandbox.zygote", str(child.fileno()), mode],
                pass_fds=[child.fileno()],
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # Ctrl-C in the terminal is the harness's to handle
            )
        child.close()
        self._ctrl = parent
        self._awaiting_hello = True

    def _await_hello(self) -> None:
        parent, log_path = self._ctrl, self._log_path
        assert parent is not None and log_path is not None
        self._awaiting_hello = False
        try:
            parent.settimeout(ZYGOTE_START_TIMEOUT_S)
            data = parent.recv(1 << 16)
            hello = json.loads(data) if data else {"ok": False, "error": "exited"}
        except (OSError, ValueError) as exc:
            hello = {"ok": False, "error": str(exc)}
        if not hello.get("ok"):
            self._stop_zygote()
            tail = Path(log_path).read_text(errors="replace")[-2000:]
            raise SandboxError(f"the sandbox zygote did not start: {hello.get('error')}\n{tail}")
        self.isolation = hello["mode"]
        self.isolation_note = None
        if self.isolation != "full":
            why = hello.get("why") or ("not root" if self._requested == "auto" else "requested")
            self.isolation_note = f"{why}; {reduced_exposure()}"

    def _stop_zygote(self) -> None:
        self._awaiting_hello = False
        if self._spare is not None:  # it dies with its zygote
            self.dispose(self._spare[1])
            self._spare = None
        if self._ctrl is not None:
            self._ctrl.close()  # EOF tells the zygote to kill its children and exit
            self._ctrl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    # -- workers ------------------------------------------------------------------------------

    def spawn(self, limits: SandboxLimits) -> WorkerHandle:
        """A contained worker that has run nothing yet: the spare one if it was forked for these
        limits, else a new one; then a new spare is forked in the background. Raises
        ``SandboxError`` when no worker can be started."""
        wanted = asdict(limits)
        with self._lock:
            self._ensure_zygote()
            spare, self._spare = self._spare, None
            if spare is not None and (spare[0] != wanted or not _alive(spare[1])):
                self.dispose(spare[1])
                spare = None
            worker = spare[1] if spare is not None else self._fork(wanted)
        self._refill(wanted)
        return worker

    def _refill(self, wanted: dict[str, Any]) -> None:
        """Fork the next spare worker on a background thread (one at a time), so that the next
        episode finds its worker contained and waiting instead of waiting for the fork."""
        if not self._spare_workers:
            return
        with self._lock:
            if self._closed or self._refilling:
                return
            self._refilling = True

        def fork_spare() -> None:
            worker = None
            try:
                with self._lock:
                    if not self._closed and self._spare is None:
                        self._ensure_zygote()
                        worker = self._fork(wanted)
                        self._spare, worker = (wanted, worker), None
            except SandboxError:
                pass  # the next episode forks its own worker, and says why if it cannot
            finally:
                with self._lock:
                    self._refilling = False
                if worker is not None:
                    self.dispose(worker)

        threading.Thread(target=fork_spare, name="sandbox-spare", daemon=True).start()

    def _fork(self, request_limits: dict[str, Any]) -> WorkerHandle:
        """Fork a contained worker from the zygote (the caller holds the lock)."""
        assert self._ctrl is not None and self._base is not None
        uid = self._next_uid()
        self._counter += 1
        scratch = os.path.join(self._base, f"w{self._counter}")
        os.mkdir(scratch, 0o700)
        if self.isolation == "full":
            os.chown(scratch, uid, uid)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        request = {
            "op": "spawn",
            "uid": uid,
            "scratch": scratch,
            "hide": _harness_folders(),
            "limits": request_limits,
        }
        try:
            self._ctrl.settimeout(SPAWN_TIMEOUT_S)
            socket.send_fds(self._ctrl, [json.dumps(request).encode()], [theirs.fileno()])
            data, fds, _flags, _addr = socket.recv_fds(self._ctrl, 1 << 16, 1)
            reply = json.loads(data) if data else {"ok": False, "error": "zygote exited"}
        except (OSError, ValueError) as exc:
            reply, fds = {"ok": False, "error": str(exc)}, []
        finally:
            theirs.close()
        if not reply.get("ok") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            ours.close()
            self._uids_in_use.discard(uid)
            shutil.rmtree(scratch, ignore_errors=True)
            # A zygote that fails a request is restarted rather than trusted again.
            self._stop_zygote()
            raise SandboxError(f"could not start a sandbox worker: {reply.get('error')}")
        return WorkerHandle(int(reply["pid"]), fds[0], ours, scratch, uid)

    def _next_uid(self) -> int:
        first = self._uids.first if self._uids is not None else UID_BASE  # unused when reduced
        if len(self._uids_in_use) >= UID_BLOCK:
            raise SandboxError(f"more than {UID_BLOCK} live workers in one pool")
        while True:
            uid = first + self._counter % UID_BLOCK
            self._counter += 1
            if uid not in self._uids_in_use:
                self._uids_in_use.add(uid)
                return uid

    def _release_uid(self, uid: int) -> None:
        with self._lock:
            self._uids_in_use.discard(uid)

    def dispose(self, worker: WorkerHandle) -> None:
        """Kill a worker without waiting: the kernel tears its namespaces down on its own time;
        its scratch folder and uid are freed once it has exited."""
        if self.isolation == "reduced":
            with contextlib.suppress(OSError):  # the process group it made with setsid
                os.killpg(worker.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
        worker.sock.close()
        self._reaper.add(worker)


def reduced_exposure() -> str:
    """What a worker under reduced isolation can see: everything its uid (the harness's) can."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = f"uid {os.getuid()}"
    return (
        f"nothing is hidden from workers: they run as {user} and can read every file {user} "
        "can read, including the working directory, the leakbench source and presets, the "
        "results folder of every run and every instance folder (answer keys included), and "
        f"{os.path.expanduser('~')}; they can also see and signal {user}'s processes and use "
        "the network"
    )


def _harness_folders() -> list[str]:
    """The harness's working directory and home. A fully isolated worker never sees them: they
    are not in its view, or are covered should they lie inside a bound system folder."""
    folders = {os.path.expanduser("~")}
    with contextlib.suppress(OSError):
        folders.add(os.getcwd())
    return sorted(os.path.realpath(f) for f in folders)


def _alive(worker: WorkerHandle) -> bool:
    """Whether the worker has not exited (its pidfd turns readable when it does)."""
    poller = select.poll()
    poller.register(worker.pidfd, select.POLLIN)
    return not poller.poll(0)


class _Reaper:
    """Waits for killed workers to exit, then removes their scratch folders and frees their uid."""

    def __init__(self, release: Any) -> None:
        self._release = release
        self._queue: queue.Queue[WorkerHandle] = queue.Queue()
        self._pending: list[tuple[WorkerHandle, float]] = []
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def add(self, worker: WorkerHandle) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sandbox-reaper")
                self._thread.daemon = True
                self._thread.start()
        self._queue.put(worker)

    def _loop(self) -> None:
        while True:
            try:
                self._pending.append((self._queue.get(timeout=0.05), time.monotonic()))
                self._queue.task_done()  # only now: drain() never sees it in neither place
                continue
            except queue.Empty:
                pass
            if not self._pending:
                time.sleep(0.05)
                continue
            poller = select.poll()
            for worker, _ in self._pending:
                poller.register(worker.pidfd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(50)}
            still = []
            for worker, since in self._pending:
                if worker.pidfd in ready or time.monotonic() - since > 60:
                    os.close(worker.pidfd)
                    shutil.rmtree(worker.scratch, ignore_errors=True)
                    self._release(worker.uid)
                else:
                    still.append((worker, since))
            self._pending = still

    def drain(self, timeout: float) -> None:
        """Wait until every killed worker has been cleaned up (or the timeout passes)."""
        end = time.monotonic() + timeout
        while (self._pending or self._queue.unfinished_tasks) and time.monotonic() < end:
            time.sleep(0.02)


_BASE_PREFIX = "leakbench-sandbox-"


def _owned_base() -> tuple[str, int]:
    """A new scratch base folder in the temp folder, and the descriptor of the ``flock`` that
    marks it as ours for as long as this process holds it (a crash releases it too)."""
    base, fd = owned_temp_folder(_BASE_PREFIX)
    os.chmod(base, 0o711)  # workers may enter their own folder, not list others
    return base, fd


def _sweep_abandoned() -> None:
    """Remove scratch bases whose owner died without closing its pool (kill -9, OOM)."""
    sweep_abandoned(_BASE_PREFIX)


class _UidLease:
    """One block of worker uids, held by an ``flock`` on a lock file in a folder every
    harness on the machine shares (``/run/leakbench`` when it can be made, else the temp
    folder). Blocks are tried in random order, so harnesses that cannot see each other's lock
    folder (different mounts) still collide only with probability 1/UID_BLOCKS."""

    def __init__(self, first: int, fd: int) -> None:
        self.first = first
        self._fd = fd

    @classmethod
    def take(cls) -> _UidLease:
        folder = _lease_folder()
        for _ in range(256):
            block = secrets.randbelow(UID_BLOCKS)
            path = os.path.join(folder, f"uids-{block}.lock")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise SandboxError(f"cannot lease worker uids in {folder}: {exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # another harness's block
                raise SandboxError(f"cannot lease worker uids in {folder}: {exc}") from None
            return cls(UID_BASE + block * UID_BLOCK, fd)
        raise SandboxError("no free block of worker uids (256 tries)")

    def release(self) -> None:
        os.close(self._fd)


def _lease_folder() -> str:
    for folder in ("/run/leakbench", os.path.join(tempfile.gettempdir(), "leakbench-uids")):
        with contextlib.suppress(OSError):
            os.makedirs(folder, mode=0o700, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
    raise SandboxError("no writable folder to lease worker uids in (/run or the temp folder)")
