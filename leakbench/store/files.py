"""Atomic writes and crash-tolerant JSONL, used for every file leakbench produces."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes | str, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half,
    and the new one survives a power cut once this returns.

    Temp file in the same folder, fsync, ``os.replace``, fsync of the folder; the folder is
    created if needed. ``mode`` defaults to what ``open`` would give (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


OWNER_LOCK = "owner.lock"


def owned_temp_folder(prefix: str) -> tuple[str, int]:
    """A new folder in the temp folder, and the descriptor of the ``flock`` that marks it as
    this process's for as long as the descriptor is open (a crash releases it too)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    staging = os.path.join(folder, f".{OWNER_LOCK}.new")
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())  # for people only: pids mean nothing across namespaces
    # The lock file gets the name ``sweep_abandoned`` looks for only once it is locked: between
    # creating and locking it, another process's sweep would take the new folder for abandoned.
    os.rename(staging, os.path.join(folder, OWNER_LOCK))
    return folder, fd


def sweep_abandoned(prefix: str) -> None:
    """Remove ``owned_temp_folder`` folders whose owner died without removing them (kill -9,
    OOM, a lost Ray node's actor).

    Ownership is the ``flock`` on the folder's lock file, not a pid: a process in another pid
    namespace (a container, a CI job) shows no pid we could check, but its lock is held all the
    same, so its folders are never touched. A folder without a lock file is not ours to judge.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            fd = os.open(folder / OWNER_LOCK, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: a live owner
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, racing other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and flush it to disk before returning.

    A single ``write`` of one line on an ``O_APPEND`` descriptor, so concurrent appenders never
    interleave within a line (callers that append from several threads still hold one lock);
    a crash can at worst leave a truncated last line, which ``read_jsonl`` skips.
    """
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A crash cut the last line short: end it so this record starts on a line of its own.
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlLog:
    """An append-only JSONL file kept open: each record is written and flushed to the OS at once
    (it survives the process being killed); ``close`` syncs it to disk.

    For logs whose owner finishes with a durable step of its own (an episode's transcript is
    synced before the episode's line goes into ``episodes.jsonl``), so each line needs no fsync.
    """

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._handle.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a truncated or garbled line (an interrupted write) is skipped."""
    if not Path(path).exists():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
