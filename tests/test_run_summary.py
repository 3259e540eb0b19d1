"""The run summary: one definition of each number (tokens, cost, wall time), errors loud."""

from __future__ import annotations

import json

from leakbench.cli.run import run_cost
from leakbench.settings import Settings


def _settings(model: str) -> Settings:
    return Settings().with_overrides({"agent.model": model})


def test_cost_is_zero_for_a_local_policy_known_with_a_price_and_unknown_without():
    usage = {"input_tokens": 1000.0, "output_tokens": 10.0, "cost_usd": 0.0012}
    assert run_cost(_settings("local/baseline"), usage) == 0.0
    assert run_cost(_settings("anthropic/claude-haiku-4-5"), usage) == 0.0012
    assert run_cost(_settings("anthropic/claude-unpriced-9"), usage) is None


def test_summary_numbers_are_named_whole_and_add_up_across_a_resume(cli, tmp_path):
    results = tmp_path / "results"
    args = ("--results-dir", results, "run", "--model", "local/baseline", "--json")
    first = cli(*args, "--runs", "1")
    assert first.exit_code == 0, first.output
    one = json.loads(first.stdout)
    assert set(one["tokens"]) == {
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    }
    assert all(isinstance(v, int) for v in one["tokens"].values())
    assert one["cost_usd"] == 0.0 and one["status"] == "completed"
    # this command's wall time covers the episodes; the run's totals cover every session
    assert one["command_wall_s"] >= one["run_wall_s"] > 0
    assert one["run_command_wall_s"] >= one["run_wall_s"]
    assert "pass_rate_low" in one and "pass_rate_ci95" not in one
    more = cli("--results-dir", results, "run", "--resume", one["run_id"], "--json")
    assert more.exit_code == 0, more.output
    two = json.loads(more.stdout)
    # nothing was left to run: the run's totals only grow, by this session's time
    assert two["run_wall_s"] >= one["run_wall_s"]
    assert two["run_command_wall_s"] >= one["run_command_wall_s"]


def test_what_errored_episodes_spent_still_counts_after_resume_drops_them(tmp_path):
    from leakbench.runner.run import pending_indices
    from leakbench.store.runs import EpisodeRecord, RunDir, total_usage

    settings = Settings().with_overrides({"agent.model": "local/baseline", "run.runs": 2})
    run = RunDir.create(tmp_path, settings, ["leakbench"])
    common = {"model": "local/baseline", "preset": "default", "metric": "holdout_regret"}
    stamps = {"started_at": "t", "finished_at": "t", "threshold": 0.04}
    run.append(
        EpisodeRecord(
            index=0, seed=0, outcome="error", passed=False, usage={"input_tokens": 700.0},
            **common, **stamps,
        )
    )  # fmt: skip
    run.append(
        EpisodeRecord(
            index=1, seed=1, outcome="failed", passed=False, usage={"input_tokens": 50.0},
            **common, **stamps,
        )
    )  # fmt: skip
    kept, todo = pending_indices(run, 2)
    assert todo == [0] and [r.index for r in kept] == [1]
    assert run.manifest.usage_of_dropped == {"input_tokens": 700.0}
    assert RunDir.open(run.path).manifest.usage_of_dropped == {"input_tokens": 700.0}
    assert total_usage(kept, run.manifest.usage_of_dropped) == {"input_tokens": 750.0}
