"""The one exception type for problems the user can fix."""

from __future__ import annotations


class LeakbenchError(Exception):
    """Something the user must fix: shown as one line, no traceback.

    ``exit_code`` follows the CLI contract: 1 for a failure at run time that the user caused
    (a missing API key, a results folder in the way), 2 for bad usage or bad configuration.
    """

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(LeakbenchError):
    """Bad settings: a broken TOML file, an unknown key, a wrong type or value (exit code 2)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=2)


class UsageError(LeakbenchError):
    """Bad command-line usage or bad input data given on the command line (exit code 2)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=2)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: handled exactly like Ctrl-C, but exits 143."""


class EpisodesErrored(LeakbenchError):
    """A run finished, but some episodes ended in ``error`` (exit code 3): they are left out of
    the pass rate and ``run --resume`` runs them again."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=3)
