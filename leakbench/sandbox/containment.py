"""Kernel-level containment of a worker: namespaces, mounts, rlimits, a per-episode uid.

Runs in the zygote (``new_pid_namespace``) and in the freshly forked worker (``contain``), never
in the harness. Python 3.11 has no ``os.unshare``/``os.setns``, hence ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import resource
import signal
import sys
import tempfile
from dataclasses import dataclass
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
MNT_DETACH = 2
_PIVOT_ROOT_NR = {  # glibc has no pivot_root(); the syscall number is per architecture
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "loongarch64": 41,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
    "i386": 217,
    "i686": 217,
    "armv7l": 218,
}

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


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) (glibc has no wrapper)."""
    number = _PIVOT_ROOT_NR.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: no syscall number known for {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode())
    _check(ret, "pivot_root")


def umount2(target: str, flags: int) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def probe_full_isolation() -> str | None:
    """Build a worker's whole view once in a throwaway child; return why it fails, or None."""
    try:
        view = prepare_view()
    except Exception as exc:
        return f"cannot plan the workers' filesystem view ({exc})"
    try:
        forker = PidNamespaceForker()
    except OSError as exc:
        return f"cannot create a pid namespace ({exc.strerror})"
    try:
        scratch = tempfile.mkdtemp(prefix="leakbench-probe-")
    except OSError as exc:
        os.close(forker._own)
        return f"cannot make a folder to try the workers' filesystem view in ({exc})"
    read, write = os.pipe()
    try:
        pid = forker.fork()
    except OSError as exc:
        for fd in (read, write, forker._own):
            os.close(fd)
        os.rmdir(scratch)
        return f"cannot create a pid namespace ({exc.strerror})"
    if pid == 0:
        code = 1
        try:
            os.close(read)
            unshare(CLONE_NEWNET | CLONE_NEWNS)
            _private_filesystem(scratch, [])
            missing = [p for p in (sys.executable, scratch, *view.binds) if not os.path.exists(p)]
            if missing or not os.path.isdir("/proc/self/fd"):
                raise OSError(errno.ENOENT, f"not visible after pivot_root: {missing or '/proc'}")
            code = 0
        except BaseException as exc:
            os.write(write, str(exc).encode(errors="replace")[:500])
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        message = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    os.close(forker._own)
    os.rmdir(scratch)
    if os.waitstatus_to_exitcode(status) != 0:
        return (
            "cannot create network/mount namespaces or build the workers' filesystem view "
            f"({message or 'no reason given'})"
        )
    return None


# -- the worker's filesystem view ------------------------------------------------------------------
#
# A worker's root is a small tmpfs holding only what Python needs, bound read-only at the paths
# where the host has them: the system folders, the Python installation and its library folders
# (not leakbench's source tree or its metadata), what the dynamic loader reads from /etc, a few
# device nodes, the worker's own scratch folder (read-write) and a fresh /proc. The zygote plans
# it once (``prepare_view``); each worker only mounts the plan.

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The dynamic loader's cache and configuration, the local time zone, the Debian alternatives
# some shared libraries are reached through (libblas.so.3 -> /etc/alternatives/...), and
# fontconfig's configuration and cache (matplotlib runs fc-list, which complains on the agent's
# output without them). Nothing else of /etc: no passwd (the worker's uid has no entry either
# way), no hosts or resolv.conf (no network), no ssl (likewise).
CONFIG_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/fonts",
    "/var/cache/fontconfig",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
ALWAYS_DIRS = ("/dev", "/etc", "/proc", "/tmp")  # /tmp: empty and read-only (TMPDIR is scratch)
SHM_SIZE = "64m"  # /dev/shm: POSIX semaphores and small shared memory (joblib, multiprocessing)
_RO = MS_RDONLY | MS_NOSUID | MS_NODEV


@dataclass(frozen=True)
class View:
    """What a worker's new root holds; paths are real (symlink-free) host paths."""

    binds: tuple[str, ...]  # bound read-only (nosuid, nodev) at the same path; parents first
    dirs: tuple[tuple[str, int], ...]  # (folder, mode) made in the root tmpfs; parents first
    files: tuple[str, ...]  # empty files in the root tmpfs: mount points for bound files
    links: tuple[tuple[str, str], ...]  # (path, target) symlinks as on the host: /lib -> usr/lib
    covers: tuple[tuple[str, bool], ...]  # (path, is folder) inside a bind, shown empty

    def shows(self, path: str) -> bool:
        """Whether ``path`` lies inside one of the bound folders."""
        return any(_under(path, bind) for bind in self.binds)


