"""All human-facing output: diagnostics to stderr through rich, results to stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from leakbench.untrusted import printable

_state = {"no_color": False, "plain": False, "verbosity": 0}
_PIPE_WIDTH = 160


def start(argv: list[str]) -> None:
    """Before parsing: ``--no-color`` anywhere among the options, or ``NO_COLOR``, makes the
    whole invocation plain, typer's help and usage errors included."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    _state["plain"] = "--no-color" in options
    configure(no_color=False, verbosity=0)


def configure(*, no_color: bool, verbosity: int) -> None:
    plain = no_color or bool(_state["plain"]) or bool(os.environ.get("NO_COLOR"))
    _state["no_color"] = plain
    _state["verbosity"] = verbosity
    err_console.cache_clear()
    out_console.cache_clear()
    _style_typer(plain)


def _style_typer(plain: bool) -> None:
    # Typer prints help and usage errors through consoles of its own; COLOR_SYSTEM = None is its
    # switch for "no ANSI codes at all" (rich's no_color alone keeps bold, dim and italic).
    module = sys.modules.get("typer.rich_utils")
    if module is None and plain:
        import typer.rich_utils as module
    if module is not None:
        module.COLOR_SYSTEM = None if plain else "auto"


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
            plain = bool(_state["no_color"])
            self._console = Console(
                file=stream,
                color_system=None if plain else "auto",  # None: no styles at all, bold included
                no_color=plain,
                highlight=False,
                emoji=False,
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


def untrusted(prefix: str, text: str) -> None:
    """Text from an agent or its sandbox on stderr, each line after ``prefix``: shown as written,
    never interpreted (no escape sequences, no rich markup)."""
    if verbosity() >= 0:
        lines = printable(text).split("\n")
        err_console().print(Text("\n".join(prefix + line for line in lines)))


def _escape(text: str) -> str:
    return escape(printable(text))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def print_table(table: Table) -> None:
    out_console().print(table)


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
