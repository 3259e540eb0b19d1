"""``leakbench settings``: print the resolved settings as TOML."""

from __future__ import annotations

import typer

from leakbench.cli import display
from leakbench.cli.options import Preset
from leakbench.cli.state import state


def settings_command(ctx: typer.Context, preset: Preset = None) -> None:
    """Print the resolved settings as TOML.

    Layers, later wins: built-in defaults < preset < --config files < LEAKBENCH_* variables
    (e.g. LEAKBENCH_GRADING__THRESHOLD=0.95) < flags.

    Example: leakbench settings --preset seed
    """
    display.print_text(state(ctx).settings(preset).to_toml())


def register(app: typer.Typer) -> None:
    app.command("settings")(settings_command)
