"""An isolated, persistent, fast-starting Python sandbox for episodes and submitted pipelines.

See ``pool.py`` (harness side), ``zygote.py`` and ``worker.py`` (the sandbox processes) and
``containment.py`` (what keeps the agent's code away from the harness, its files and the network).
"""

from leakbench.sandbox.models import (
    CallResult,
    SandboxError,
    SandboxLimits,
    SubmitReply,
    SubmitRequest,
)
from leakbench.sandbox.pool import SandboxPool
from leakbench.sandbox.session import Session

__all__ = [
    "CallResult",
    "SandboxError",
    "SandboxLimits",
    "SandboxPool",
    "Session",
    "SubmitReply",
    "SubmitRequest",
]
