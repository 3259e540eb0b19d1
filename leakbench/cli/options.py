"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

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
    typer.Option("--seed", help="Seed of the first instance (task.seed); instance i uses seed+i."),
]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
