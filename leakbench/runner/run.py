"""A run: N episodes of one agent, run concurrently, each graded and logged as it ends.

Threads, not processes: an episode spends its time waiting on the model or on its sandbox worker
(a separate process), so the harness itself needs little CPU. Episodes in flight, and so model
calls at once, are bounded by ``run.concurrency``; sandbox calls at once by
``run.sandbox_concurrency`` (default: one per core), so 32 conversations can wait on the model
while the CPU runs only as many fits as it has cores.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from leakbench.agents.base import Agent
from leakbench.runner.local import LocalEpisodes
from leakbench.sandbox import SandboxPool
from leakbench.settings import Settings
from leakbench.store.runs import (
    EpisodeRecord,
    RunBusy,
    RunDir,
    StoreError,
    summarize,
    total_usage,
)

if TYPE_CHECKING:
    from leakbench.runner.cluster import RayEpisodes

MANIFEST_PROGRESS_S = 1.0


class RunObserver(Protocol):
    def started(self, total: int, done: list[EpisodeRecord]) -> None: ...

    def finished(self, record: EpisodeRecord) -> None: ...

    def event(self, index: int, kind: str, text: str) -> None: ...


class QuietObserver:
    """A run observer that shows nothing and hands each finished episode to ``on_finished``."""

    def __init__(self, on_finished: Callable[[EpisodeRecord], None] | None = None) -> None:
        self._on_finished = on_finished

    def started(self, total: int, done: list[EpisodeRecord]) -> None:
        pass

    def finished(self, record: EpisodeRecord) -> None:
        if self._on_finished is not None:
            self._on_finished(record)

    def event(self, index: int, kind: str, text: str) -> None:
        pass


@dataclass
class RunResult:
    run: RunDir
    records: list[EpisodeRecord]


class Runner:
    """A run from Python, as ``leakbench run`` does it, without the command line::

        with Runner(settings) as runner:       # key checked, sandbox launched, folder made
            runner.start()                     # prompts built, sandbox ready
            result = runner.execute()          # every pending episode, graded and logged

    ``run(settings)`` does all three. ``resume=RunDir.open(path)`` finishes an interrupted run
    with its stored key instead of making a new one (the settings should be the run's own:
    ``run_dir.settings()``). A model API's key and model are checked before any folder is made.
    The run's writer lock is held from the moment the folder is made (or opened) until the
    block ends, so no other leakbench writes it meanwhile. A ``pool`` passed in is used and
    left open (the caller may run more with it); one made here is closed at the end. When the
    block ends with Ctrl-C (``KeyboardInterrupt``) before the episodes began, the run is marked
    interrupted; during them, ``execute`` has done so. With ``run.executor = "ray"`` the
    episodes are played on a Ray cluster's nodes (``leakbench.runner.cluster``): Ray and the
    cluster's address are checked before any folder is made, ``start`` starts one actor per
    node, and ``pool`` is not used.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resume: RunDir | None = None,
        pool: SandboxPool | None = None,
        argv: Sequence[str] = (),
    ) -> None:
        from leakbench.agents import api_client, parse_model

        provider, name = parse_model(settings.agent.model)
        # One spelling per model in run ids, manifests and reports (claude-x -> anthropic/...).
        self.settings = settings.with_overrides({"agent.model": f"{provider}/{name}"})
        self.client: Any = api_client(self.settings)
        # On a cluster each node's actor owns a pool; this one is only a caller's, left alone.
        self.pool = pool if pool is not None else SandboxPool()
        self._owns_pool = pool is None
        self.cluster: RayEpisodes | None = None
        if self.settings.run.executor == "ray":
            from leakbench.runner.cluster import RayEpisodes

            # Ray installed and the cluster reachable, like the model's key, before any folder.
            self.cluster = RayEpisodes(self.settings)
            self.cluster.join()
        self._resume = resume
        self._argv = list(argv)
        self._stack = contextlib.ExitStack()
        self._prompts: tuple[str, str] | None = None
        self.run: RunDir | None = None

    def __enter__(self) -> Runner:
        if self._owns_pool:
            self._stack.callback(self.pool.close)
        if self.cluster is not None:
            self._stack.callback(self.cluster.close)
        try:
            # The zygote imports the scientific stack in its own process while this one goes on.
            if self.cluster is None:
                self.pool.launch()
            run = self._resume
            if run is None:
                results = Path(self.settings.run.results_dir)
                run = RunDir.create(results, self.settings, self._argv)
            self._stack.enter_context(run.writing("run"))
            self.run = run
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, KeyboardInterrupt) and self.run is not None:
                _mark_interrupted(self.run)
        finally:
            self._stack.close()

    def start(self) -> None:
        """Build the prompts (while the zygote starts) and wait for the sandbox to be ready;
        ``isolation`` then says how isolated its workers are. With ``run.executor = "ray"``:
        join the cluster and start one actor (and sandbox pool) per node instead."""
        from leakbench.env.prompts import build_prompts

        self._prompts = build_prompts(self.settings)
        if self.cluster is None:
            self.pool.start()
            return
        from leakbench.agents import client_environment

        assert self.run is not None, "Runner.start() outside its with block"
        secrets = client_environment(self.settings)
        self.cluster.start_nodes(self._prompts, self.run.instance_key(), secrets)

    @property
    def isolation(self) -> str:
        """How isolated the sandbox workers are: ``full`` or ``reduced`` (on a cluster, the
        weakest of its nodes); why, when not full, is ``isolation_note``."""
        source = self.cluster if self.cluster is not None else self.pool
        return source.isolation

    @property
    def isolation_note(self) -> str | None:
        source = self.cluster if self.cluster is not None else self.pool
        return source.isolation_note

    def execute(
        self, observer: RunObserver | None = None, *, command_started: float | None = None
    ) -> RunResult:
        """Run every pending episode (see ``execute_episodes``)."""
        from leakbench.agents import make_agent

        if self.run is None:
            raise RuntimeError("Runner.execute() outside its with block")
        if self._prompts is None:
            self.start()
        assert self._prompts is not None
        settings, client = self.settings, self.client
        observer = observer or QuietObserver()
        source: EpisodeSource
        if self.cluster is not None:
            source = self.cluster
        else:
            source = LocalEpisodes(
                settings,
                lambda: make_agent(settings.agent.model, settings, client),
                self._prompts,
                self.pool,
                observer.event,
            )
        return execute_episodes(
            self.run, settings, source, observer, command_started=command_started
        )


