"""Two harnesses side by side, one in another pid namespace, sharing one TMPDIR that is not /tmp.

    python -m bench.neighbours [--runs 200] [--concurrency 2]

Starts ``leakbench run --model local/baseline`` twice at once, each into its own results folder,
with ``TMPDIR`` pointing both at the same fresh folder; the second runs under
``unshare --pid --fork --mount-proc`` (root), so neither can see the other's processes. Before
scratch ownership was an ``flock``, the second harness's pool deleted the first one's live
scratch folders (it could not see their owner pid), and episodes ended in ``error``.

Prints, per harness: its exit code, episodes, outcomes and errors, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(results: Path, runs: int, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "leakbench", "-q", "--results-dir", str(results), "run",
        "--model", "local/baseline", "--runs", str(runs), "-j", str(concurrency), "--json",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit("needs root and util-linux unshare (a pid namespace for the second harness)")
    with tempfile.TemporaryDirectory(prefix="leakbench-neighbours-") as work:
        shared_tmp = Path(work, "shared-tmp")
        shared_tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(shared_tmp)}
        env.pop("ANTHROPIC_API_KEY", None)
        started = time.perf_counter()
        procs = {
            "host namespace": subprocess.Popen(
                _command(Path(work, "a"), args.runs, args.concurrency),
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            ),
            "own pid namespace": subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount-proc",
                 *_command(Path(work, "b"), args.runs, args.concurrency)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            ),
        }  # fmt: skip
        print(f"TMPDIR shared by both: {shared_tmp}; {args.runs} episodes each")
        for name, proc in procs.items():
            out, err = proc.communicate()
            wall = time.perf_counter() - started
            try:
                summary = json.loads(out)
            except json.JSONDecodeError:
                print(f"{name:18s} exit {proc.returncode}: no summary\n{err.decode()[-2000:]}")
                continue
            outcomes = {k: summary.get(k, 0) for k in ("passed", "failed", "invalid", "error")}
            print(
                f"{name:18s} exit {proc.returncode}  episodes {summary['episodes']}  "
                f"{outcomes}  finished after {wall:.0f} s"
            )


if __name__ == "__main__":
    main()
