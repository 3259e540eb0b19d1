"""What the global options leave for the commands, and the settings every command resolves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from leakbench.cli import display
from leakbench.settings import Settings, SettingsSources, resolve


@dataclass
class AppState:
    config_files: list[Path] = field(default_factory=list)
    results_dir: Path | None = None
    verbose: int = 0
    quiet: bool = False
    no_color: bool = False
    _verbosity_after: bool = field(default=False, repr=False)

    def apply_display(self) -> None:
        display.configure(no_color=self.no_color, verbosity=-1 if self.quiet else self.verbose)

    def given_after_command(self, name: str, value: Any) -> None:
        """A global option given after the command: it wins over the same one before it.

        ``-v``/``-q`` after the command replace those before it (``-q`` still wins over ``-v``);
        ``--config`` files after it are read after those before it, so they win too.
        """
        if name in ("verbose", "quiet") and not self._verbosity_after:
            self.verbose, self.quiet, self._verbosity_after = 0, False, True
        if name == "config":
            self.config_files += list(value)
        else:
            setattr(self, name, value)
        self.apply_display()

    def settings(self, preset: str | None, flags: dict[str, Any] | None = None) -> Settings:
        flags = dict(flags or {})
        if self.results_dir is not None:
            flags["run.results_dir"] = str(self.results_dir)
        return resolve(SettingsSources(preset=preset, config_files=self.config_files, flags=flags))


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppState) else AppState()
