"""Leakbench episodes as an environment (SPEC §10): ``Environment`` (threads) and
``AsyncEnvironment`` (``asyncio``) give an episode per ``reset``; its ``step`` runs an agent
turn's tool calls in the episode's sandbox, and the last step carries the grade and reward.
``leakbench run`` plays its agents through the same episodes (``leakbench.env.episode``).

Names load on first use, so ``import leakbench.env`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Environment": "leakbench.env.environment",
    "Episode": "leakbench.env.environment",
    "REWARDS": "leakbench.env.environment",
    "margin_reward": "leakbench.env.environment",
    "pass_reward": "leakbench.env.environment",
    "tool_calls_from": "leakbench.env.environment",
    "AsyncEnvironment": "leakbench.env.aio",
    "AsyncEpisode": "leakbench.env.aio",
    "Observation": "leakbench.env.episode",
    "StepResult": "leakbench.env.episode",
    "ToolCall": "leakbench.agents.base",
    "ToolResult": "leakbench.agents.base",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'leakbench.env' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
