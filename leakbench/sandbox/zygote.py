"""The warm zygote: imports the scientific stack once, then forks one worker per episode.

Started by the harness with a fresh exec (``python -m leakbench.sandbox.zygote``), never forked
from it, so no harness memory (labels, keys) can be inherited by a worker. It talks to the harness
over one SOCK_SEQPACKET control socket: each spawn request carries the worker's end of a fresh
socketpair (SCM_RIGHTS); the reply carries a pidfd of the new worker so the harness can kill it
without racing pid reuse, even while the zygote is busy.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import select
import signal
import socket
import sys
import threading
from typing import Any

PRELOAD = (
    "numpy",
    "pandas",
    "scipy",
    "scipy.stats",
    "sklearn",
    "sklearn.base",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.tree",
    "encodings.idna",
    "cloudpickle",
)


def _warm_up() -> None:
    """Import the stack and touch its lazy paths once, so every worker starts hot."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from leakbench.sandbox import worker  # noqa: F401  (the code every child runs)

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=50), "b": rng.integers(0, 3, 50)})
    frame["c"] = pd.Categorical(frame["b"], categories=np.arange(3, dtype=np.int64))
    frame.groupby("b")["a"].mean()
    LogisticRegression().fit(frame[["a"]], frame["b"] > 0).predict_proba(frame[["a"]])
    # What a worker's first request does: unpickle the episode's frames (a categorical among
    # them), copy them, answer in JSON.
    pickle.loads(pickle.dumps({"op": "init", "train_df": frame}, pickle.HIGHEST_PROTOCOL))[
        "train_df"
    ].copy()
    json.dumps({"type": "ready", "pid": 0})


def _send(ctrl: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    socket.send_fds(ctrl, [json.dumps(obj).encode()], fds or [])


def main() -> None:
    """Serve spawn requests until the harness closes the control socket."""
    # Before numpy is imported: BLAS/OpenMP thread pools must not exist when we fork (a forked
    # child inherits locked pool mutexes and can hang). The harness sets these too.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    wanted = sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Importing the stack makes objects by the million, and the cyclic GC would walk them again
    # and again (about 15% of the warm-up); one collection before the freeze below does.
    gc.disable()
    try:
        _warm_up()
    except Exception as exc:
        _send(ctrl, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    from leakbench.sandbox import containment, worker

    mode, why = wanted, None
    if wanted == "full":
        # Plans the worker's filesystem view once (here, not in every worker) and tries it.
        why = containment.probe_full_isolation()
        if why:
            mode = "reduced"
    threads = threading.active_count(), len(os.listdir("/proc/self/task"))
    if threads[1] != 1:
        _send(ctrl, {"ok": False, "error": f"zygote has {threads[1]} threads; refusing to fork"})
        return
    forker = containment.PidNamespaceForker() if mode == "full" else None
    gc.collect()
    gc.freeze()  # keeps the cyclic GC from writing to (and so copying) every inherited page
    gc.enable()  # workers inherit it: agent code needs its garbage collected
    _send(ctrl, {"ok": True, "mode": mode, "why": why, "pid": os.getpid()})
    children: set[int] = set()
    try:
        while True:
            ready, _, _ = select.select([ctrl], [], [], 0.25)
            _reap(children)
            if not ready:
                continue
            data, fds, _flags, _addr = socket.recv_fds(ctrl, 1 << 16, 4)
            if not data:
                return  # the harness is gone
            req = json.loads(data)
            if req.get("op") != "spawn" or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                _send(ctrl, {"ok": False, "error": "bad request"})
                continue
            try:
                pid = forker.fork() if forker else os.fork()
            except OSError as exc:
                os.close(fds[0])
                _send(ctrl, {"ok": False, "error": f"fork failed: {exc}"})
                continue
            if pid == 0:
                _child(ctrl, fds[0], mode, req, worker)
            os.close(fds[0])
            children.add(pid)
            pidfd = os.pidfd_open(pid)
            _send(ctrl, {"ok": True, "pid": pid}, [pidfd])
            os.close(pidfd)
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _child(ctrl: socket.socket, sock_fd: int, mode: str, req: dict[str, Any], worker: Any) -> None:
    """Runs in the forked child; never returns into the zygote loop."""
    code = 70
    try:
        ctrl.close()  # a worker that could talk to the (root) zygote could spawn anything
        worker.run(sock_fd, mode, req)
        code = 0
    finally:
        os._exit(code)


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


if __name__ == "__main__":
    main()
    # Its children are dead and reaped; tearing down the preloaded stack would only delay the
    # harness, which waits for this process to exit when it closes the pool.
    sys.stderr.flush()
    os._exit(0)
