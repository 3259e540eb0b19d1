"""Start-up: the wall time of a one-episode local run against importing scikit-learn.

    python -m bench.startup [--repeat 5]

Alternates, ``--repeat`` times each, in fresh processes:
- ``python -c "import sklearn"`` (the yardstick: what any Python tool that fits a model pays);
- ``leakbench run --model local/baseline --runs 1`` into a throwaway results folder;
- ``leakbench --help`` (the command line alone).
Prints the median wall time of each and the run's ratio to the yardstick. The run imports only
what a local policy needs (not the ``anthropic`` SDK) and starts the sandbox's zygote before it
imports the task generator, so the two processes' imports overlap.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"import sklearn": [], "leakbench --help": [], "run": []}
    with tempfile.TemporaryDirectory(prefix="leakbench-startup-") as results:
        run = [sys.executable, "-m", "leakbench", "-q", "--results-dir", results, "run"]
        run += ["--model", "local/baseline", "--runs", "1"]
        for _ in range(args.repeat):
            times["import sklearn"].append(_timed([sys.executable, "-c", "import sklearn"]))
            times["leakbench --help"].append(_timed([sys.executable, "-m", "leakbench", "--help"]))
            times["run"].append(_timed(run))
    yardstick = statistics.median(times["import sklearn"])
    print(f"median wall time over {args.repeat} runs each (fresh processes)")
    for name, values in times.items():
        median = statistics.median(values)
        label = "run --model local/baseline --runs 1" if name == "run" else name
        print(f"  {label:38s} {median:6.2f} s   x{median / yardstick:.2f} of import sklearn")


if __name__ == "__main__":
    main()
