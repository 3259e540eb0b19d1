"""The ``leakbench`` command line: parse, call the core, render. One module per command.

This module is the entry point and stays light: ``main`` starts the sandbox's zygote for a
``run`` before the command line (Typer, the settings, pandas) is even imported, so the zygote's
imports and the harness's overlap. The application itself is ``leakbench.cli.root``.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from leakbench.cli.process import handle_sigterm, mark_process_start, start_sandbox_early


def main() -> None:
    mark_process_start()
    handle_sigterm()
    start_sandbox_early(sys.argv[1:])
    from leakbench.cli.root import app

    try:
        app(prog_name="leakbench")
    finally:
        # The interpreter's last garbage collection would walk every object the scientific
        # stack made (about 0.2 s of a one-episode run); frozen, they are left to the OS.
        gc.freeze()


def __getattr__(name: str) -> Any:
    if name == "app":  # ``from leakbench.cli import app`` (tests, CliRunner) loads it on demand
        from leakbench.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
