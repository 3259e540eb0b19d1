"""Sandbox benchmark: start-up, round trips and memory of episode workers (issue 3).

Run with ``python bench/sandbox.py``; prints a table of figures. Needs no network.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leakbench.sandbox import SandboxLimits, SandboxPool

IMPORTS = "import numpy, pandas, scipy, sklearn, sklearn.linear_model, sklearn.pipeline"
LR_FIT = (
    "from sklearn.linear_model import LogisticRegression\n"
    "X = pd.get_dummies(train_df.drop(columns='target'), dtype=float)\n"
    "m = LogisticRegression(max_iter=1000).fit(X, train_df['target'])"
)
GROUPBY = "train_df.groupby('cat0', observed=True)['num_0'].mean()"


def frames(n_train: int = 800, n_test: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = n_train + n_test
    frame = pd.DataFrame({f"num_{i}": rng.normal(size=n) for i in range(5)})
    frame["cat0"] = pd.Categorical(rng.integers(0, 4, n))
    frame["cat1"] = pd.Categorical(rng.integers(0, 3, n))
    frame["target"] = (frame["num_0"] + rng.normal(size=n) > 0).astype(int)
    return frame.iloc[:n_train], frame.iloc[n_train:].drop(columns="target")


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, private) of a process in kB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def mem_available_kb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f} ms (p90 {np.percentile(values, 90) * 1000:.2f})"


def main() -> None:
    train, test = frames()
    limits = SandboxLimits()
    rows: list[tuple[str, str]] = []
    cold = timed(lambda: subprocess.run([sys.executable, "-c", IMPORTS], check=True), 5)
    rows.append(("cold interpreter + imports (median of 5)", ms(cold)))
    with SandboxPool(isolation="reduced") as reduced:
        reduced_ready = timed(lambda: reduced.open(train, test, limits).close(), 30)
    pool = SandboxPool()
    start = time.perf_counter()
    pool.start()
    rows.append(("zygote start (once per process)", f"{time.perf_counter() - start:.2f} s"))
    with pool:
        rows.append(
            (
                "isolation",
                pool.isolation + (f" ({pool.isolation_note})" * bool(pool.isolation_note)),
            )
        )

        def open_close() -> None:
            pool.open(train, test, limits).close()

        ready = timed(open_close, 30)
        rows.append(("worker ready, open() (median of 30)", ms(ready)))

        def spaced_open_close() -> None:
            time.sleep(0.05)  # time for the next spare to be forked and warmed, as in a run
            start = time.perf_counter()
            pool.open(train, test, limits).close()
            spaced.append(time.perf_counter() - start)

        spaced: list[float] = []
        timed(spaced_open_close, 30)
        rows.append(("  opens 50 ms apart: the spare warm (median)", ms(spaced)))
        rows.append(("  same without namespaces/uid (reduced)", ms(reduced_ready)))
        rows.append(
            (
                "  speed-up vs cold start",
                f"{statistics.median(cold) / statistics.median(ready):.0f}x",
            )
        )
        closes = []
        for _ in range(20):
            session = pool.open(train, test, limits)
            start = time.perf_counter()
            session.close()
            closes.append(time.perf_counter() - start)
        rows.append(("close() (kill; namespaces torn down async)", ms(closes)))
        start = time.perf_counter()
        pool._reaper.drain(10)
        rows.append(
            (
                "  20 killed workers reaped + scratch removed",
                f"{(time.perf_counter() - start) * 1000:.1f} ms",
            )
        )

        with pool.open(train, test, limits) as session:
            rows.append(
                (
                    "round trip `pass` (median of 300)",
                    ms(timed(lambda: session.execute("pass"), 300)),
                )
            )
            rows.append(
                (
                    "round trip groupby mean (median of 300)",
                    ms(timed(lambda: session.execute(GROUPBY), 300)),
                )
            )
            pss, private = memory_kb(session.pid)
            rows.append(
                ("one idle worker: PSS / private", f"{pss / 1024:.1f} MB / {private / 1024:.1f} MB")
            )
            session.execute(LR_FIT)
            pss, private = memory_kb(session.pid)
            rows.append(
                (
                    "after LogisticRegression fit: PSS / private",
                    f"{pss / 1024:.1f} MB / {private / 1024:.1f} MB",
                )
            )

        before = mem_available_kb()
        sessions = [pool.open(train, test, limits) for _ in range(50)]
        time.sleep(0.2)
        idle = np.array([memory_kb(s.pid) for s in sessions]) / 1024
        drop_idle = (before - mem_available_kb()) / 50
        rows.append(
            (
                "50 idle workers: PSS / private per worker (mean)",
                f"{idle[:, 0].mean():.1f} MB / {idle[:, 1].mean():.1f} MB",
            )
        )
        rows.append(("  MemAvailable drop per idle worker", f"{drop_idle / 1024:.1f} MB"))
        for s in sessions:
            s.execute(LR_FIT)
        fitted = np.array([memory_kb(s.pid) for s in sessions]) / 1024
        drop_fit = (before - mem_available_kb()) / 50
        rows.append(
            (
                "50 workers after LR fit: PSS / private (mean)",
                f"{fitted[:, 0].mean():.1f} MB / {fitted[:, 1].mean():.1f} MB",
            )
        )
        rows.append(("  MemAvailable drop per fitted worker", f"{drop_fit / 1024:.1f} MB"))
        rows.append(("worker ready with 50 alive (median of 30)", ms(timed(open_close, 30))))
        rows.append(
            ("round trip `pass` with 50 alive", ms(timed(lambda: sessions[0].execute("pass"), 300)))
        )
        for s in sessions:
            s.close()

    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
