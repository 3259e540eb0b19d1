"""The environment API (`leakbench.env`) against the work it wraps and against `leakbench run`.

    python -m bench.env [--episodes N] [--concurrent N] [--steps N]

Prints, in one run on this machine (the zygote already warm in every figure):
- step overhead: a step of one trivial tool call (`1`) against the same call made directly on a
  sandbox session, median of --steps each; the difference is what the environment adds per step
  (target ≤ 1 ms), sync and awaited through `AsyncEnvironment`;
- reset latency: median `reset()` (instance drawn, sandbox started, prompts ready), against its
  two parts done directly (target ≤ 30 ms);
- episodes/s of local/baseline driven through `AsyncEnvironment` from one event loop against
  `leakbench run` (the core `Runner`) with the same policy and episodes at concurrency 2;
- --concurrent episodes (default 256) in flight at once from one event loop: all must end graded,
  none in error; wall time, episodes/s and peak live sandbox workers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from leakbench.agents.local import POLICIES
from leakbench.env import AsyncEnvironment, Environment
from leakbench.runner.run import run
from leakbench.sandbox import SandboxLimits, SandboxPool
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.task.generate import make_instance
from leakbench.task.keys import new_key

TRIVIAL = [{"id": "c", "name": "python_expression", "input": {"expression": "1"}}]


def _calls(turn: int) -> list[dict]:
    codes = POLICIES["baseline"].turns[turn]
    return [
        {"id": f"t{turn}_{i}", "name": "python_expression", "input": {"expression": c}}
        for i, c in enumerate(codes)
    ]


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def step_overhead(settings: Settings, pool: SandboxPool, n: int) -> None:
    limits = SandboxLimits.from_settings(settings)
    instance = make_instance(settings.task, 0, key=new_key())
    direct: list[float] = []
    with pool.open(instance.train, instance.test, limits) as session:
        for _ in range(n):
            start = time.perf_counter()
            session.execute("1")
            direct.append(time.perf_counter() - start)
    big = settings.with_overrides({"agent.max_steps": n + 1})
    stepped: list[float] = []
    with Environment(big, pool=pool) as env, env.reset(0) as episode:
        for _ in range(n):
            start = time.perf_counter()
            episode.step(TRIVIAL)
            stepped.append(time.perf_counter() - start)

    async def awaited() -> list[float]:
        times: list[float] = []
        async with AsyncEnvironment(big, pool=pool) as env:
            episode = await env.reset(0)
            async with episode:
                for _ in range(n):
                    start = time.perf_counter()
                    await episode.step(TRIVIAL)
                    times.append(time.perf_counter() - start)
        return times

    stepped_async = asyncio.run(awaited())
    base = _median_ms(direct)
    print(f"step of one trivial call, median of {n}:")
    print(f"  direct session.execute      {base:7.3f} ms")
    for label, times in (("Environment.step", stepped), ("AsyncEnvironment.step", stepped_async)):
        ms = _median_ms(times)
        print(f"  {label:<27} {ms:7.3f} ms  (+{ms - base:.3f} ms)")


def reset_latency(settings: Settings, pool: SandboxPool, n: int) -> None:
    limits = SandboxLimits.from_settings(settings)
    key = new_key()
    draw: list[float] = []
    spawn: list[float] = []
    for seed in range(n):
        start = time.perf_counter()
        instance = make_instance(settings.task, seed, key=key)
        draw.append(time.perf_counter() - start)
        start = time.perf_counter()
        pool.open(instance.train, instance.test, limits).close()
        spawn.append(time.perf_counter() - start)
    resets: list[float] = []
    with Environment(settings, pool=pool, key=key) as env:
        for seed in range(n):
            start = time.perf_counter()
            episode = env.reset(seed)
            resets.append(time.perf_counter() - start)
            episode.close()
    print(f"reset, median of {n}:")
    print(f"  make_instance               {_median_ms(draw):7.2f} ms")
    print(f"  sandbox open (worker ready) {_median_ms(spawn):7.2f} ms")
    print(f"  Environment.reset           {_median_ms(resets):7.2f} ms")


async def _play_all(env: AsyncEnvironment, seeds: range, live: list[int]) -> list:
    async def one(seed: int):
        episode = await env.reset(seed)
        live[0] += 1
        live[1] = max(live[1], live[0])
        try:
            for turn in range(len(POLICIES["baseline"].turns)):
                result = await episode.step(_calls(turn))
                if result.done:
                    return result
            return await episode.step([], end="out of turns")
        finally:
            live[0] -= 1
            await episode.close()

    return await asyncio.gather(*(one(seed) for seed in seeds))


def throughput(settings: Settings, pool: SandboxPool, episodes: int) -> None:
    with tempfile.TemporaryDirectory() as results:
        local = settings.with_overrides(
            {"run.runs": episodes, "run.concurrency": 2, "run.results_dir": results}
        )
        start = time.perf_counter()
        done = run(local, pool=pool)
        run_eps = episodes / (time.perf_counter() - start)
    assert all(r.outcome in ("passed", "failed") for r in done.records)

    async def main() -> float:
        async with AsyncEnvironment(settings, pool=pool) as env:
            start = time.perf_counter()
            results = await _play_all(env, range(episodes), [0, 0])
            assert all(r.grade.outcome in ("passed", "failed") for r in results)
            return episodes / (time.perf_counter() - start)

    env_eps = asyncio.run(main())
    print(f"local/baseline, {episodes} episodes:")
    print(f"  leakbench run (Runner), concurrency 2   {run_eps:6.2f} episodes/s")
    print(
        f"  AsyncEnvironment, one event loop        {env_eps:6.2f} episodes/s"
        f"  (x{env_eps / run_eps:.2f})"
    )


def concurrent(settings: Settings, pool: SandboxPool, n: int) -> None:
    async def main() -> tuple[list, float, int]:
        live = [0, 0]
        async with AsyncEnvironment(settings, pool=pool, max_threads=n) as env:
            start = time.perf_counter()
            results = await _play_all(env, range(n), live)
            return results, time.perf_counter() - start, live[1]

    results, wall, peak = asyncio.run(main())
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.grade.outcome] = outcomes.get(result.grade.outcome, 0) + 1
    print(f"{n} episodes in flight from one event loop:")
    print(f"  outcomes {outcomes}; peak episodes open at once {peak}")
    print(f"  wall {wall:.1f} s, {n / wall:.2f} episodes/s")
    assert sum(outcomes.get(k, 0) for k in ("passed", "failed")) == n, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    settings = resolve(SettingsSources(preset=args.preset, environ={}))
    with SandboxPool() as pool:
        pool.start()
        with Environment(settings, pool=pool) as env:
            env.reset(0).close()  # warm: the first worker, the first instance
        print(f"isolation: {pool.isolation}; preset {args.preset}")
        step_overhead(settings, pool, args.steps)
        reset_latency(settings, pool, 30)
        throughput(settings, pool, args.episodes)
        if args.concurrent:
            concurrent(settings, pool, args.concurrent)


if __name__ == "__main__":
    main()
