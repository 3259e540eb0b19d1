"""Sandbox limits from the settings."""

from __future__ import annotations

from leakbench.sandbox import SandboxLimits
from leakbench.settings import Settings


def sandbox_limits(settings: Settings) -> SandboxLimits:
    agent = settings.agent
    return SandboxLimits(
        memory_mb=agent.memory_limit_mb,
        call_timeout_s=agent.tool_timeout_s,
        stdout_max_chars=agent.stdout_max_chars,
        print_values_factor=agent.print_values_factor,
        check_refit=settings.grading.refit_check,
        refit_tolerance=settings.grading.refit_tolerance,
    )
