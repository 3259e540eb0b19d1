"""The episode worker: runs in a child of the zygote, holds the agent's namespace.

Everything here runs with the agent's privileges (after ``containment.contain``). It reads
trusted pickles from the harness and answers with plain JSON only.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import linecache
import os
import pickle
import signal
import socket
import sys
import traceback
import types
from collections.abc import Mapping
from typing import Any

from leakbench.sandbox import containment, introspect, refit
from leakbench.sandbox.capture import BoundedText, FdCapture, shape_output
from leakbench.sandbox.models import PROBA_KEYS
from leakbench.sandbox.protocol import recv_pickle, send_json

_SOCK_FD = 3
_MAX_PROBA_VALUES = 10_000_000
_MAX_PIPELINE_BYTES = 40 * 1024 * 1024  # base64 of this stays under the harness's 64 MB cap
_TRACEBACK_CHARS = 4000


class CallTimeout(BaseException):
    """Raised inside user code by SIGALRM; BaseException so ``except Exception`` won't eat it."""


class _State:
    sock: socket.socket
    pid: int
    mode: str
    limits: dict[str, Any]
    ns: dict[str, Any]
    train: Any  # pristine copies of the frames, out of the agent's namespace (refit checks)
    test: Any
    text: BoundedText
    fdcap: FdCapture
    n_columns = 0
    calls = 0
    in_user = False
    can_submit = False
    submitted: Any = None
    submitted_bytes: bytes | None = None
    pipeline_problem: str | None = None
    last_submit_return: Any = None


S = _State()


def run(sock_fd: int, mode: str, req: dict[str, Any]) -> None:
    """Contain this process, then serve the harness until it hangs up."""
    if sock_fd != _SOCK_FD:
        os.dup2(sock_fd, _SOCK_FD, inheritable=False)
    # Nothing of the zygote (its control socket, its namespace handles) may stay reachable.
    os.closerange(_SOCK_FD + 1, 1 << 20)
    S.sock = socket.socket(fileno=_SOCK_FD)
    S.mode, S.limits = mode, req["limits"]
    containment.contain(mode, int(req["uid"]), req["scratch"], list(req["hide"]), S.limits)
    S.pid = os.getpid()
    _scrub_environment(req["scratch"])
    S.fdcap = FdCapture()
    S.text = BoundedText(int(S.limits["stdout_max_chars"]) + 1)
    sys.stdout = sys.stderr = S.text
    signal.signal(signal.SIGALRM, _on_alarm)
    _warm_up()
    _serve()


def _warm_up() -> None:
    """Unpickle and copy a tiny frame like the episode's, before the first request.

    A fresh fork shares the zygote's pages; the first unpickling of DataFrames writes to
    hundreds of them (reference counts), and each write copies a page. Done here, while the
    pool keeps this worker as its spare, that cost leaves the episode's start.
    """
    pickle.loads(WARM_UP_FRAME).copy()
    json.dumps({"type": "ready", "pid": 0})


def _warm_up_frame() -> bytes:
    """A pickled frame of every dtype an instance has (made once, in the zygote)."""
    import numpy as np
    import pandas as pd

    codes = np.arange(4, dtype=np.int64) % 2
    frame = pd.DataFrame(
        {
            "x": np.zeros(4),
            "i": codes,
            "c": pd.Categorical(codes, categories=np.arange(2, dtype=np.int64)),
        }
    )
    return pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)


WARM_UP_FRAME = _warm_up_frame()


def _scrub_environment(scratch: str) -> None:
    """The agent sees a minimal environment: nothing of the harness's (keys, LEAKBENCH_*)."""
    import tempfile

    os.environ.clear()
    os.environ.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": scratch,
            "TMPDIR": scratch,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "JOBLIB_MULTIPROCESSING": "0",  # n_jobs=-1 must not fork a process pool per call
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": scratch,
        }
    )
    tempfile.tempdir = None
    sys.argv = [""]


