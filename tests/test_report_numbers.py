"""The numbers `leakbench report` shows: Wilson intervals from scipy, groups per threshold, run
status and errors, one name for the interval, whole token counts, plurals, prefix selection."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest
from scipy.stats import binomtest

from leakbench.errors import UsageError
from leakbench.report import group_runs, load_runs, summary_rows
from leakbench.report.render import plural
from leakbench.stats import wilson_interval, wilson_interval_at_rate
from leakbench.store.runs import RunDir, find_run
from tests.test_calibration import make_run, record

# -- the interval ---------------------------------------------------------------------------


def test_wilson_interval_is_scipy_clamped_to_the_unit_interval():
    for n in (1, 2, 7, 30, 200):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert (low, high) == (max(0.0, ci.low), min(1.0, ci.high))
            assert 0.0 <= low <= k / n <= high <= 1.0
            assert type(low) is float and type(high) is float
        assert wilson_interval(0, n)[0] == 0.0  # not 2.8e-17 as the hand-written formula gave
        assert wilson_interval(n, n)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(3, 10, confidence=0.9)
    assert (low, high) == pytest.approx((0.1269, 0.5583), abs=5e-5)  # worked by hand


def test_interval_at_a_rate_agrees_with_scipy_where_the_count_is_whole():
    for k, n in ((1, 4), (3, 10), (7, 35), (50, 200)):
        assert wilson_interval_at_rate(k / n, n) == pytest.approx(wilson_interval(k, n), abs=1e-12)
        assert wilson_interval(float(k), n) == wilson_interval(k, n)
    # calibration's "what if the rate held at n episodes" has fractional counts
    low, high = wilson_interval(0.25 * 7, 7)
    assert wilson_interval(1, 7)[0] < low < wilson_interval(2, 7)[0]
    assert wilson_interval(1, 7)[1] < high < wilson_interval(2, 7)[1]


# -- 0% and 100% groups in every file format ---------------------------------------------------


@pytest.fixture
def extremes(tmp_path) -> Path:
    """One group that never passes, one that always passes."""
    results = tmp_path / "results"
    make_run(results, "none", [record(i, 0.5) for i in range(5)], model="local/none")
    make_run(results, "all", [record(i, 0.99) for i in range(4)], model="local/all")
    return results


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _summary_table(cli, results: Path) -> dict[str, list[str]]:
    """The terminal summary (a column per group) as {row label: [cell per group]}."""
    out: dict[str, list[str]] = {}
    for line in _ok(cli("--results-dir", results, "report")).stdout.splitlines():
        if line.startswith("│"):
            label, *values = (cell.strip() for cell in line.strip("│").split("│"))
            out[label] = values
    return out


def test_zero_and_full_pass_rates_in_json_and_csv(cli, extremes):
    rows = json.loads(_ok(cli("--results-dir", extremes, "report", "--json")).stdout)
    by_model = {r["model"]: r for r in rows}
    none, full = by_model["local/none"], by_model["local/all"]
    assert (none["pass_rate"], none["pass_rate_low"]) == (0.0, 0.0)
    assert none["pass_rate_high"] == pytest.approx(wilson_interval(0, 5)[1])
    assert (full["pass_rate"], full["pass_rate_high"]) == (1.0, 1.0)
    assert full["pass_rate_low"] == pytest.approx(wilson_interval(4, 4)[0])
    text = _ok(cli("--results-dir", extremes, "report", "--format", "csv")).stdout
    from_csv = {r["model"]: r for r in csv.DictReader(io.StringIO(text))}
    for model, row in by_model.items():
        for key in ("pass_rate", "pass_rate_low", "pass_rate_high"):
            assert float(from_csv[model][key]) == row[key]
    assert "e-17" not in text


def test_zero_and_full_pass_rates_in_html(cli, extremes, tmp_path):
    out = tmp_path / "report.html"
    result = _ok(cli("--results-dir", extremes, "report", "--format", "html", "--out", out))
    assert result.stderr.startswith("wrote") and "Traceback" not in result.output
    text = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    # scores and pass rates; no probabilities to draw, every episode 2 steps, local: free
    assert len(images) == 2
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "0.0% [0.0%, " in text and ", 100.0%]" in text
    assert "2 runs, 2 groups" in text


def test_html_says_one_run_one_group(cli, tmp_path):
    results = tmp_path / "results"
    make_run(results, "only", [record(0, 0.95), record(1, 0.5)])
    out = tmp_path / "one.html"
    _ok(cli("--results-dir", results, "report", "--format", "html", "--out", out))
    text = out.read_text()
    assert "1 run, 1 group;" in text and "1 groups" not in text and "1 runs" not in text


def test_plural():
    assert [plural(n, "group") for n in (0, 1, 2)] == ["0 groups", "1 group", "2 groups"]


# -- grouping by metric and threshold ----------------------------------------------------------


def test_runs_at_different_thresholds_are_never_pooled(cli, tmp_path):
    results = tmp_path / "results"
    make_run(results, "a", [record(i, s) for i, s in enumerate((0.92, 0.95, 0.85))])
    make_run(results, "b", [record(i, s, threshold=0.94) for i, s in enumerate((0.92, 0.95))])
    # re-graded in part: one run, two thresholds, and a third grading metric
    make_run(
        results,
        "c",
        [
            record(0, 0.93),
            record(1, 0.96, threshold=0.94),
            record(2, 0.02, metric="regret", threshold=0.05, lower_is_better=True),
        ],
    )
    groups = group_runs(load_runs(results))
    keys = [(g.metric, g.threshold, [r.run_id for r in g.runs]) for g in groups]
    assert keys == [
        ("auroc", 0.9, ["a", "c"]),
        ("auroc", 0.94, ["b", "c"]),
        ("regret", 0.05, ["c"]),
    ]
    rows = summary_rows(groups)
    assert [(r["threshold"], r["passed"], r["graded"]) for r in rows] == [
        (0.9, 3, 4),
        (0.94, 2, 3),
        (0.05, 1, 1),
    ]
    assert [r["pass_rate"] for r in rows] == [3 / 4, 2 / 3, 1.0]
    table = _summary_table(cli, results)
    assert table["threshold"] == ["0.9000", "0.9400", "0.0500"]
    assert table["metric"] == ["auroc", "auroc", "regret"]
    assert table["pass rate [95% CI]"][0].startswith("75.0% [")
    markdown = _ok(cli("--results-dir", results, "report", "--format", "markdown")).stdout
    assert "| metric | threshold |" in markdown and "| 0.9400 |" in markdown


# -- run status and errors ---------------------------------------------------------------------


def test_run_status_and_errors_are_shown(cli, tmp_path):
    results = tmp_path / "results"
    make_run(results, "done", [record(0, 0.95), record(1, None, outcome="error", error="API")])
    stopped = make_run(results, "stopped", [record(0, 0.5)])
    RunDir.open(stopped).write_manifest(status="interrupted")
    make_run(results, "other", [record(0, 0.95)], model="local/leaky")
    RunDir.open(results / "other").write_manifest(status="running")

    rows = json.loads(_ok(cli("--results-dir", results, "report", "--json")).stdout)
    assert [(r["model"], r["run_status"]) for r in rows] == [
        ("local/baseline", "1 completed, 1 interrupted"),
        ("local/leaky", "running"),
    ]
    base = rows[0]
    assert (base["episodes"], base["error"], base["graded"], base["passed"]) == (3, 1, 2, 1)
    assert base["pass_rate"] == 0.5

    table = _summary_table(cli, results)
    assert table["run status"] == ["1 completed, 1 interrupted", "running"]
    assert table["errors"] == ["1", "0"]
    assert table["passed"] == ["1 of 2 graded episodes", "1 of 1 graded episode"]

    episodes = json.loads(
        _ok(cli("--results-dir", results, "report", "--episodes", "--json")).stdout
    )
    assert {(e["run_id"], e["run_status"]) for e in episodes} == {
        ("done", "completed"),
        ("stopped", "interrupted"),
        ("other", "running"),
    }


# -- one name for the interval, whole token counts ---------------------------------------------


def test_the_interval_has_one_name_in_every_format(cli, tmp_path):
    results = tmp_path / "results"
    make_run(results, "a", [record(i, s) for i, s in enumerate((0.95, 0.5, 0.91))])
    (row,) = json.loads(_ok(cli("--results-dir", results, "report", "--json")).stdout)
    assert (row["pass_rate_low"], row["pass_rate_high"]) == wilson_interval(2, 3)
    assert not [k for k in row if "ci95" in k or "interval" in k]
    header = _ok(cli("--results-dir", results, "report", "--format", "csv")).stdout.splitlines()[0]
    assert "pass_rate,pass_rate_low,pass_rate_high" in header
    assert "ci95" not in header and "interval" not in header
    table = _summary_table(cli, results)
    assert table["pass rate [95% CI]"] == ["66.7% [20.8%, 93.9%]"]


def test_token_counts_are_whole_numbers_everywhere(cli, tmp_path):
    results = tmp_path / "results"
    usage = {
        "input_tokens": 1200.0,
        "output_tokens": 34.0,
        "cache_read_tokens": 5000.0,
        "cache_write_tokens": 700.0,
        "cost_usd": 0.01,
    }
    make_run(results, "a", [record(0, 0.95, usage=usage), record(1, 0.5, usage=usage)])
    (row,) = json.loads(_ok(cli("--results-dir", results, "report", "--json")).stdout)
    tokens = {k: row[k] for k in row if k.endswith("tokens")}
    assert tokens == {
        "input_tokens": 2400,
        "output_tokens": 68,
        "tokens": 2468,
        "cache_read_tokens": 10000,
        "cache_write_tokens": 1400,
    }
    assert all(type(v) is int for v in tokens.values())
    text = _ok(cli("--results-dir", results, "report", "--format", "csv")).stdout
    (from_csv,) = csv.DictReader(io.StringIO(text))
    assert [from_csv[k] for k in tokens] == ["2400", "68", "2468", "10000", "1400"]
    episodes = json.loads(
        _ok(cli("--results-dir", results, "report", "--episodes", "--json")).stdout
    )
    assert [e["tokens"] for e in episodes] == [1234, 1234]
    assert all(type(e["tokens"]) is int for e in episodes)
    table = _summary_table(cli, results)
    assert [table[f"{k} tokens"] for k in ("input", "output", "cache read", "cache write")] == [
        ["2,400"],
        ["68"],
        ["10,000"],
        ["1,400"],
    ]
    episode_table = _ok(cli("--results-dir", results, "report", "--episodes")).stdout
    assert "1,234" in episode_table and "1,234.0" not in episode_table


# -- --run PREFIX ----------------------------------------------------------------------------


@pytest.fixture
def dated(tmp_path) -> Path:
    results = tmp_path / "results"
    for run_id in (
        "20260101T090000Z_local-baseline_aaaaaa",
        "20260101T100000Z_local-baseline_bbbbbb",
        "20260203T090000Z_local-baseline_cccccc",
    ):
        make_run(results, run_id, [record(0, 0.95)])
    return results


def _run_ids(cli, results: Path, *selection: str) -> list[str]:
    args = [a for s in selection for a in ("--run", s)]
    rows = json.loads(
        _ok(cli("--results-dir", results, "report", *args, "--episodes", "--json")).stdout
    )
    return [r["run_id"] for r in rows]


def test_a_prefix_selects_every_matching_run(cli, dated):
    jan = ["20260101T090000Z_local-baseline_aaaaaa", "20260101T100000Z_local-baseline_bbbbbb"]
    assert _run_ids(cli, dated, "20260101") == jan
    assert len(_run_ids(cli, dated, "2026")) == 3
    assert _run_ids(cli, dated, "20260203", "20260101T09") == [
        "20260203T090000Z_local-baseline_cccccc",
        jan[0],
    ]
    assert _run_ids(cli, dated, "2026", "20260101") == [
        *jan,
        "20260203T090000Z_local-baseline_cccccc",
    ]
    assert _run_ids(cli, dated, str(dated / jan[1])) == [jan[1]]  # a folder still works
    (row,) = json.loads(
        _ok(cli("--results-dir", dated, "report", "--run", "2026", "--json")).stdout
    )
    assert (row["runs"], row["episodes"]) == (3, 3)
    html = dated.parent / "jan.html"
    _ok(cli("--results-dir", dated, "report", "-r", "20260101", "-f", "html", "-o", html))
    assert "2 runs, 1 group;" in html.read_text()
    # `run --resume` still needs exactly one run
    with pytest.raises(UsageError, match="ambiguous"):
        find_run(dated, "20260101")


def test_a_prefix_matching_nothing_is_one_line_naming_the_results_folder(cli, dated):
    for args in (("--run", "2025"), ("--run", "2026", "--run", "nope"), ("-r", "x", "--json")):
        result = cli("--results-dir", dated, "report", *args)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and str(dated) in result.stderr
        assert "no run '" in result.stderr and "Traceback" not in result.stderr
    missing = dated.parent / "missing"
    result = cli("--results-dir", missing, "report", "--run", "2026")
    assert result.exit_code == 2 and str(missing) in result.stderr
