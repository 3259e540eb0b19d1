"""What the global options leave for the commands, and the settings every command resolves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from leakbench.settings import Settings, SettingsSources, resolve


@dataclass
class AppState:
    config_files: list[Path] = field(default_factory=list)
    results_dir: Path | None = None

    def settings(self, preset: str | None, flags: dict[str, Any] | None = None) -> Settings:
        flags = dict(flags or {})
        if self.results_dir is not None:
            flags["run.results_dir"] = str(self.results_dir)
        return resolve(SettingsSources(preset=preset, config_files=self.config_files, flags=flags))


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppState) else AppState()
