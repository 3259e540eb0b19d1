"""The environment for ``asyncio`` (SPEC §10): the same episodes as ``Environment``, each
blocking call (starting a sandbox, running a turn's code, grading) done on a thread pool, so
one event loop can keep hundreds of episodes in flight. CPU work is bounded as in a run, by
``run.sandbox_concurrency`` sandbox calls at once (default: one per core)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from leakbench.agents.base import ToolCall
from leakbench.env.environment import Environment, Episode, EpisodeView, Reward
from leakbench.env.episode import StepResult
from leakbench.sandbox import SandboxPool
from leakbench.settings import Settings

T = TypeVar("T")
DEFAULT_THREADS = 64  # calls waiting on a sandbox (I/O); the CPU is bounded by the slots


class AsyncEpisode(EpisodeView):
    """An ``Episode`` whose ``step`` and ``close`` are awaited."""

    def __init__(self, episode: Episode, run: Callable[..., Any]) -> None:
        self._episode = episode
        self._inner = episode._inner
        self._run = run
        self._busy: asyncio.Future[Any] | None = None  # the step running on its thread
        self.observation = episode.observation

    async def step(
        self, tool_calls: Sequence[ToolCall | Mapping[str, Any]], *, end: str | None = None
    ) -> StepResult:
        """See ``Episode.step``. Cancelling the awaiting task does not stop the step on its
        thread; ``close`` does (it ends the sandbox worker). Steps never overlap: a step waits
        for one still running."""
        await self.wait()
        self._busy = asyncio.ensure_future(
            self._run(functools.partial(self._episode.step, tool_calls, end=end))
        )
        return await asyncio.shield(self._busy)

    async def wait(self) -> None:
        """Wait for a step still running on its thread (its awaiting task cancelled); its
        outcome, a failure included, is then in ``done``, ``grade`` and ``reward``."""
        busy, self._busy = self._busy, None
        if busy is not None:
            await asyncio.wait([busy])
            if not busy.cancelled():
                busy.exception()  # retrieved: a step cut short by close fails, and that is fine

    async def close(self) -> None:
        """Release the sandbox; a step still running (its task cancelled) ends with it. Run off
        the environment's thread pool, which such steps may be filling."""
        await asyncio.to_thread(self._episode.close)
        await self.wait()

    async def __aenter__(self) -> AsyncEpisode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncEnvironment:
    """``Environment`` for ``asyncio``; the same arguments, plus ``max_threads`` (blocking
    calls in flight at once; more wait their turn). Use ``async with``, or ``await close()``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        preset: str = "default",
        reward: Reward = "pass",
        pool: SandboxPool | None = None,
        key: bytes | None = None,
        results_dir: Path | None = None,
        max_threads: int = DEFAULT_THREADS,
    ) -> None:
        self.env = Environment(
            settings, preset=preset, reward=reward, pool=pool, key=key, results_dir=results_dir
        )
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="leakbench")

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def reset(self, seed: int | None = None) -> AsyncEpisode:
        """See ``Environment.reset``."""
        episode = await self._run(functools.partial(self.env.reset, seed))
        return AsyncEpisode(episode, self._run)

    async def close(self) -> None:
        """Close every episode still open and the pool it made (off its busy thread pool)."""
        await asyncio.to_thread(self.env.close)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncEnvironment:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
