"""All human-facing output: diagnostics to stderr through rich, results to stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_state = {"no_color": False, "verbosity": 0}
_PIPE_WIDTH = 160


def configure(*, no_color: bool, verbosity: int) -> None:
    _state["no_color"] = no_color or bool(os.environ.get("NO_COLOR"))
    _state["verbosity"] = verbosity
    err_console.cache_clear()


def verbosity() -> int:
    return int(_state["verbosity"])


class _Lazy:
    """A console created on first use, so ``--no-color`` and CliRunner's streams apply."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __call__(self) -> Console:
        stream = sys.stderr if self._stderr else sys.stdout
        if self._console is None or self._console.file is not stream:
            # Redirected to a file or a pipe, tables keep their rows whole instead of wrapping
            # every cell at rich's default 80 columns.
            width = None if stream.isatty() else _PIPE_WIDTH
            self._console = Console(
                file=stream,
                no_color=bool(_state["no_color"]),
                highlight=False,
                soft_wrap=True,
                width=width,
            )
        return self._console

    def cache_clear(self) -> None:
        self._console = None


err_console = _Lazy(stderr=True)
out_console = _Lazy(stderr=False)


def error(message: str) -> None:
    err_console().print(f"[bold red]error:[/bold red] {_escape(message)}")


def warn(message: str) -> None:
    if verbosity() >= 0:
        err_console().print(f"[yellow]warning:[/yellow] {_escape(message)}")


def info(message: str) -> None:
    if verbosity() >= 0:
        err_console().print(_escape(message))


def debug(message: str) -> None:
    if verbosity() >= 1:
        err_console().print(f"[dim]{_escape(message)}[/dim]")


def _escape(text: str) -> str:
    return escape(text)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def print_table(table: Table) -> None:
    out_console().print(table)


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