def run(
    settings: Settings,
    *,
    resume: RunDir | None = None,
    pool: SandboxPool | None = None,
    observer: RunObserver | None = None,
) -> RunResult:
    """Make (or finish, with ``resume``) a run and return its records: ``Runner`` in one call.

    Example::

        from leakbench.runner.run import run
        from leakbench.settings import SettingsSources, resolve

        settings = resolve(SettingsSources(preset="default", flags={"run.runs": 20}))
        result = run(settings)
        print(sum(r.passed for r in result.records), "of", len(result.records), "passed")
    """
    with Runner(settings, resume=resume, pool=pool) as runner:
        runner.start()
        return runner.execute(observer)


def _mark_interrupted(run: RunDir) -> None:
    """A run stopped before ``execute_run`` took over (start-up) still says it was interrupted;
    if another leakbench holds the run, it is that one's to say."""
    if run.manifest.status == "running":
        with contextlib.suppress(RunBusy, OSError), run.writing("interrupted"):
            run.write_manifest(status="interrupted")


def pending_indices(run: RunDir, runs: int) -> tuple[list[EpisodeRecord], list[int]]:
    """The finished episodes to keep and the indices still to run. Errors are run again: their
    lines are dropped from the log first, so the log never holds two lines for one episode."""
    records = run.records()
    kept = [r for r in records if r.outcome != "error" and r.index < runs]
    if len(kept) != len(records):
        # What the dropped episodes spent (tokens, cost) still counts in the run's totals.
        dropped = [r for r in records if r not in kept]
        spent = total_usage(dropped, run.manifest.usage_of_dropped)
        run.write_manifest(usage_of_dropped=spent)
        run.rewrite_records(kept)
    done = {r.index for r in kept}
    return kept, [i for i in range(runs) if i not in done]


class EpisodeSource(Protocol):
    """Where a run's episodes are played: threads on this machine (``runner.local``) or the
    nodes of a Ray cluster (``runner.cluster``). The run's loop is the same for both."""

    kind: str  # run.executor
    isolation: str
    episodes_rerun: int  # episodes played again because where they ran was lost

    def play(
        self,
        run: RunDir,
        todo: list[int],
        finished: queue.Queue[EpisodeRecord | BaseException],
        cancel: threading.Event,
    ) -> None:
        """Start playing the episodes ``todo`` and return at once. Each episode's files and
        record are written to ``run`` before its record goes to ``finished``; a fault that stops
        the source goes there as an exception. Once ``cancel`` is set nothing more is written
        (an episode cut short leaves no line and runs again on resume)."""
        ...


