"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# -- global options: on the root, and (by the app's group) after every command as well ---------

GLOBAL_PANEL = "Global options"

ConfigFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file; repeatable, later files win over earlier ones.",
        metavar="PATH",
        rich_help_panel=GLOBAL_PANEL,
    ),
]
ResultsDir = Annotated[
    Path | None,
    typer.Option(
        "--results-dir",
        help="Where runs are written and read (default: run.results_dir, 'results').",
        metavar="DIR",
        rich_help_panel=GLOBAL_PANEL,
    ),
]
Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="More output; -v streams each episode's turns.",
        show_default=False,
        rich_help_panel=GLOBAL_PANEL,
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Only results and errors (wins over -v).",
        rich_help_panel=GLOBAL_PANEL,
    ),
]
NoColor = Annotated[
    bool,
    typer.Option(
        "--no-color",
        help="Plain output: no colours or styles (also when NO_COLOR is set).",
        rich_help_panel=GLOBAL_PANEL,
    ),
]

# -- options of several commands ----------------------------------------------------------------

Preset = Annotated[
    str | None,
    typer.Option(
        "--preset",
        "-p",
        help="Preset from configs/ (seed, default, ...); default: 'default'.",
        metavar="NAME",
    ),
]
Seed = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Seed of the first instance (task.seed); instance i uses seed+i.",
        metavar="SEED",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PublicSeeds = Annotated[
    bool,
    typer.Option(
        "--public-seeds",
        help="Draw instances from public seeds alone (task.public_seeds), reproducing the "
        "original project number for number, instead of from a fresh secret key. Anyone can "
        "regenerate such instances: not tamper-proof.",
    ),
]
