"""Kernel-level containment of a worker: namespaces, mounts, rlimits, a per-episode uid.

Runs in the zygote (``new_pid_namespace``) and in the freshly forked worker (``contain``), never
in the harness. Python 3.11 has no ``os.unshare``/``os.setns``, hence ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2)."""
    _check(_libc.setns(fd, nstype), "setns")


def prctl(option: int, arg: int) -> None:
    """prctl(2) with one argument."""
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2)."""
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    ret = _libc.mount(enc[0], enc[1], enc[2], flags, data.encode() if data else None)
    _check(ret, f"mount {target}")


class PidNamespaceForker:
    """Forks children that are pid 1 of their own pid namespace, from a long-lived process.

    unshare(CLONE_NEWPID) only affects later children and may be done once per namespace, so the
    zygote unshares, forks, and returns to its own namespace with setns. This costs one fork per
    worker instead of two (an intermediate reaper process).
    """

    def __init__(self) -> None:
        self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def fork(self) -> int:
        """fork(2) into a new pid namespace; returns like ``os.fork``."""
        unshare(CLONE_NEWPID)
        try:
            return os.fork()
        finally:
            if os.getpid() != 1:  # the parent (the child is pid 1 and must not setns)
                setns(self._own, CLONE_NEWPID)


def probe_full_isolation() -> str | None:
    """Try the full setup once in a throwaway child; return why it fails, or None."""
    try:
        forker = PidNamespaceForker()
        pid = forker.fork()
    except OSError as exc:
        return f"cannot create a pid namespace ({exc.strerror})"
    if pid == 0:
        code = 1
        try:
            unshare(CLONE_NEWNET | CLONE_NEWNS)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    os.close(forker._own)
    if os.waitstatus_to_exitcode(status) != 0:
        return "cannot create network/mount namespaces or mount /proc"
    return None


def _mount_points() -> list[tuple[str, int]]:
    """Mount points with the flags that must be kept when remounting them read-only."""
    flag_names = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            target = parts[4].encode().decode("unicode_escape")
            flags = 0
            for opt in parts[5].split(","):
                flags |= flag_names.get(opt, 0)
            points.append((target, flags))
    return points


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _blocked_ancestor(path: str) -> str | None:
    """The first folder on ``path`` that a user other than its owner cannot enter, if any."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


_GRANTS: list[tuple[str, str]] | None = None


def python_grants() -> list[tuple[str, str]]:
    """(blocked folder, needed path) pairs for a Python installed where the worker uid cannot
    reach it (e.g. pyenv under /root, mode 0700). Computed once, in the zygote."""
    global _GRANTS
    if _GRANTS is None:
        import sys

        wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix}
        wanted.update(p for p in sys.path if p and os.path.isdir(p))
        needed = []
        for path in sorted({os.path.realpath(p) for p in wanted}):
            blocked = _blocked_ancestor(path)
            if blocked is not None and blocked != path:
                needed.append((blocked, path))
        _GRANTS = []
        for blocked, path in needed:  # sorted, so a parent comes before what lies inside it
            if not any(_under(path, kept) for _, kept in _GRANTS):
                _GRANTS.append((blocked, path))
    return _GRANTS


def _grant_python() -> None:
    """Make the Python installation readable through a folder the worker may not enter: an
    empty tmpfs goes over the blocked folder (hiding the rest of it, e.g. root's home), and the
    installation is bind-mounted back at its own path, read-only."""
    grants = python_grants()
    if not grants:
        return
    fds = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for _, path in grants}
    for blocked in sorted({b for b, _ in grants}):
        mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for _blocked, path in grants:
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fds[path]}", path, None, MS_BIND | MS_REC)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.close(fds[path])
    for blocked in sorted({b for b, _ in grants}):
        mount(None, blocked, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _private_filesystem(scratch: str, hide: list[str]) -> None:
    """Give the worker a read-only view of every mount except its scratch folder, a fresh /proc
    (only the processes of its own pid namespace are visible) and ``hide`` made empty (folders)
    or blank (files)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do propagates back to the host
    points = _mount_points()
    # The scratch bind must exist before "/" goes read-only: a bind inherits its source's flags.
    mount(scratch, scratch, None, MS_BIND)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _grant_python()
    for path in hide:
        if _under(scratch, path):
            continue
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        elif os.path.isfile(path):  # e.g. a .env holding an API key: it reads as empty
            mount("/dev/null", path, None, MS_BIND)
    for target, flags in points:
        if _under(target, "/proc") or target == scratch:
            continue
        # A mount we cannot remount (e.g. hidden below a later one) stays as the uid allows.
        with contextlib.suppress(OSError):
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def apply_rlimits(limits: dict[str, Any], count_processes: bool) -> None:
    """Set the per-worker resource limits (soft = hard, so user code cannot raise them)."""
    mb = 1024 * 1024
    wanted = {
        resource.RLIMIT_AS: int(limits["memory_mb"]) * mb,
        resource.RLIMIT_CPU: int(limits["cpu_seconds"]),
        resource.RLIMIT_FSIZE: int(limits["max_file_mb"]) * mb,
        resource.RLIMIT_NOFILE: int(limits["max_open_files"]),
        resource.RLIMIT_CORE: 0,
    }
    nproc = int(limits["max_processes"])
    if count_processes:
        # Without a uid of its own the worker shares the count with every process of the user.
        nproc += _tasks_of_uid(os.getuid())
    wanted[resource.RLIMIT_NPROC] = nproc
    for which, value in wanted.items():
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY and value > hard:
            value = hard
        resource.setrlimit(which, (value, value))


def _tasks_of_uid(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}")
            if st.st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def contain(mode: str, uid: int, scratch: str, hide: list[str], limits: dict[str, Any]) -> None:
    """Everything a new worker does before it runs any user code.

    ``mode`` is "full" (root: namespaces, read-only filesystem, own uid) or "reduced" (rlimits,
    a session/process group of its own and a scrubbed environment only).
    """
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote going away takes every worker with it
    os.setsid()  # own process group: the harness can kill all of it, Ctrl-C does not reach it
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail with EFBIG, not death
    if mode == "full":
        unshare(CLONE_NEWNET | CLONE_NEWNS)
        _private_filesystem(scratch, hide)
    os.chdir(scratch)
    apply_rlimits(limits, count_processes=(mode != "full" and os.getuid() != 0))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if mode == "full":
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # Changing uid clears "dumpable", which makes the worker's own /proc/self root-owned and
        # breaks libraries that read it; the worker may see itself, nobody else is in its pid ns.
        prctl(PR_SET_DUMPABLE, 1)
