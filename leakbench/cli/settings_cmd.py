"""``leakbench settings``: print the resolved settings as TOML, or the reference of every key."""

from __future__ import annotations

from typing import Annotated

import typer

from leakbench.cli import display
from leakbench.cli.options import Preset
from leakbench.cli.state import state
from leakbench.errors import UsageError


def settings_command(
    ctx: typer.Context,
    preset: Preset = None,
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="Print every key with its type, default and meaning (a markdown table) instead.",
        ),
    ] = False,
) -> None:
    """Print the resolved settings as TOML.

    Layers, later wins: built-in defaults < preset < --config files < LEAKBENCH_* variables
    (e.g. LEAKBENCH_GRADING__THRESHOLD=0.95) < flags.

    Example: leakbench settings --preset seed
    """
    if reference:
        if preset is not None:
            raise UsageError("--reference lists every preset's values; it takes no --preset")
        from leakbench.settings_reference import reference_markdown

        display.print_text(reference_markdown())
        return
    display.print_text(state(ctx).settings(preset).to_toml())


def register(app: typer.Typer) -> None:
    app.command("settings")(settings_command)
