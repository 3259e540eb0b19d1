"""A run's episodes on threads of this process, sandboxes from one pool (``run.executor =
"local"``); ``leakbench.runner.cluster`` plays them on a Ray cluster's nodes instead."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from leakbench.agents.base import Agent
from leakbench.env.episode import sandbox_slots
from leakbench.runner.episode import Episode, EpisodeCancelled, EpisodeEnv
from leakbench.sandbox import SandboxPool
from leakbench.settings import Settings
from leakbench.store.runs import EpisodeRecord, RunDir


class LocalEpisodes:
    """Episodes on threads of this process, sandboxes from ``pool``."""

    kind = "local"
    episodes_rerun = 0

    def __init__(
        self,
        settings: Settings,
        make_agent: Callable[[], Agent],
        prompts: tuple[str, str],
        pool: SandboxPool,
        on_event: Callable[[int, str, str], None] | None = None,
    ) -> None:
        self.settings, self.make_agent, self.prompts = settings, make_agent, prompts
        self.pool, self.on_event = pool, on_event
        self.isolation = pool.isolation

    def play(
        self,
        run: RunDir,
        todo: list[int],
        finished: queue.Queue[EpisodeRecord | BaseException],
        cancel: threading.Event,
    ) -> None:
        env = EpisodeEnv(
            settings=self.settings,
            pool=self.pool,
            make_agent=self.make_agent,
            prompts=self.prompts,
            sandbox_slots=sandbox_slots(self.settings),
            instance_key=run.instance_key(),
            on_event=self.on_event,
            cancel=cancel,
        )
        tasks: queue.Queue[int] = queue.Queue()
        for index in todo:
            tasks.put(index)

        def worker() -> None:
            while not cancel.is_set():
                try:
                    index = tasks.get_nowait()
                except queue.Empty:
                    return
                try:
                    record = Episode(env, index, run.fresh_episode_dir(index)).run()
                    if cancel.is_set() and record.outcome == "error":
                        return  # cut short by the interruption (its sandbox closed): resume runs it
                    run.append(record)
                except EpisodeCancelled:
                    return
                except BaseException as exc:  # never lose a worker silently
                    if not cancel.is_set():
                        finished.put(exc)
                    return
                finished.put(record)

        # Daemon threads: an interrupted run exits at once, without waiting on a model reply.
        for i in range(min(self.settings.run.concurrency, len(todo))):
            threading.Thread(target=worker, name=f"episode-{i}", daemon=True).start()