_VIEW: View | None = None


def prepare_view() -> View:
    """The worker view, planned once (in the zygote, before it forks any worker)."""
    global _VIEW
    if _VIEW is None:
        _VIEW = _plan_view()
    return _VIEW


def _source_tree() -> str | None:
    """The folder holding the ``leakbench`` package unless it is a site-packages folder: with an
    editable install the repository (README, presets, tests, results, .git)."""
    parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    if os.path.basename(parent) in ("site-packages", "dist-packages"):
        return None  # the package folder itself is covered as leakbench's own entry there
    return parent


def _other_checkout(path: str) -> bool:
    """Whether ``path`` is a folder holding a leakbench package other than a site-packages
    folder: another checkout on sys.path (e.g. an editable install of a second copy), with its
    own README, presets and results, which a worker must not see either."""
    if os.path.basename(path) in ("site-packages", "dist-packages"):
        return False
    return os.path.isfile(os.path.join(path, "leakbench", "__init__.py"))


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str:
    """The real path of ``path``, recording each symlink met on the way (path -> its text)."""
    if depth > 40:
        raise OSError(errno.ELOOP, f"too many symlinks: {path}")
    current = "/"
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        step = os.path.join(current, part)
        if os.path.islink(step):
            text = os.readlink(step)
            links[step] = text
            current = _resolve(os.path.join(current, text), links, depth + 1)
        else:
            current = step
    return current


def _ancestors(path: str) -> list[str]:
    """The folders above ``path``, "/" excluded, outermost first."""
    out = []
    parent = os.path.dirname(path)
    while parent != "/":
        out.append(parent)
        parent = os.path.dirname(parent)
    return out[::-1]


