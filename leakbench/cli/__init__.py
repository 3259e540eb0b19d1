"""The ``leakbench`` command line: parse, call the core, render. One module per command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from dotenv import load_dotenv
from typer.core import TyperGroup

from leakbench import __version__
from leakbench.cli import display
from leakbench.cli.state import AppState
from leakbench.errors import LeakbenchError


class _Group(TyperGroup):
    """Catches ``LeakbenchError`` once for every command: one red line, the right exit code."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except LeakbenchError as exc:
            display.error(str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            display.error("interrupted")
            ctx.exit(130)


app = typer.Typer(
    cls=_Group,
    name="leakbench",
    help=(
        "An evaluation harness for leakage-aware modelling: generate task instances, run agents "
        "in a sandbox, grade, calibrate the pass threshold, report.\n\n"
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
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings file; repeatable, later files win over earlier ones.",
            metavar="PATH",
        ),
    ] = None,
    results_dir: Annotated[
        Path | None,
        typer.Option(help="Where runs are written and read (default: run.results_dir, 'results')."),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More output; -v streams turns.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="Plain output without colours.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options come before the command."""
    display.configure(no_color=no_color, verbosity=-1 if quiet else verbose)
    # ANTHROPIC_API_KEY may live in ./.env; the real environment wins over it.
    load_dotenv(Path.cwd() / ".env", override=False)
    ctx.obj = AppState(config_files=list(config or []), results_dir=results_dir)


def _register() -> None:
    from leakbench.cli import calibrate, generate, grade, report, run, selfcheck, settings_cmd

    for module in (generate, run, grade, settings_cmd, calibrate, report, selfcheck):
        module.register(app)


_register()


def main() -> None:
    app(prog_name="leakbench")
