"""Output capture inside a worker: bounded, so an output flood cannot exhaust anyone's memory."""

from __future__ import annotations

import io
import os
import re

# A number as it appears in printed data: not the digit in an identifier like num_0.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


class BoundedText(io.TextIOBase):
    """A text sink that keeps the first ``limit`` characters and only counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self.limit - self.kept
        if room > 0:
            part = s[:room]
            self.parts.append(part)
            self.kept += len(part)
            self.dropped += len(s) - len(part)
        else:
            self.dropped += len(s)
        return len(s)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Libraries that write to our fileno() land in the fd-level capture (fd 1 is a memfd).
        return 1

    @property
    def encoding(self) -> str:
        return "utf-8"

    def take(self) -> tuple[str, int]:
        """Return (kept text, number of dropped characters) and reset."""
        text, dropped = "".join(self.parts), self.dropped
        self.parts, self.kept, self.dropped = [], 0, 0
        return text, dropped


class FdCapture:
    """Points fds 1 and 2 at a memfd so C-level writes never reach the harness terminal."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("leakbench-output", os.MFD_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)

    def take(self, limit: int) -> tuple[str, int]:
        """Return (first ``limit`` characters, number dropped) and empty the buffer."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return "", 0
        raw = os.pread(self.fd, min(size, limit * 4), 0)
        os.ftruncate(self.fd, 0)
        os.lseek(1, 0, os.SEEK_SET)  # fds 1, 2 and self.fd share one file offset
        text = raw.decode("utf-8", "replace")
        kept = text[:limit]
        return kept, max(size - len(kept.encode("utf-8", "replace")), 0)


def count_numbers(text: str) -> int:
    """How many numeric tokens a text holds (what the print-values guard counts)."""
    return sum(1 for _ in _NUMBER.finditer(text))


def shape_output(text: str, dropped: int, limit: int, factor: int, n_columns: int) -> str:
    """Apply the print-values guard, then truncate to ``limit`` characters with a marker.

    The guard (as in the original task): output holding more numeric values than
    ``factor × number of train_df columns`` is withheld, so the agent cannot read data rows
    through the tool; the marker says how much was counted so it can print a summary instead.
    """
    allowed = factor * n_columns
    found = count_numbers(text)
    if factor > 0 and found > allowed:
        return (
            f"[output withheld: it contained {found} numeric values, more than "
            f"{factor} x {n_columns} columns = {allowed}. Do not print raw data values; print "
            "shapes, column names or a few aggregate metrics instead.]\n"
        )
    if len(text) > limit:
        dropped += len(text) - limit
        text = text[:limit]
    if dropped:
        text += f"\n... [output truncated: {dropped} more characters]\n"
    return text
