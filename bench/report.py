"""Benchmark `leakbench report` on 10,000 synthetic episodes (target: under 2 s).

Writes a few synthetic runs (manifest, settings.toml, episodes.jsonl; no episode folders) to a
temporary results dir, then times, in-process:

- the floor: reading every episodes.jsonl line with ``json.loads``;
- the summary report in each text format (load, group, aggregate, render);
- the per-episode report (``--episodes``) as CSV;
- optionally (``--cli``) ``leakbench report --format csv`` as a subprocess, start-up included.

Usage: python bench/report.py [--episodes 10000] [--runs 5] [--cli]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from leakbench.report import make_report
from leakbench.settings import Settings
from leakbench.store.files import write_atomic
from leakbench.store.runs import EpisodeRecord, RunManifest, utc_now

MODELS = ["local/baseline", "local/leaky", "anthropic/claude-haiku-4-5", "local/partial"]


def _episode(rng: np.random.Generator, index: int, model: str) -> dict:
    leaky = "leaky" in model or rng.random() < 0.1
    score = float(min(1.0, rng.normal(0.95, 0.01) + (0.05 if leaky else 0.0)))
    outcome = str(rng.choice(["passed", "failed", "invalid", "error"], p=[0.3, 0.6, 0.05, 0.05]))
    reasons = [] if outcome == "passed" else [f"auroc {score:.4f} < threshold 0.9471"]
    leaks = ["leak_future_signal", "leak_cat0_rate_full"] if leaky and outcome == "failed" else []
    reasons += [f"uses leak column {c}: shuffling it changes predictions" for c in leaks]
    stamp = utc_now()
    record = EpisodeRecord(
        index=index,
        seed=index,
        model=model,
        preset="default",
        outcome=outcome,  # type: ignore[arg-type]
        passed=outcome == "passed",
        metric="auroc",
        score=None if outcome in ("invalid", "error") else score,
        threshold=0.9471,
        metrics={
            "auroc": score,
            "brier": 0.1,
            "log_loss": 0.3,
            "ece": 0.05,
            "oracle_auroc": 0.94,
            "regret": 0.94 - score,
            "holdout_auroc": score - 0.01,
            "holdout_regret": 0.002,
        },
        reasons=reasons,
        leaks_detected=leaks,
        steps=int(rng.integers(2, 20)),
        tool_calls=3,
        submit_attempts=1,
        usage={
            "input_tokens": float(rng.integers(1000, 20000)),
            "output_tokens": float(rng.integers(100, 2000)),
            "cache_read_tokens": 500.0,
            "cache_write_tokens": 100.0,
            "cost_usd": float(rng.random() * 0.02),
        },
        wall_s=float(rng.random() * 10),
        started_at=stamp,
        finished_at=stamp,
    )
    return record.model_dump(mode="json")


def make_results(results: Path, episodes: int, runs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    settings = Settings().to_toml()
    per_run = episodes // runs
    for r in range(runs):
        model = MODELS[r % len(MODELS)]
        run_id = f"20260101T00000{r}Z_bench_{r:06x}"
        path = results / run_id
        lines = [json.dumps(_episode(rng, i, model), separators=(",", ":")) for i in range(per_run)]
        write_atomic(path / "episodes.jsonl", "\n".join(lines) + "\n")
        write_atomic(path / "settings.toml", settings)
        manifest = RunManifest(
            run_id=run_id,
            argv=["bench"],
            model=model,
            preset="default",
            status="completed",
            runs=per_run,
            base_seed=0,
            created_at=utc_now(),
            updated_at=utc_now(),
        )
        write_atomic(path / "manifest.json", manifest.model_dump_json(indent=2))


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="also time the CLI as a subprocess")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        make_results(results, args.episodes, args.runs)
        files = sorted(results.glob("*/episodes.jsonl"))

        def read_lines() -> None:
            for file in files:
                with open(file, encoding="utf-8") as handle:
                    for line in handle:
                        json.loads(line)

        floor = _best(read_lines)
        print(f"{args.episodes} episodes in {args.runs} runs")
        print(f"json.loads of every line:      {floor:.3f} s")
        for fmt in ("table", "markdown", "csv", "json"):
            t = _best(lambda fmt=fmt: make_report(results, fmt=fmt))
            print(f"report --format {fmt:<9} {t:8.3f} s  ({t / floor:.1f}x json.loads)")
        t = _best(lambda: make_report(results, fmt="csv", episodes=True))
        print(f"report --episodes --format csv {t:.3f} s  ({t / floor:.1f}x json.loads)")
        if args.cli:
            cmd = [sys.executable, "-m", "leakbench", "--results-dir", str(results), "report"]
            t = _best(
                lambda: subprocess.run([*cmd, "--format", "csv"], check=True, capture_output=True)
            )
            print(f"CLI (subprocess, start-up incl) {t:.3f} s")


if __name__ == "__main__":
    main()
