"""One episode's sandbox, as the harness drives it."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from leakbench.sandbox.models import (
    PROBA_KEYS,
    CallResult,
    SandboxError,
    SandboxLimits,
    SubmitReply,
    SubmitRequest,
    WorkerHandle,
    WorkerSource,
)
from leakbench.sandbox.protocol import (
    EXEC_MESSAGE_BYTES,
    PeerGone,
    PeerTimeout,
    pickle_frame,
    recv_json,
    send_frame,
    send_pickle,
)

READY_TIMEOUT_S = 60.0
MAX_SUBMITS_PER_CALL = 100  # more in one call is a flood: the worker is ended
_REFUSED = SubmitReply(False, "submissions are not accepted here")
_LOST = "the pipeline was lost when the sandbox restarted"
# Failed-check codes a worker may report for a submission (see grading.grade.FAILED_CHECKS).
SUBMIT_CHECKS = ("pipeline_problem", "nondeterministic", "refit")


class _WorkerLost(Exception):
    def __init__(self, reason: str, timed_out: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


class Session:
    """One episode's sandbox. Not shared between threads. Context manager; close() is idempotent."""

    def __init__(
        self,
        pool: WorkerSource,
        train_df: pd.DataFrame,
        test_df: pd.DataFrame,
        limits: SandboxLimits,
    ) -> None:
        self._pool = pool
        self.limits = limits
        # Pickled once: a replacement worker gets exactly the same frames again.
        self._init_frame = pickle_frame({"op": "init", "train_df": train_df, "test_df": test_df})
        self._worker: WorkerHandle | None = None
        self._closed = False
        self._has_pipeline = False
        self._pipeline_bytes: bytes | None = None
        self.pipeline_problem: str | None = None
        self._start_worker()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The worker's pid as the harness sees it (None when no worker is running)."""
        return self._worker.pid if self._worker else None

    # -- lifecycle ----------------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox session is closed")
        worker = self._pool.spawn(self.limits)
        self._worker = worker
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            send_frame(worker.sock, self._init_frame, deadline)
            reply = recv_json(worker.sock, deadline)
            if reply["type"] != "ready":
                raise PeerGone(f"unexpected answer {reply['type']!r}")
            if self._pipeline_bytes is not None:
                send_pickle(worker.sock, {"op": "load", "data": self._pipeline_bytes}, deadline)
                if recv_json(worker.sock, deadline)["type"] != "ok":
                    # e.g. a class the agent defined: it died with the old namespace.
                    self._forget_pipeline(_LOST)
            elif self._has_pipeline:
                self._forget_pipeline(_LOST)
        except (PeerGone, PeerTimeout) as exc:
            self._discard_worker()
            raise SandboxError(f"the sandbox worker did not start: {exc}") from None

    def _discard_worker(self) -> None:
        if self._worker is not None:
            self._pool.dispose(self._worker)
            self._worker = None

    def close(self) -> None:
        """Kill the worker (asynchronously) and release its scratch folder."""
        self._closed = True
        self._discard_worker()

    def _request(self, msg: dict[str, Any], timeout_s: float, expect: str) -> dict[str, Any]:
        """Send one request and wait for its answer; a dead or hung worker is killed."""
        if self._closed:
            raise SandboxError("the sandbox session is closed")
        if self._worker is None:
            self._start_worker()
        assert self._worker is not None
        deadline = time.monotonic() + timeout_s
        try:
            send_pickle(self._worker.sock, msg, deadline)
            reply = recv_json(self._worker.sock, deadline)
        except PeerTimeout:
            self._discard_worker()
            raise SandboxError(
                f"the sandbox did not answer {msg['op']!r} within {timeout_s:g} s and was killed"
            ) from None
        except PeerGone as exc:
            self._discard_worker()
            raise SandboxError(f"the sandbox failed during {msg['op']!r}: {exc}") from None
        if reply["type"] == "error":
            raise SandboxError(str(reply.get("message")))
        if reply["type"] != expect:
            self._discard_worker()
            raise SandboxError(f"the sandbox broke the protocol during {msg['op']!r}")
        return reply

    # -- python_expression --------------------------------------------------------------------

    def execute(
        self, code: str, on_submit: Callable[[SubmitRequest], SubmitReply] | None = None
    ) -> CallResult:
        """Run agent code in the episode's namespace (SPEC §5.1); never raises for agent faults.

        Raises SandboxError only if no worker can be started at all.
        """
        start = time.monotonic()
        notice = ""
        if self._closed:
            raise SandboxError("the sandbox session is closed")
        if self._worker is None:  # lost after a failed predict/fingerprint request
            self._start_worker()
            notice = self._lost_state_notice("The sandbox had stopped")
        timeout = float(self.limits.call_timeout_s)
        try:
            result = self._run(code, timeout, on_submit)
        except _WorkerLost as lost:
            self._discard_worker()
            self._start_worker()
            return CallResult(
                ok=False,
                output=self._lost_state_notice(lost.reason),
                restarted=True,
                timed_out=lost.timed_out,
                duration_s=time.monotonic() - start,
            )
        if notice:
            result.output = notice + "\n" + result.output
            result.restarted = True
        result.duration_s = time.monotonic() - start
        return result

    def _run(
        self, code: str, timeout: float, on_submit: Callable[[SubmitRequest], SubmitReply] | None
    ) -> CallResult:
        assert self._worker is not None
        sock = self._worker.sock
        hard = timeout + self._pool.grace_s
        deadline = time.monotonic() + hard
        msg = {"op": "exec", "code": code, "timeout": timeout, "can_submit": on_submit is not None}
        fetch_pipeline = False
        submits = 0
        try:
            send_pickle(sock, msg, deadline)
            while True:
                reply = recv_json(sock, deadline, EXEC_MESSAGE_BYTES)
                if reply["type"] == "submit":
                    submits += 1
                    if submits > MAX_SUBMITS_PER_CALL:
                        raise PeerGone(f"more than {MAX_SUBMITS_PER_CALL} submissions in one call")
                    request = _submit_request(reply)
                    try:
                        answer = on_submit(request) if on_submit is not None else _REFUSED
                    except BaseException:
                        # The worker waits mid-call for a reply it will never get: end it.
                        self._discard_worker()
                        raise
                    if answer.accepted and request.has_pipeline:
                        fetch_pipeline = True
                    # With the call's deadline: a worker that floods submissions and never
                    # reads the answers must not block the harness.
                    send_pickle(
                        sock, {"accepted": answer.accepted, "message": answer.message}, deadline
                    )
                elif reply["type"] == "result":
                    break
                else:
                    raise PeerGone("the sandbox broke the protocol")
        except PeerTimeout:
            raise _WorkerLost(
                f"The call took longer than {timeout:g} s and did not stop within {hard:g} s "
                "when interrupted (a C-level loop or code that ignores the interrupt), so the "
                "sandbox was killed",
                timed_out=True,
            ) from None
        except PeerGone as exc:
            raise _WorkerLost(
                f"The sandbox process ended during this call ({exc}; e.g. os._exit, a signal, "
                "or a memory/CPU limit)",
                timed_out=False,
            ) from None
        result = CallResult(
            ok=reply.get("ok") is True,
            output=str(reply.get("output", "")),
            timed_out=reply.get("timed_out") is True,
        )
        if fetch_pipeline:
            # Taken now, so a later crash or restart cannot lose the accepted pipeline.
            self._has_pipeline = True
            self._pipeline_bytes = None
            self.pipeline_problem = None
            self._fetch_pipeline_bytes()
        return result

    def _lost_state_notice(self, reason: str) -> str:
        text = (
            f"[sandbox restarted] {reason}. A fresh sandbox was started: all your variables, "
            "imports and functions are lost; train_df and test_df were reloaded."
        )
        if self._has_pipeline:
            text += " Your submitted pipeline was restored."
        elif self.pipeline_problem == _LOST:
            text += " Your submitted pipeline could not be restored."
        return text + "\n"

    def _forget_pipeline(self, problem: str) -> None:
        self._has_pipeline = False
        self._pipeline_bytes = None
        self.pipeline_problem = problem

    # -- the submitted pipeline -----------------------------------------------------------------

    def has_pipeline(self) -> bool:
        """Whether an accepted submission (or load_pipeline) left a pipeline in the worker."""
        return self._has_pipeline

    def predict_proba(self, frame: pd.DataFrame, timeout_s: float | None = None) -> np.ndarray:
        """Column 1 of the pipeline's predict_proba on ``frame`` (features only), as floats."""
        self._need_pipeline()
        reply = self._request(
            {"op": "predict", "frame": frame}, timeout_s or self.limits.call_timeout_s, "proba"
        )
        # Little-endian float64 bytes (base64 in the JSON reply): plain numbers, decoded without
        # running anything, and 30x cheaper than a JSON list for a large holdout.
        encoded = reply.get("f8")
        try:
            raw = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
        except binascii.Error:
            raw = b""
        if len(raw) != 8 * len(frame):
            raise SandboxError(f"predict_proba did not return {len(frame)} numbers")
        return np.frombuffer(raw, dtype="<f8").astype(float)

    def fingerprint(self) -> dict:
        """The fitted preprocessing statistics of the pipeline (plain JSON; untrusted)."""
        self._need_pipeline()
        reply = self._request({"op": "fingerprint"}, self.limits.call_timeout_s, "fingerprint")
        data = reply.get("data")
        if not isinstance(data, dict):
            raise SandboxError("the fingerprint is not a JSON object")
        return data

    def pipeline_bytes(self) -> bytes | None:
        """The pickled submitted pipeline, opaque (never loaded by the harness); None if none."""
        if not self._has_pipeline:
            self.pipeline_problem = self.pipeline_problem or "no pipeline was submitted"
            return None
        if self._pipeline_bytes is None and self.pipeline_problem is None:
            self._fetch_pipeline_bytes()
        return self._pipeline_bytes

    def _fetch_pipeline_bytes(self) -> None:
        try:
            reply = self._request({"op": "pickle"}, self.limits.call_timeout_s, "pipeline")
        except SandboxError as exc:
            self.pipeline_problem = str(exc)
            return
        encoded = reply.get("b64")
        if not isinstance(encoded, str):
            self.pipeline_problem = str(reply.get("problem") or "the pipeline was not handed over")
            return
        try:
            self._pipeline_bytes = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self.pipeline_problem = "the sandbox sent a malformed pipeline"

    def recipe(self) -> tuple[bytes, list[str]]:
        """The pipeline's unfitted recipe, ``clone(pipeline)`` pickled, and the train columns it
        was fit on. Opaque bytes: the harness never unpickles them. SandboxError says why not."""
        self._need_pipeline()
        reply = self._request({"op": "recipe"}, self.limits.call_timeout_s, "recipe")
        data, columns = _b64(reply.get("b64")), reply.get("columns")
        if data is None or not (
            isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)
        ):
            raise SandboxError(_text(reply.get("problem")) or "the sandbox sent no recipe")
        return data, columns

    def refit(
        self,
        recipe: bytes,
        columns: list[str],
        frame: pd.DataFrame,
        perm_frame: pd.DataFrame,
        permutations: int,
        seed: int,
        timeout_s: float | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Fit ``recipe`` on this worker's train_df and predict ``frame``; then refit it on
        ``permutations`` permutations of the labels and predict ``perm_frame`` each time."""
        msg = {
            "op": "refit",
            "data": bytes(recipe),
            "columns": list(columns),
            "frame": frame,
            "perm_frame": perm_frame,
            "permutations": permutations,
            "seed": seed,
        }
        reply = self._request(msg, timeout_s or self.limits.call_timeout_s, "refit")
        raw = _b64(reply.get("f8"))
        if raw is None:
            raise SandboxError(_text(reply.get("problem")) or "the refit sent no predictions")
        n = len(frame) + permutations * len(perm_frame)
        if len(raw) != 8 * n:
            raise SandboxError(f"the refit did not return {n} numbers")
        values = np.frombuffer(raw, dtype="<f8").astype(float)
        if not np.isfinite(values).all():
            raise SandboxError("the refit returned NaN or infinite values")
        rest = values[len(frame) :]
        return values[: len(frame)], [
            rest[i * len(perm_frame) : (i + 1) * len(perm_frame)] for i in range(permutations)
        ]

    def load_pipeline(self, data: bytes) -> None:
        """Unpickle ``data`` inside the worker and make it the submitted pipeline."""
        self._request({"op": "load", "data": bytes(data)}, self.limits.call_timeout_s, "ok")
        self._has_pipeline = True
        self._pipeline_bytes = bytes(data)
        self.pipeline_problem = None

    def _need_pipeline(self) -> None:
        if not self._has_pipeline:
            raise SandboxError(self.pipeline_problem or "no pipeline was submitted")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _submit_request(msg: dict[str, Any]) -> SubmitRequest:
    """Rebuild a SubmitRequest from untrusted JSON, type-checking every field."""
    proba, problem = msg.get("proba"), msg.get("problem")
    if proba is not None:
        try:
            if not (isinstance(proba, list) and all(_is_number(v) for v in proba)):
                raise ValueError
            proba = [float(v) for v in proba]  # a huge JSON integer raises OverflowError
        except (ValueError, OverflowError):
            proba, problem = None, "the sandbox sent malformed values"
    shape = msg.get("shape")
    if not (isinstance(shape, list) and all(type(n) is int for n in shape)):
        shape = None
    key = msg.get("key") if msg.get("key") in PROBA_KEYS else None
    if proba is None and not isinstance(problem, str):
        problem = "no probabilities were given"
    return SubmitRequest(
        proba=proba,
        shape=shape,
        problem=problem if isinstance(problem, str) else None,
        key=key,
        has_pipeline=msg.get("has_pipeline") is True,
        pipeline_problem=_text(msg.get("pipeline_problem")),
        recipe=_b64(msg.get("recipe_b64")),
        check_code=msg.get("check_code") if msg.get("check_code") in SUBMIT_CHECKS else None,
        check_problem=_text(msg.get("check_problem")),
    )


def _b64(value: Any) -> bytes | None:
    """Bytes the worker sent as base64, or None when they are missing or malformed."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(value: Any, limit: int = 2000) -> str | None:
    return value[:limit] if isinstance(value, str) else None
