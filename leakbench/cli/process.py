"""What the command line process knows about itself: when it started, and SIGTERM.

``leakbench`` (``main``) marks the real start of the process (interpreter start-up and imports
included, read from ``/proc``) and turns SIGTERM into ``Terminated``, a ``KeyboardInterrupt``,
so that a ``timeout`` or a cancelled CI job ends a run the way Ctrl-C does: the manifest says
``interrupted``, the resume command is printed, and the exit code is 143 (128 + SIGTERM).
Commands invoked in-process (tests, ``CliRunner``) count from their own start instead.

For ``leakbench run`` it also starts the sandbox's zygote first thing (``start_sandbox_early``):
the zygote needs nothing from the settings, and its ~1.3 s of imports then overlap the harness's.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from leakbench.errors import Terminated

if TYPE_CHECKING:
    from leakbench.sandbox.pool import SandboxPool

_started: float | None = None
_process_marked = False
_early_pool: SandboxPool | None = None
# Global options that take a value, so that value is not taken for the command's name.
_VALUED_GLOBALS = {"-c", "--config", "--results-dir"}


def mark_process_start() -> None:
    """Record when this process began, on the ``time.perf_counter`` clock (``main``)."""
    global _started, _process_marked
    _started = time.perf_counter() - _process_age_s()
    _process_marked = True


def mark_command_start() -> None:
    """Record the start of a command, unless this process is the command (``main``)."""
    global _started
    if not _process_marked:
        _started = time.perf_counter()


def command_started() -> float:
    return time.perf_counter() if _started is None else _started


def _process_age_s() -> float:
    """Seconds since this process was started by the kernel (0 where /proc cannot say)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            now = float(uptime.read().split()[0])
        age = now - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return age if 0.0 <= age < 3600.0 else 0.0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def handle_sigterm() -> None:
    """SIGTERM raises ``Terminated`` in the main thread (a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def interrupt_exit_code(exc: BaseException) -> int:
    return 143 if isinstance(exc, Terminated) else 130


def _command_name(args: list[str]) -> str | None:
    """The command in ``args`` (``run`` in ``leakbench -q --results-dir R run ...``), if any."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUED_GLOBALS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def start_sandbox_early(args: list[str]) -> None:
    """For ``run``, launch the zygote now (``take_early_pool`` hands it to the run).

    Anything that goes wrong here is left for the run's own start to meet and report; a pool
    that is never taken (bad usage, a missing API key) is closed when the process exits.
    """
    global _early_pool
    if _command_name(args) != "run" or {"-h", "--help"} & set(args):
        return
    on_cluster = "--executor=ray" in args or any(
        a == "--executor" and b == "ray" for a, b in itertools.pairwise(args)
    )
    if on_cluster or any(a.startswith("--ray-address") for a in args):
        return  # the sandboxes are the cluster nodes' own
    from leakbench.sandbox.pool import SandboxPool

    pool = SandboxPool()
    try:
        pool.launch()
    except Exception:  # the run starts its own pool, and says what failed
        pool.close()
        return
    _early_pool = pool


def take_early_pool() -> SandboxPool | None:
    """The pool ``start_sandbox_early`` launched, once; None in-process or for other commands."""
    global _early_pool
    pool, _early_pool = _early_pool, None
    return pool
