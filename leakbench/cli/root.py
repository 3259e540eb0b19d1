"""The Typer application: the root command, its global options and the commands."""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import load_dotenv
from typer.core import TyperArgument, TyperGroup

from leakbench import __version__
from leakbench.cli import display
from leakbench.cli.options import GLOBAL_PANEL, ConfigFiles, NoColor, Quiet, ResultsDir, Verbose
from leakbench.cli.process import interrupt_exit_code
from leakbench.cli.state import AppState, state
from leakbench.errors import LeakbenchError


class _Argument(TyperArgument):
    """A positional argument shown by its name alone (``RUN``), without a ``<list[str]>``."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None


class _Group(TyperGroup):
    """The root command: global options also after each command, one help style for every
    command, and ``LeakbenchError`` caught once for all of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self)
        for command in self.commands.values():
            _add_global_options(command, self.params)
            _tidy_help(command)

    def get_help_option(self, ctx: typer.Context) -> Any:
        return _flag_help(super().get_help_option(ctx))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            # made on first use, so _tidy_help never sees it; the command inherits our names
            _flag_help(command.get_help_option(ctx))
        return command

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        # --no-color must hold before parsing, for help and usage errors too.
        display.start(list(sys.argv[1:] if args is None else args))
        return super().main(args, *rest, **kwargs)

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except LeakbenchError as exc:
            display.error(str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): 130 or 143
            display.error("interrupted")
            ctx.exit(interrupt_exit_code(exc))


def _add_global_options(command: Any, root_params: list[Any]) -> None:
    """Copies of the root's global options on ``command``, so ``leakbench run -v`` works like
    ``leakbench -v run``; given after the command, they win over the same ones before it."""
    own = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for param in root_params:
        # --version and --help stay on the root; a command's own option of that name wins.
        if getattr(param, "rich_help_panel", None) != GLOBAL_PANEL or own & set(param.opts):
            continue
        after = copy.copy(param)
        after.expose_value = False
        after.callback = _given_after_command
        command.params.append(after)


def _given_after_command(ctx: typer.Context, param: Any, value: Any) -> Any:
    if value:  # every global option defaults to a falsy value: only a given one overrides
        state(ctx).given_after_command(param.name, value)
    return value


def _flag_help(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # a flag: no <bool>
    return option


def _tidy_help(command: Any) -> None:
    """One help style: a value option shows a name (``--runs RUNS``), a flag shows nothing,
    an argument only its name (``[RUN]...`` in the usage line), never ``<int>``-like types."""
    for param in command.params:
        if isinstance(param, TyperArgument):
            param.metavar = (param.metavar or param.name).strip("[].").upper()
            # Typer shows an argument's type whatever its metavar; the subclass only drops that.
            param.__class__ = _Argument
        elif param.metavar is None:
            flag = param.is_flag or param.count
            longest = max(param.opts, key=len).lstrip("-")
            param.metavar = "" if flag else longest.replace("-", "_").upper()


app = typer.Typer(
    cls=_Group,
    name="leakbench",
    help=(
        "An evaluation harness for leakage-aware modelling: generate task instances, run agents "
        "in a sandbox, grade, calibrate the pass threshold, report.\n\n"
        "Global options go before or after the command (after it, they win).\n\n"
        "Example: leakbench run --model local/baseline --runs 5"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold API keys
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        display.print_text(f"leakbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: ConfigFiles = None,
    results_dir: ResultsDir = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    no_color: NoColor = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options go before or after the command."""
    ctx.obj = AppState(
        config_files=list(config or []),
        results_dir=results_dir,
        verbose=verbose,
        quiet=quiet,
        no_color=no_color,
    )
    ctx.obj.apply_display()
    # ANTHROPIC_API_KEY may live in ./.env; the real environment wins over it.
    load_dotenv(Path.cwd() / ".env", override=False)


# One command per module, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "generate",
    "run",
    "grade",
    "settings_cmd",
    "calibrate",
    "report",
    "runs",
    "view",
    "export",
    "selfcheck",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"leakbench.cli.{name}").register(app)


_register()
