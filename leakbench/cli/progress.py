"""Live progress of a run on stderr: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from leakbench.cli import display
from leakbench.store.runs import EpisodeRecord


class RunProgress:
    """Observer of ``execute_run``: counts, tokens, cost, ETA; with -v, every turn as it happens."""

    def __init__(self, stream_turns: bool) -> None:
        self.stream_turns = stream_turns
        self.total = 0
        self.done = 0
        self.passed = 0
        self.errors = 0
        self.tokens = 0
        self.cache_read = 0
        self.cost = 0.0
        self._start = time.perf_counter()
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _status(self) -> str:
        # The summary's definitions: tokens in + out (cache reads and writes named apart there).
        return (
            f"passed {self.passed}  errors {self.errors}  tokens in+out {self.tokens:,}  "
            f"cache read {self.cache_read:,}  cost ${self.cost:.4f}"
        )

    def _count(self, record: EpisodeRecord) -> None:
        self.done += 1
        self.passed += record.passed
        self.errors += record.outcome == "error"
        usage = record.usage
        self.tokens += int(usage.get("input_tokens", 0) + usage.get("output_tokens", 0))
        self.cache_read += int(usage.get("cache_read_tokens", 0))
        self.cost += float(usage.get("cost_usd", 0.0))

    def started(self, total: int, done: list[EpisodeRecord]) -> None:
        self.total = total
        for record in done:
            self._count(record)
        if display.verbosity() < 0:
            return
        interactive = sys.stderr.isatty() and not self.stream_turns
        if interactive:
            self._bar = Progress(
                TextColumn("episodes"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=display.err_console(),
                transient=False,
            )
            self._task = self._bar.add_task(
                "run", total=total, completed=self.done, status=self._status()
            )
            self._bar.start()
        elif done:
            display.info(f"resuming: {len(done)} of {total} episodes already finished")

    def finished(self, record: EpisodeRecord) -> None:
        with self._lock:
            self._count(record)
            if self._bar is not None and self._task is not None:
                self._bar.update(self._task, completed=self.done, status=self._status())
                return
            score = "-" if record.score is None else f"{record.score:.4f}"
            elapsed = time.perf_counter() - self._start
            display.info(
                f"[{self.done}/{self.total}] episode {record.index} seed {record.seed}: "
                f"{record.outcome} {record.metric}={score} steps={record.steps} "
                f"({self._status()}, {elapsed:.1f}s)"
            )
            if record.outcome != "passed" and record.reasons and display.verbosity() >= 1:
                display.info("    " + "; ".join(record.reasons))

    def event(self, index: int, kind: str, text: str) -> None:
        """One block of an episode's turn (-v): with several episodes in flight, blocks of
        different episodes interleave, so every line carries its episode. The agent's text,
        its code and the sandbox's output are shown, never interpreted by the terminal."""
        if not self.stream_turns:
            return
        label = {"text": "agent", "code": "code", "result": "result"}.get(kind, kind)
        body = text if len(text) <= 2000 else text[:2000] + " ..."
        with self._lock:
            # The body is indented, so no line of it can pass for a block header.
            display.untrusted(f"[ep {index}] ", f"{label}:")
            display.untrusted(f"[ep {index}]   ", body)