def _on_alarm(signum: int, frame: Any) -> None:
    if S.in_user:
        raise CallTimeout()


def _serve() -> None:
    handlers = {
        "init": _init,
        "exec": _execute,
        "predict": _predict,
        "fingerprint": _fingerprint,
        "pickle": _pickle,
        "load": _load,
        "recipe": _recipe,
        "refit": _refit,
        "ping": lambda msg: {"type": "pong"},
    }
    while True:
        try:
            msg = recv_pickle(S.sock)
        except Exception:
            os._exit(0)  # the harness hung up
        _clean_up_processes()
        try:
            reply = handlers[msg["op"]](msg)
        except Exception as exc:
            reply = {"type": "error", "message": f"{type(exc).__name__}: {exc}"}
        S.text.take()
        S.fdcap.take(0)
        send_json(S.sock, reply)


def _clean_up_processes() -> None:
    """Between requests no process of the agent's survives (a fork bomb's leftovers included)."""
    flags = os.WNOHANG
    if S.mode == "full" and os.getpid() == 1:
        with contextlib.suppress(OSError):  # from a pid namespace's init: all others inside
            os.kill(-1, signal.SIGKILL)
            flags = 0  # every one of them is dying and becomes our child: wait for all
    while True:
        try:
            pid, _ = os.waitpid(-1, flags)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _init(msg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import scipy
    import sklearn

    main = types.ModuleType("__main__")
    # Classes the agent defines live in a real __main__ so its pipeline can be pickled.
    sys.modules["__main__"] = main
    S.ns = main.__dict__
    S.ns.update(
        train_df=msg["train_df"],
        test_df=msg["test_df"],
        pd=pd,
        np=np,
        sklearn=sklearn,
        scipy=scipy,
        submit_answer=submit_answer,
    )
    S.n_columns = len(msg["train_df"].columns)
    S.train, S.test = msg["train_df"].copy(), msg["test_df"].copy()
    return {"type": "ready", "pid": os.getpid()}


def _execute(msg: dict[str, Any]) -> dict[str, Any]:
    S.calls += 1
    code, timeout = msg["code"], float(msg["timeout"])
    filename = f"<python_expression #{S.calls}>"
    error, timed_out = "", False
    try:
        tree = ast.parse(code, filename, "exec")
    except (SyntaxError, ValueError) as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
        body = compile(tree, filename, "exec")
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        S.can_submit = bool(msg["can_submit"])
        try:
            S.in_user = True
            signal.setitimer(signal.ITIMER_REAL, timeout)
            exec(body, S.ns)
            if last is not None:
                value = eval(last, S.ns)
                if value is not None and value is not S.last_submit_return:
                    S.text.write(repr(value) + "\n")
        except CallTimeout:
            _only_in_worker()
            timed_out = True
            error = (
                f"TimeoutError: the call took longer than {timeout:g} s and was interrupted. "
                "Your variables are kept.\n"
            )
        except BaseException as exc:
            _only_in_worker()
            error = _user_traceback(exc)
        finally:
            S.in_user = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            S.can_submit = False
        _only_in_worker()
    return {"type": "result", "ok": not error, "timed_out": timed_out, "output": _output(error)}


def _only_in_worker() -> None:
    # A process the agent forked unwinds into this code too; it must never talk to the harness.
    if os.getpid() != S.pid:
        os._exit(0)


def _user_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # hide the sandbox's own frames
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > _TRACEBACK_CHARS:
        text = "... [traceback shortened]\n" + text[-_TRACEBACK_CHARS:]
    return text


def _output(error: str) -> str:
    limit = int(S.limits["stdout_max_chars"])
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    text, dropped = S.text.take()
    fd_text, fd_dropped = S.fdcap.take(limit)
    factor = int(S.limits["print_values_factor"])
    shaped = shape_output(text + fd_text, dropped + fd_dropped, limit, factor, S.n_columns)
    if error and shaped and not shaped.endswith("\n"):
        shaped += "\n"
    return shaped + error


class _SubmitMessage(str):
    """The text ``submit_answer`` returns (already printed, so not displayed again)."""


def submit_answer(answer: Any = None, **kwargs: Any) -> str:
    """Submit test-set probabilities (and optionally a fitted pipeline) to the grader."""
    if answer is None and kwargs:
        answer = kwargs
    if os.getpid() != S.pid:
        message = "submit_answer only works in the sandbox's main process"
    elif not S.can_submit:
        message = "submissions are not accepted here"
    else:
        request, pipeline = _describe(answer)
        # Pickled before the grader decides, so that a pipeline it could not grade is refused
        # while the agent can still fix it.
        frozen = _freeze(pipeline) if pipeline is not None else None
        if isinstance(frozen, str):
            request["pipeline_problem"] = frozen
        elif frozen is not None:
            request.update(_check_submission(pipeline))
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            # The alarm must not split this exchange, or the protocol would lose its place.
            send_json(S.sock, {"type": "submit", **request})
            reply = recv_pickle(S.sock)
            message = str(reply["message"])
            if reply["accepted"] and frozen is not None:
                _keep_pipeline(pipeline, frozen)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    print(message)
    S.last_submit_return = _SubmitMessage(message)
    return S.last_submit_return


def _describe(answer: Any) -> tuple[dict[str, Any], Any]:
    """Reduce a submission to plain data: floats, shape, or the reason there are none."""
    import numpy as np

    request: dict[str, Any] = {
        "proba": None,
        "shape": None,
        "problem": None,
        "key": None,
        "has_pipeline": False,
    }
    if not isinstance(answer, Mapping):
        request["problem"] = (
            "expected a dict such as {'y_pred_proba': p, 'pipeline': pipe}, "
            f"got {type(answer).__name__}"
        )
        return request, None
    pipeline = answer.get("pipeline")
    request["has_pipeline"] = pipeline is not None
    key = next((k for k in PROBA_KEYS if k in answer), None)
    if key is None:
        request["problem"] = f"no probability key; expected one of {', '.join(PROBA_KEYS)}"
        return request, pipeline
    request["key"] = key
    try:
        arr = np.asarray(answer[key])
    except Exception as exc:
        request["problem"] = f"values are not an array of numbers: {exc}"
        return request, pipeline
    request["shape"] = [int(n) for n in arr.shape]
    if arr.size > _MAX_PROBA_VALUES:
        request["problem"] = f"too many values ({arr.size})"
        return request, pipeline
    if arr.dtype.kind == "c":
        request["problem"] = "values are complex numbers"
        return request, pipeline
    try:
        request["proba"] = arr.astype(float).ravel().tolist()
    except (TypeError, ValueError) as exc:
        request["problem"] = f"values are not numeric: {exc}"
    return request, pipeline


def _check_submission(pipeline: Any) -> dict[str, Any]:
    """The recipe (for the harness to inspect) and what the grader's refit would reject."""
    try:
        recipe = refit.recipe_of(pipeline)
    except Exception as exc:
        return {"check_code": "pipeline_problem", "check_problem": str(exc)}
    found = None
    if S.limits.get("check_refit", True):
        tolerance = float(S.limits.get("refit_tolerance", 1e-6))
        found = refit.submission_problem(pipeline, recipe, S.train, S.test, tolerance)
    checked: dict[str, Any] = {"recipe_b64": base64.b64encode(recipe).decode()}
    if found is not None:
        checked["check_code"], checked["check_problem"] = found
    return checked


def _freeze(pipeline: Any) -> bytes | str:
    """The pipeline pickled, or why it cannot be.

    cloudpickle stores classes and functions the agent defined (in this worker's ``__main__``)
    by value, so the pipeline can be loaded again in a fresh worker for grading.
    """
    import cloudpickle

    try:
        data = cloudpickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return f"the pipeline cannot be pickled: {type(exc).__name__}: {exc}"
    if len(data) > _MAX_PIPELINE_BYTES:
        return (
            f"the pickled pipeline is too large ({len(data)} bytes, at most {_MAX_PIPELINE_BYTES})"
        )
    return data


def _keep_pipeline(pipeline: Any, frozen: bytes | str) -> None:
    """Keep the accepted pipeline as a copy made from its pickle, so that later agent code
    cannot refit it; an unpicklable one stays as it is, with the reason recorded."""
    if isinstance(frozen, bytes):
        S.submitted, S.submitted_bytes, S.pipeline_problem = pickle.loads(frozen), frozen, None
    else:
        S.submitted, S.submitted_bytes, S.pipeline_problem = pipeline, None, frozen


def _no_pipeline() -> dict[str, Any]:
    return {"type": "error", "message": "no pipeline was submitted"}


def _predict(msg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    if S.submitted is None:
        return _no_pipeline()
    try:
        proba = np.asarray(S.submitted.predict_proba(msg["frame"]), dtype=float)
    except Exception as exc:
        return {"type": "error", "message": f"predict_proba failed: {type(exc).__name__}: {exc}"}
    if proba.ndim != 2 or proba.shape[1] < 2:
        return {"type": "error", "message": f"predict_proba returned shape {list(proba.shape)}"}
    values = np.ascontiguousarray(proba[:, 1], dtype="<f8").tobytes()
    return {"type": "proba", "f8": base64.b64encode(values).decode()}


def _fingerprint(msg: dict[str, Any]) -> dict[str, Any]:
    if S.submitted is None:
        return _no_pipeline()
    return {"type": "fingerprint", "data": introspect.fingerprint(S.submitted)}


def _pickle(msg: dict[str, Any]) -> dict[str, Any]:
    if S.submitted is None:
        return {"type": "pipeline", "b64": None, "problem": "no pipeline was submitted"}
    data = S.submitted_bytes
    if data is None:
        return {"type": "pipeline", "b64": None, "problem": S.pipeline_problem}
    if len(data) > _MAX_PIPELINE_BYTES:
        problem = f"the pickled pipeline is too large ({len(data)} bytes)"
        return {"type": "pipeline", "b64": None, "problem": problem}
    return {"type": "pipeline", "b64": base64.b64encode(data).decode(), "problem": None}


def _recipe(msg: dict[str, Any]) -> dict[str, Any]:
    """``clone(pipeline)`` pickled, and the train columns it was fit on (grading worker)."""
    if S.submitted is None:
        return _no_pipeline()
    try:
        columns = refit.fit_columns(S.submitted, S.train, refit.TARGET)
        data = refit.recipe_of(S.submitted)
    except Exception as exc:
        return {"type": "recipe", "b64": None, "columns": None, "problem": str(exc)}
    return {"type": "recipe", "b64": base64.b64encode(data).decode(), "columns": columns}


def _refit(msg: dict[str, Any]) -> dict[str, Any]:
    """Fit a recipe on train_df (real, then permuted labels) and predict (clean worker)."""
    import numpy as np

    try:
        recipe = pickle.loads(msg["data"])
        values = refit.refit_predictions(
            recipe,
            S.train,
            list(msg["columns"]),
            msg["frame"],
            msg["perm_frame"],
            int(msg["permutations"]),
            int(msg["seed"]),
        )
    except Exception as exc:
        return {"type": "refit", "f8": None, "problem": f"{type(exc).__name__}: {exc}"}
    data = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return {"type": "refit", "f8": base64.b64encode(data).decode(), "problem": None}


def _load(msg: dict[str, Any]) -> dict[str, Any]:
    data = msg["data"]
    try:
        obj = pickle.loads(data)
    except BaseException as exc:
        return {"type": "error", "message": f"cannot unpickle: {type(exc).__name__}: {exc}"}
    if not callable(getattr(obj, "predict_proba", None)):
        return {"type": "error", "message": f"a {type(obj).__name__} has no predict_proba method"}
    S.submitted, S.submitted_bytes, S.pipeline_problem = obj, data, None
    return {"type": "ok"}
