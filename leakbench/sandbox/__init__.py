"""An isolated, persistent, fast-starting Python sandbox for episodes and submitted pipelines.

See ``pool.py`` (harness side), ``zygote.py`` and ``worker.py`` (the sandbox processes) and
``containment.py`` (what keeps the agent's code away from the harness, its files and the network).
Names are loaded on first use, so ``leakbench.sandbox.pool`` can launch a zygote before the
harness has imported pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leakbench.sandbox.models import (
        CallResult,
        SandboxError,
        SandboxLimits,
        SubmitReply,
        SubmitRequest,
    )
    from leakbench.sandbox.pool import SandboxPool
    from leakbench.sandbox.session import Session

_HOMES = {
    "CallResult": "models",
    "SandboxError": "models",
    "SandboxLimits": "models",
    "SubmitReply": "models",
    "SubmitRequest": "models",
    "SandboxPool": "pool",
    "Session": "session",
}

__all__ = [
    "CallResult",
    "SandboxError",
    "SandboxLimits",
    "SandboxPool",
    "Session",
    "SubmitReply",
    "SubmitRequest",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"leakbench.sandbox.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
