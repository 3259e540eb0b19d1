"""Episodes/s on a Ray cluster against the same run on this machine (the Ray overhead).

    python -m bench.cluster [--episodes N] [--rounds R]

Needs the ``ray`` extra. Prints, in one run on this machine:
- episodes/s of the same local/baseline run (same key, same seeds) done locally with two sandbox
  slots, and on a two-node Ray cluster started here (``ray.cluster_utils.Cluster``, one CPU and
  one sandbox slot per node): the same total CPUs, so the ratio is what Ray costs. Start-up
  (joining the cluster, one actor and zygote per node) is timed apart, as it is paid once per run;
- what one episode costs each side of the boundary: a node's episodes/s, the driver's CPU per
  episode (dispatching, receiving, writing the files) and the bytes a node sends back per
  episode; and from them the throughput projected for N nodes, with the figure that limits it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from leakbench.runner.run import Runner
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.store.runs import RunDir
from leakbench.task.keys import new_key


def _settings(results: str, episodes: int, **flags: object) -> Settings:
    given = {
        "agent.model": "local/baseline",
        "run.runs": episodes,
        "run.concurrency": 4,
        "run.results_dir": results,
        **flags,
    }
    return resolve(SettingsSources(preset="default", environ={}, flags=given))


def timed(settings: Settings, key: bytes) -> dict[str, float]:
    """One run: start-up seconds, episodes/s of the episodes alone, the driver's CPU per
    episode, and the bytes written per episode."""
    with tempfile.TemporaryDirectory() as results:
        run = RunDir.create(Path(results), settings, ["bench"], key=key)
        clock = time.perf_counter()
        with Runner(settings, resume=run) as runner:
            runner.start()
            started = time.perf_counter()
            cpu = time.process_time()
            result = runner.execute()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
        bad = [r for r in result.records if r.outcome not in ("passed", "failed")]
        assert not bad, bad[0]
        n = len(result.records)
        written = sum(p.stat().st_size for p in (run.path / "episodes").rglob("*") if p.is_file())
    return {
        "startup_s": started - clock,
        "rate": n / elapsed,
        "driver_cpu_ms": 1000 * cpu / n,
        "bytes": written / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="lb-ray-")
    clock = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp},
    )
    cluster.add_node(num_cpus=1, temp_dir=temp)
    cluster.wait_for_nodes()
    cluster_s = time.perf_counter() - clock
    key = new_key()
    try:
        with tempfile.TemporaryDirectory() as results:
            local = _settings(results, args.episodes, **{"run.sandbox_concurrency": 2})
            on_ray = _settings(
                results,
                args.episodes,
                **{
                    "run.executor": "ray",
                    "run.ray_address": cluster.address,
                    "run.sandbox_concurrency": 1,
                },
            )
            timed(local, key)  # warm-up: imports, page cache
            rows: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
            for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits both
                rows["local"].append(timed(local, key))
                rows["ray"].append(timed(on_ray, key))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in rows[kind])

    print(f"{args.episodes} episodes of local/baseline, {args.rounds} interleaved rounds, medians")
    print(f"two-node cluster started in {cluster_s:.1f} s (once per cluster, not per run)")
    print(f"{'':34}{'local':>10}{'ray, 2 nodes':>14}")
    for label, field, digits in (
        ("start-up per run (s)", "startup_s", 2),
        ("episodes/s", "rate", 2),
        ("driver CPU per episode (ms)", "driver_cpu_ms", 1),
    ):
        print(f"{label:34}{med('local', field):>10.{digits}f}{med('ray', field):>14.{digits}f}")
    ratios = [
        lo["rate"] / ra["rate"] - 1 for lo, ra in zip(rows["local"], rows["ray"], strict=True)
    ]
    overhead = statistics.median(ratios)
    print(
        f"Ray overhead: {overhead:+.1%} (local rate / Ray rate - 1; per round: "
        + ", ".join(f"{r:+.1%}" for r in ratios)
        + "; target <= 15%)"
    )

    per_node = med("ray", "rate") / 2
    driver_s = med("ray", "driver_cpu_ms") / 1000
    sent = med("ray", "bytes")
    driver_cap = 1 / driver_s
    print(
        f"\nper episode: a node plays {per_node:.2f} episodes/s per CPU; the driver spends "
        f"{1000 * driver_s:.1f} ms of CPU on it; a node sends back {sent / 1024:.0f} KiB"
    )
    print(f"{'nodes (1 CPU each)':>20}{'episodes/s':>12}{'episodes/hour':>15}  limited by")
    for nodes in (1, 2, 8, 32, 128, 512):
        rate = min(nodes * per_node, driver_cap)
        limit = "the nodes' CPUs" if nodes * per_node < driver_cap else "the driver's CPU"
        print(f"{nodes:>20}{rate:>12.1f}{rate * 3600:>15,.0f}  {limit}")
    print(f"(the driver's network: {sent * driver_cap / 2**20:.0f} MiB/s at its cap)")


if __name__ == "__main__":
    main()