def _dir_mode(path: str) -> int:
    """Mode of a folder made in the root tmpfs: listable where the host folder is listable by
    anyone, else only passable (e.g. /root above a pyenv install, a 0700 TMPDIR above scratch)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return 0o755
    return 0o755 if mode & 0o005 == 0o005 else 0o711


def _mount_points() -> list[str]:
    """Every mount point of this mount namespace."""
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            target = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), target))
    return points


def _plan_view() -> View:
    tree = _source_tree()
    wanted = [p for p in (*SYSTEM_PATHS, *CONFIG_PATHS) if os.path.lexists(p)]
    python = (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path)
    wanted += [p for p in python if p and os.path.isabs(p) and os.path.exists(p)]
    links: dict[str, str] = {}
    targets: set[str] = set()
    for path in wanted:
        found: dict[str, str] = {}
        real = _resolve(os.path.normpath(path), found)
        # "/" is on the zygote's sys.path as its working directory, the source tree as PYTHONPATH.
        if real in ("/", tree) or _other_checkout(real) or not os.path.exists(real):
            continue
        targets.add(real)
        links.update(found)
    binds: list[str] = []
    for real in sorted(targets):
        if not any(_under(real, bind) for bind in binds):
            binds.append(real)
    # A bind is not recursive: what is mounted inside a bound folder is bound on its own.
    inner = {m for m in _mount_points() if any(_under(m, b) and m != b for b in binds)}
    binds = sorted(set(binds) | inner)

    def shows(path: str) -> bool:
        return any(_under(path, bind) for bind in binds)

    def coverable(path: str) -> bool:  # visible, and nothing needed lies inside it
        return shows(path) and not any(_under(bind, path) for bind in binds)

    covers: set[str] = set()
    if tree is not None and coverable(tree):  # e.g. a checkout under /usr/src
        covers.add(tree)
    # leakbench's own entries in the library folders: its package, its dist-info (METADATA holds
    # the README), editable-install finders and .pth files naming the source tree.
    for entry in sorted({os.path.realpath(p) for p in python if p and os.path.isabs(p)}):
        if not shows(entry) or not os.path.isdir(entry):
            continue
        for folder in (entry, os.path.join(entry, "__pycache__")):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if "leakbench" in name.lower():
                    real = os.path.realpath(os.path.join(folder, name))
                    if coverable(real):
                        covers.add(real)
    outer = sorted(c for c in covers if not any(_under(c, o) and c != o for o in covers))

    needed = set(ALWAYS_DIRS)
    for path in (*binds, *links):
        needed.update(_ancestors(path))
    dirs = [(d, _dir_mode(d)) for d in sorted(needed) if not shows(d)]
    files = []
    for bind in binds:
        if any(_under(bind, other) and bind != other for other in binds):
            continue  # its mount point is inside another bind
        if os.path.isdir(bind):
            dirs.append((bind, 0o755))
        else:
            files.append(bind)
    return View(
        binds=tuple(binds),
        dirs=tuple(sorted(dirs)),
        files=tuple(files),
        links=tuple(sorted((p, t) for p, t in links.items() if not shows(p))),
        covers=tuple((c, os.path.isdir(c)) for c in outer),
    )


def _private_filesystem(
    scratch: str, hide: list[str], scratch_mb: int | None = None, uid: int = 0
) -> None:
    """Replace the worker's root by its view (``prepare_view``) plus its scratch folder
    (read-write) and a fresh /proc (only the processes of its own pid namespace).

    ``scratch_mb``: the scratch folder is a tmpfs of that size owned by ``uid`` (the worker's
    files cannot fill the host's disk, and vanish with its mount namespace); None binds the
    host folder itself.

    ``hide``: the harness's own folders (working directory, home), covered should they lie
    inside a bound folder (a checkout under /usr/src); elsewhere they are simply not there.
    """
    view = prepare_view()
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do propagates back to the host
    found: dict[str, str] = {}
    real = _resolve(os.path.abspath(scratch), found)
    planned = {d for d, _ in view.dirs}
    extra = {d for p in (real, *found) for d in _ancestors(p)}
    if not view.shows(real):
        extra.add(real)
    dirs = sorted([*view.dirs, *((d, _dir_mode(d)) for d in extra - planned if not view.shows(d))])
    planned_links = dict(view.links)
    links = [*view.links]
    links += [(p, t) for p, t in found.items() if p not in planned_links and not view.shows(p)]
    covers = [(c, is_dir) for c, is_dir in view.covers if not _under(real, c)]
    for path in hide:
        if (
            view.shows(path)
            and not _under(real, path)
            and not any(_under(b, path) for b in view.binds)
            and not any(_under(path, c) for c, _ in covers)
        ):
            covers.append((path, os.path.isdir(path)))
    covers = [(c, d) for c, d in covers if not any(_under(c, o) and c != o for o, _ in covers)]
    # The new root goes over the scratch folder itself: it exists, it is the worker's own, and
    # the one thing it hides (the scratch folder) is held open here to be bound back.
    held = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    new = real
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=16384,mode=0755")
    umask = os.umask(0)
    try:
        for path, mode in dirs:
            os.mkdir(new + path, mode)
        for path in view.files:
            os.close(os.open(new + path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
        for path, target in links:
            os.symlink(target, new + path)
        for path in view.binds:
            mount(path, new + path, None, MS_BIND)
            mount(None, new + path, None, MS_REMOUNT | MS_BIND | _RO)
        for path, is_dir in sorted(covers):
            if is_dir:
                data = "size=4k,nr_inodes=8,mode=0555"
                mount("tmpfs", new + path, "tmpfs", _RO | MS_NOEXEC, data)
            else:  # reads as empty; a device node, so not nodev
                mount("/dev/null", new + path, None, MS_BIND)
                flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC
                mount(None, new + path, None, flags)
        dev = new + "/dev"
        mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")
        for name in DEVICES:  # binds keep the host's device mount's flags (not nodev)
            os.close(os.open(f"{dev}/{name}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
        for name, target in DEV_LINKS:
            os.symlink(target, f"{dev}/{name}")
        os.mkdir(f"{dev}/shm", 0o1777)
    finally:
        os.umask(umask)
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={SHM_SIZE}")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if scratch_mb is None:
        mount(f"/proc/self/fd/{held}", new + real, None, MS_BIND)
        mount(None, new + real, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    else:
        data = f"size={int(scratch_mb)}m,mode=0700,uid={uid},gid={uid}"
        mount("tmpfs", new + real, "tmpfs", MS_NOSUID | MS_NODEV, data)
    os.close(held)
    mount(None, new, None, MS_REMOUNT | _RO)
    os.chdir(new)
    pivot_root(".", ".")  # the old root ends up stacked on the new one, at "/" ...
    umount2(".", MNT_DETACH)  # ... and is gone
    os.chdir("/")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


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

    ``mode`` is "full" (root: namespaces, a minimal read-only filesystem view, own uid) or
    "reduced" (rlimits, a session/process group of its own and a scrubbed environment only).
    ``hide``: see ``_private_filesystem``.
    """
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote going away takes every worker with it
    os.setsid()  # own process group: the harness can kill all of it, Ctrl-C does not reach it
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail with EFBIG, not death
    if mode == "full":
        unshare(CLONE_NEWNET | CLONE_NEWNS)
        _private_filesystem(scratch, hide, int(limits["scratch_mb"]), uid)
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
