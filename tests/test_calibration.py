"""`leakbench calibrate`: the quantile rule, the Wilson interval, the band, runs needed, --write."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leakbench.calibration import (
    calibrate,
    interval_in_band,
    runs_needed,
    threshold_at,
    would_pass,
)
from leakbench.settings import Settings
from leakbench.stats import wilson_interval
from leakbench.store.files import write_atomic
from leakbench.store.runs import EpisodeRecord, RunManifest, utc_now


def record(index: int, score: float | None, **changes: Any) -> EpisodeRecord:
    """A graded episode as the runner writes it (auroc, threshold 0.9 unless changed)."""
    metric = changes.pop("metric", "auroc")
    lower = changes.pop("lower_is_better", False)
    threshold = changes.pop("threshold", 0.9)
    outcome = changes.pop("outcome", None)
    reasons = list(changes.pop("reasons", []))
    gates_passed = not reasons and not changes.get("leaks_detected") and score is not None
    if outcome is None:
        ok = score is not None and (score <= threshold if lower else score >= threshold)
        if not ok and score is not None:
            op = ">" if lower else "<"
            reasons.append(f"{metric} {score:.4f} {op} threshold {threshold:.4f}")
        outcome = "passed" if ok and not reasons else "failed"
    stamp = utc_now()
    data: dict[str, Any] = {
        "index": index,
        "seed": index,
        "model": "local/baseline",
        "preset": "default",
        "outcome": outcome,
        "passed": outcome == "passed",
        "metric": metric,
        "score": score,
        "threshold": threshold,
        "lower_is_better": lower,
        "metrics": {"auroc": score, "regret": 0.01} if score is not None else {},
        "reasons": reasons,
        "gates_passed": gates_passed,
        "steps": 2,
        "usage": {"input_tokens": 100.0, "output_tokens": 10.0, "cost_usd": 0.001},
        "wall_s": 0.5,
        "started_at": stamp,
        "finished_at": stamp,
    }
    data.update(changes)
    return EpisodeRecord.model_validate(data)


def make_run(
    results: Path, run_id: str, records: list[EpisodeRecord], model: str = "local/baseline"
) -> Path:
    """A run directory with manifest, settings and episodes.jsonl, without running anything."""
    path = Path(results) / run_id
    counts = {o: sum(r.outcome == o for r in records) for o in ("passed", "failed", "error")}
    manifest = RunManifest(
        run_id=run_id,
        argv=["leakbench", "run"],
        model=model,
        preset=records[0].preset if records else "default",
        status="completed",
        runs=len(records),
        base_seed=0,
        counts={"done": len(records), **counts},
        created_at=utc_now(),
        updated_at=utc_now(),
        wall_s=1.5,
    )
    write_atomic(path / "manifest.json", manifest.model_dump_json(indent=2))
    write_atomic(path / "settings.toml", Settings().to_toml())
    lines = "".join(r.model_copy(update={"model": model}).model_dump_json() + "\n" for r in records)
    write_atomic(path / "episodes.jsonl", lines)
    return path


def test_wilson_interval_matches_the_reference_value():
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(0.1078, abs=5e-5) and high == pytest.approx(0.6032, abs=5e-5)


def test_threshold_is_an_observed_score_on_the_documented_side():
    scores = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99]
    shuffled = list(np.random.default_rng(1).permutation(scores))
    # higher is better: s[ceil(0.85 * 9)] = s[8]; two of ten are >= it
    assert threshold_at(shuffled, 0.85, lower_is_better=False) == 0.98
    # lower is better: s[floor(0.15 * 9)] = s[1]; two of ten are <= it
    assert threshold_at(shuffled, 0.85, lower_is_better=True) == 0.91
    assert threshold_at(shuffled, 0.80, lower_is_better=False) == 0.98  # ceil(7.2) = 8
    assert threshold_at(shuffled, 0.70, lower_is_better=False) == 0.97  # ceil(6.3) = 7


def test_runs_needed_is_the_smallest_n_that_fits_the_band():
    band = (0.10, 0.40)
    for rate in (0.15, 0.2, 0.25, 0.3, 0.35):
        n = runs_needed(rate, band)
        assert n is not None
        brute = next(k for k in range(1, 5000) if interval_in_band(_at(rate, k), band))
        assert n == brute, rate
        assert not any(interval_in_band(_at(rate, k), band) for k in range(1, n))
    assert runs_needed(0.2, band) == 35  # 20% fits [10%, 40%] from 35 episodes on
    for outside in (0.0, 0.05, 0.10, 0.40, 0.5, None):
        assert runs_needed(outside, band) is None


def _at(rate: float, n: int) -> tuple[float, float]:
    return wilson_interval(rate * n, n)  # type: ignore[arg-type]


def test_band_verdict():
    assert interval_in_band((0.12, 0.38), (0.10, 0.40))
    assert not interval_in_band(wilson_interval(3, 10), (0.10, 0.40))
    assert interval_in_band(wilson_interval(25, 100), (0.10, 0.40))


def test_leaks_and_other_reasons_still_fail_under_a_new_threshold():
    leaky = record(0, 1.0, reasons=["uses leak column leak_x: ..."], leaks_detected=["leak_x"])
    ceiling = record(1, 0.99, reasons=["AUROC 0.9900 is above the Bayes ceiling: ..."])
    low = record(2, 0.85)
    assert low.reasons == ["auroc 0.8500 < threshold 0.9000"] and low.gates_passed
    assert not ceiling.gates_passed and not leaky.gates_passed
    assert would_pass(low, 0.80) and not would_pass(low, 0.86)
    assert not would_pass(leaky, 0.5) and not would_pass(ceiling, 0.5)


def test_errors_invalid_and_no_submission_are_counted_not_scored():
    scores = [0.80 + 0.01 * i for i in range(10)]
    records = [record(i, s) for i, s in enumerate(scores)]
    records += [
        record(10, None, outcome="error", error="API"),
        record(11, None, outcome="invalid", reasons=["NaN"]),
        record(12, None, outcome="no_submission", reasons=["end of turn"]),
        record(13, 0.99, reasons=["uses leak column leak_x"], leaks_detected=["leak_x"]),
    ]
    c = calibrate([("r1", records)], 0.85, (0.10, 0.40))
    assert (c.episodes, c.errors, c.invalid, c.no_submission) == (14, 1, 1, 1)
    assert c.used == 13 and c.scored == 11  # the leaky one has a score: it is in the sample
    assert c.threshold == pytest.approx(0.89)  # sorted[ceil(0.85 * 10)] = sorted[9]
    assert c.passed == 1  # 0.89 passes; 0.99 is a leak
    assert c.pass_rate == pytest.approx(1 / 13)
    assert c.interval == wilson_interval(1, 13)


def test_lower_is_better_metric():
    values = [0.001 * i for i in range(20)]
    records = [
        record(i, v, metric="holdout_regret", lower_is_better=True, threshold=0.01)
        for i, v in enumerate(values)
    ]
    assert records[15].gates_passed  # failed on "holdout_regret 0.0150 > threshold 0.0100" alone
    c = calibrate([("r", records)], 0.80, (0.10, 0.40))
    assert c.threshold == pytest.approx(0.003)  # sorted[floor(0.2 * 19)] = sorted[3]
    assert c.passed == 4 and c.pass_rate == pytest.approx(0.2)
    assert c.runs_needed == 35 and not c.in_band


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    make_run(results, "r1", [record(i, 0.90 + 0.004 * i) for i in range(25)])
    make_run(results, "r2", [record(i, 0.5) for i in range(3)], model="local/leaky")
    return results


def test_cli_reads_runs_of_the_model_and_prints_json(cli, tmp_path):
    results = _results(tmp_path)
    result = cli("--results-dir", results, "calibrate", "--model", "local/baseline", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["runs"] == ["r1"] and data["used"] == 25 and data["metric"] == "auroc"
    # ceil(0.85 * 24) = 21 -> 0.984; 4 of 25 pass
    assert data["threshold"] == pytest.approx(0.984) and data["passed"] == 4
    low, high = wilson_interval(4, 25)
    assert (data["pass_rate_low"], data["pass_rate_high"]) == pytest.approx((low, high))
    assert data["runs_needed"] == runs_needed(4 / 25, (0.10, 0.40))
    assert "warning" not in result.stderr
    table = cli("--results-dir", results, "calibrate", "--quantile", "0.5")
    assert table.exit_code == 0 and "implied pass rate" in table.stdout
    assert float(table.stdout.strip().splitlines()[-1]) == pytest.approx(0.948)


def test_few_episodes_warn_with_the_number_needed(cli, tmp_path):
    results = tmp_path / "results"
    make_run(results, "small", [record(i, 0.90 + 0.01 * i) for i in range(10)])
    result = cli("--results-dir", results, "calibrate", "--quantile", "0.8")
    assert result.exit_code == 0, result.output
    assert "only 10 usable episodes" in result.stderr
    assert "about 35 episodes" in result.stderr  # 2 of 10 pass -> 20%


def test_mixed_metrics_are_refused(cli, tmp_path):
    results = tmp_path / "results"
    make_run(results, "a", [record(i, 0.9) for i in range(3)])
    regret = [record(i, 0.01, metric="holdout_regret", lower_is_better=True) for i in range(3)]
    make_run(results, "b", regret)
    result = cli("--results-dir", results, "calibrate", "--run", "a", "--run", "b")
    assert result.exit_code == 2
    assert "different metrics" in result.stderr and "holdout_regret: b" in result.stderr
    assert result.stderr.count("\n") == 1


def test_no_runs_of_the_model_is_a_clear_error(cli, tmp_path):
    result = cli("--results-dir", tmp_path / "none", "calibrate", "--model", "local/leaky")
    assert result.exit_code == 1 and "no runs of local/leaky" in result.stderr


def test_write_round_trips_through_config(cli, tmp_path):
    results = _results(tmp_path)
    out = tmp_path / "calibrated.toml"
    result = cli("--results-dir", results, "calibrate", "--run", "r1", "--write", out, "--json")
    assert result.exit_code == 0, result.output
    threshold = json.loads(result.stdout)["threshold"]
    shown = cli("--config", out, "settings")
    assert shown.exit_code == 0, shown.output
    assert f"threshold = {threshold!r}" in shown.stdout
    assert 'source_runs = [\n    "r1",\n]' in shown.stdout and "quantile = 0.85" in shown.stdout
    # and the settings really load with it, record included
    from leakbench.settings import SettingsSources, resolve

    settings = resolve(SettingsSources(config_files=[out], environ={}))
    assert settings.grading.threshold == threshold
    assert settings.calibration is not None and settings.calibration.episodes == 25
    assert math.isclose(settings.calibration.implied_pass_rate or 0, 4 / 25)
    assert "[calibration]" in settings.to_toml()


def test_runs_first_then_calibrates_on_that_run(cli, tmp_path):
    results = tmp_path / "results"
    args = ["--results-dir", results, "calibrate", "--model", "local/baseline", "--runs", "4"]
    result = cli(*args, "--quantile", "0.80", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (run,) = [p.name for p in results.iterdir()]
    assert data["runs"] == [run] and data["used"] == 4 and data["models"] == ["local/baseline"]
    assert data["passed"] == 1  # ceil(0.8 * 3) = 3: only the best of four passes
    assert "only 4 usable episodes" in result.stderr
    bad = cli(*args, "--run", run)
    assert bad.exit_code == 2 and "leave out --run" in bad.stderr