def execute_run(
    run: RunDir,
    settings: Settings,
    make_agent: Callable[[], Agent],
    prompts: tuple[str, str],
    pool: SandboxPool,
    observer: RunObserver,
    *,
    command_started: float | None = None,
) -> RunResult:
    """Run every pending episode of ``run`` on this machine while holding its writer lock
    (``execute_episodes`` with ``LocalEpisodes``)."""
    source = LocalEpisodes(settings, make_agent, prompts, pool, observer.event)
    return execute_episodes(run, settings, source, observer, command_started=command_started)


def execute_episodes(
    run: RunDir,
    settings: Settings,
    source: EpisodeSource,
    observer: RunObserver,
    *,
    command_started: float | None = None,
) -> RunResult:
    """Run every pending episode of ``run`` from ``source`` while holding its writer lock.

    Ctrl-C (or SIGTERM, raised as ``KeyboardInterrupt`` by the CLI) marks the run interrupted
    and re-raises; every episode finished by then is on disk and ``--resume`` runs the rest.
    Episodes cut short by the interruption leave no line. A results folder that cannot be
    written (a full disk) stops the run with ``StoreError``, the run left resumable.
    ``command_started``: ``time.perf_counter()`` when the command began, for the manifest's
    ``command_wall_s``.
    """
    with run.writing("run"):
        return _execute(run, settings, source, observer, command_started)


def _execute(
    run: RunDir,
    settings: Settings,
    source: EpisodeSource,
    observer: RunObserver,
    command_started: float | None,
) -> RunResult:
    clock = time.perf_counter()
    base_wall, base_command = run.manifest.wall_s, run.manifest.command_wall_s
    base_rerun = run.manifest.episodes_rerun
    command_clock = clock if command_started is None else command_started
    try:
        records, todo = pending_indices(run, settings.run.runs)
        run.write_manifest(status="running", isolation=source.isolation, executor=source.kind)
    except OSError as exc:
        raise _store_error(run, exc) from None
    observer.started(settings.run.runs, list(records))
    finished: queue.Queue[EpisodeRecord | BaseException] = queue.Queue()
    cancel = threading.Event()
    written = clock

    def update_manifest(**status: str) -> None:
        nonlocal written
        written = time.perf_counter()
        run.write_manifest(
            counts=summarize(records),
            usage=total_usage(records, run.manifest.usage_of_dropped),
            wall_s=base_wall + written - clock,
            command_wall_s=base_command + written - command_clock,
            episodes_rerun=base_rerun + source.episodes_rerun,
            **status,
        )

    try:
        if todo:
            source.play(run, todo, finished, cancel)
        for _ in todo:
            item = _next(finished)
            if isinstance(item, BaseException):
                raise item
            observer.finished(item)
            records.append(item)  # kept in memory: re-reading the log each time is quadratic
            # The manifest's progress figures, at most once a second (each write re-counts every
            # record); episodes.jsonl, written as each episode ends, is what resume reads.
            if time.perf_counter() - written >= MANIFEST_PROGRESS_S:
                update_manifest()
        records.sort(key=lambda r: r.index)
        errors = any(r.outcome == "error" for r in records)
        update_manifest(status="completed_with_errors" if errors else "completed")
    except BaseException as exc:
        cancel.set()
        try:
            records = run.records()  # also what finished but was not taken from the queue yet
            update_manifest(status="interrupted")
        except OSError:
            pass  # the manifest keeps its last state; episodes.jsonl is what resume reads
        if isinstance(exc, OSError):
            raise _store_error(run, exc) from None
        raise
    return RunResult(run, records)


def _store_error(run: RunDir, exc: OSError) -> StoreError:
    kept = len(run.records())
    return StoreError(
        f"run {run.run_id} stopped: cannot write to {run.path}: {exc.strerror or exc}; "
        f"{kept} finished episodes kept",
        hint=f"free the space or fix the folder, then: leakbench run --resume {run.run_id}",
    )


def _next(finished: queue.Queue[EpisodeRecord | BaseException]) -> EpisodeRecord | BaseException:
    # A timed wait keeps the main thread responsive to Ctrl-C.
    while True:
        try:
            return finished.get(timeout=0.2)
        except queue.Empty:
            continue
