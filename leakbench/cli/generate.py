"""``leakbench generate``: write task instances to a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leakbench.cli import display
from leakbench.cli.options import Json, Preset, PublicSeeds, Seed
from leakbench.cli.state import state


def generate_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the instances into.")],
    preset: Preset = None,
    seed: Seed = None,
    count: Annotated[
        int, typer.Option(min=1, help="Number of instances (seeds seed..seed+count-1).")
    ] = 1,
    force: Annotated[bool, typer.Option(help="Write into a folder that is not empty.")] = False,
    public_seeds: PublicSeeds = False,
    json_out: Json = False,
) -> None:
    """Write task instances with their answer keys.

    Each instance folder holds public/ (what the agent sees), private/ (the answers, the
    secret instance key this call drew, and under a prior the drawn process) and instance.json
    (seed, settings hash, column roles, sha256 of the data files, oracle AUROC).

    With --count 1 the instance goes straight into OUT; with more, into OUT/seed-S/ for each seed S.

    Example: leakbench generate --preset seed --seed 42 --out instances/seed42
    """
    from leakbench.task.files import generate_instances

    flags = {"task.seed": seed, "task.public_seeds": True if public_seeds else None}
    settings = state(ctx).settings(preset, flags)
    manifests = generate_instances(settings, out, count=count, force=force)
    if json_out:
        display.print_json([{"folder": str(f), **m.model_dump(mode="json")} for f, m in manifests])
        return
    for folder, manifest in manifests:
        display.print_text(
            f"{folder}\tseed={manifest.seed}\toracle_auroc={manifest.oracle_auroc:.4f}"
        )


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
