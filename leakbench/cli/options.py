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
PublicSeeds = Annotated[
    bool,
    typer.Option(
        "--public-seeds",
        help="Draw instances from public seeds alone (task.public_seeds), reproducing the "
        "original project number for number, instead of from a fresh secret key. Anyone can "
        "regenerate such instances: not tamper-proof.",
    ),
]
