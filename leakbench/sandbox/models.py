"""The values that cross the sandbox boundary, as the harness sees them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from leakbench.settings import Settings


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one episode's worker (SPEC §5.2)."""

    memory_mb: int = 2048  # RLIMIT_AS; below ~500 MB BLAS crashes instead of raising MemoryError
    call_timeout_s: float = 60.0  # per execute() call, wall clock
    cpu_seconds: int = 3600  # RLIMIT_CPU per worker
    max_file_mb: int = 256  # RLIMIT_FSIZE
    # Full isolation: the scratch folder is a tmpfs of this size (a worker cannot fill the disk).
    scratch_mb: int = 512
    max_open_files: int = 256
    max_processes: int = 32  # RLIMIT_NPROC (the per-episode uid makes it meaningful)
    stdout_max_chars: int = 8000
    print_values_factor: int = 2
    # What the agent's worker checks when a pipeline is submitted (grading.refit_check): a
    # pipeline the grader's refit would reject is refused while the agent can fix it.
    check_refit: bool = True
    refit_tolerance: float = 1e-6

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        """An episode's limits as its settings give them (``agent.*``, ``grading.refit_*``)."""
        agent = settings.agent
        return cls(
            memory_mb=agent.memory_limit_mb,
            call_timeout_s=agent.tool_timeout_s,
            stdout_max_chars=agent.stdout_max_chars,
            print_values_factor=agent.print_values_factor,
            check_refit=settings.grading.refit_check,
            refit_tolerance=settings.grading.refit_tolerance,
        )


@dataclass(frozen=True)
class SubmitRequest:
    """What the agent passed to ``submit_answer`` inside the sandbox, reduced to plain data."""

    proba: list[float] | None  # None when the worker could not turn the payload into numbers
    shape: list[int] | None  # shape of the array the agent gave, if it had one
    problem: str | None  # why there are no numbers
    key: str | None  # which accepted key was used
    has_pipeline: bool
    pipeline_problem: str | None = None  # why the given pipeline cannot be pickled (and graded)
    recipe: bytes | None = None  # cloudpickle of clone(pipeline): never unpickled by the harness
    check_code: str | None = None  # a failed-check code the worker found at submission ...
    check_problem: str | None = None  # ... and its message


@dataclass(frozen=True)
class SubmitReply:
    """The harness's authoritative answer to a submission."""

    accepted: bool
    message: str  # shown to the agent


@dataclass
class CallResult:
    """The outcome of one ``python_expression`` call."""

    ok: bool  # False: exception, timeout, crash
    output: str  # exactly what the agent is shown
    restarted: bool = False  # the worker was replaced; the agent's state was lost
    timed_out: bool = False
    duration_s: float = 0.0


class SandboxError(Exception):
    """A request to the worker failed (dead, hung, bad pipeline)."""


PROBA_KEYS = ("y_pred_proba", "proba", "probas", "pred_proba", "y_pred")


@dataclass
class WorkerHandle:
    """One live worker as the harness holds it (``SandboxPool.spawn`` / ``dispose``)."""

    pid: int
    pidfd: int
    sock: socket.socket
    scratch: str
    uid: int


class WorkerSource(Protocol):
    """Where a session gets its workers (``SandboxPool``): the only calls it makes on a pool."""

    def spawn(self, limits: SandboxLimits) -> WorkerHandle: ...

    def dispose(self, worker: WorkerHandle) -> None: ...
