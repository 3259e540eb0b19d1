"""`leakbench report`: grouping and statistics, every format, and the self-contained HTML."""

from __future__ import annotations

import base64
import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from leakbench.cli import app
from leakbench.report import group_runs, load_runs, summary_rows
from leakbench.report.plots import reliability_data
from leakbench.stats import wilson_interval
from tests.test_calibration import make_run, record


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> Path:
    """Real runs of two local policies (made once for the module: about 8 s)."""
    results = tmp_path_factory.mktemp("report") / "results"
    runner = CliRunner()
    for policy, n in (("baseline", 6), ("leaky", 4)):
        args = ["-q", "--results-dir", str(results), "run", "--preset", "seed"]
        args += ["--model", f"local/{policy}"]
        result = runner.invoke(app, [*args, "--runs", str(n)], env={"NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
    return results


def _report(cli, results: Path, *args: str):
    result = cli("--results-dir", results, "report", *args)
    assert result.exit_code == 0, result.output
    return result


def test_csv_loads_in_pandas_with_the_same_numbers_as_json(cli, real_runs):
    for extra in ((), ("--episodes",)):
        as_json = json.loads(_report(cli, real_runs, "--format", "json", *extra).stdout)
        as_csv = pd.read_csv(io.StringIO(_report(cli, real_runs, "--format", "csv", *extra).stdout))
        from_json = pd.DataFrame(as_json)
        assert list(as_csv.columns) == list(from_json.columns)
        assert len(as_csv) == len(from_json) == (10 if extra else 2)
        numeric = from_json.select_dtypes("number").columns
        assert len(numeric) > 5
        pd.testing.assert_frame_equal(
            as_csv[numeric], from_json[numeric], check_dtype=False, check_exact=True
        )


def test_summary_numbers_from_real_runs(cli, real_runs):
    rows = {r["model"]: r for r in json.loads(_report(cli, real_runs, "--json").stdout)}
    base, leaky = rows["local/baseline"], rows["local/leaky"]
    assert (base["episodes"], leaky["episodes"]) == (6, 4)
    assert leaky["passed"] == 0 and leaky["leaks.leak_future_signal"] == 4
    assert base["leaks.leak_future_signal"] == 0 and base["leaks_any"] == 0
    lines = [
        json.loads(line)
        for run in real_runs.iterdir()
        if "baseline" in run.name
        for line in (run / "episodes.jsonl").read_text().splitlines()
    ]
    passed = sum(line["passed"] for line in lines)
    assert base["passed"] == passed and base["pass_rate"] == pytest.approx(passed / 6)
    assert [base["pass_rate_low"], base["pass_rate_high"]] == list(wilson_interval(passed, 6))
    scores = pd.Series([line["score"] for line in lines])
    assert base["score_mean"] == pytest.approx(scores.mean())
    assert base["score_sd"] == pytest.approx(scores.std())
    assert base["steps_mean"] == 2.0 and base["metric"] == "auroc"


def test_table_markdown_and_episode_rows(cli, real_runs):
    table = _report(cli, real_runs).stdout
    assert (
        "pass rate [95% CI]" in table and "local/leaky" in table and "leak_future_signal" in table
    )
    md = _report(cli, real_runs, "--format", "markdown").stdout.splitlines()
    assert md[0].startswith("| model | preset |") and md[1].startswith("|---|")
    assert len(md) == 4 and "local/baseline" in md[2] + md[3]
    episodes = _report(cli, real_runs, "--episodes", "--format", "markdown").stdout.splitlines()
    assert len(episodes) == 12 and "uses leak column leak_future_signal" in "".join(episodes)
    (leaky,) = [p.name for p in real_runs.iterdir() if "leaky" in p.name]
    one = json.loads(_report(cli, real_runs, "--run", leaky, "--json").stdout)
    assert [r["model"] for r in one] == ["local/leaky"]


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables = 0
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "table":
            self.tables += 1
        for key in ("href", "src"):
            if attrs.get(key) and tag != "img":
                self.links.append(attrs[key])


def test_html_report_is_self_contained_with_plots(cli, real_runs, tmp_path):
    out = tmp_path / "report.html"
    result = _report(cli, real_runs, "--format", "html", "--out", out, "--episodes")
    assert result.stdout == "" and "wrote" in result.stderr
    text = out.read_text()
    parser = _Html()
    parser.feed(text)
    # summary, runs, failure reasons (leaky, baseline if any failed), leaks (leaky), metrics,
    # episodes
    assert parser.tables >= 6
    # links only to the episode pages written next to it, never outside
    assert parser.links and all(link.startswith("report_episodes/") for link in parser.links)
    # score, pass rate, reliability; steps (all 2) and cost (local: free) are left out
    assert len(parser.images) == 3
    assert "Steps left out: every episode took 2 steps." in text
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text
    assert "local/baseline" in text and "pass rate [95% CI]" in text


def test_reliability_labels_are_regenerated_from_the_run_settings(real_runs):
    groups = {g.model: g for g in group_runs(load_runs(real_runs))}
    p, y, used = reliability_data(groups["local/baseline"], cap=3)
    assert used == 3 and p.shape == y.shape == (600,)  # n_test = 200 per episode
    assert set(y.tolist()) == {0, 1} and 0 < p.min() < p.max() < 1
    # a sane classifier: higher probabilities where the label is 1
    assert p[y == 1].mean() > p[y == 0].mean() + 0.3


def test_html_without_matplotlib_says_how_to_get_it(cli, real_runs, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = cli("--results-dir", real_runs, "report", "--format", "html")
    assert result.exit_code == 1
    assert "pip install 'leakbench[plots]'" in result.stderr and result.stderr.count("\n") == 1
    assert _report(cli, real_runs, "--format", "csv").stdout.startswith("model,")


def test_pass_rate_leaves_out_errors_and_counts_every_outcome(tmp_path):
    results = tmp_path / "results"
    records = [record(i, 0.95) for i in range(3)] + [record(3, 0.85)]
    records += [
        record(4, None, outcome="error", error="API"),
        record(5, None, outcome="invalid", reasons=["NaN"]),
        record(6, None, outcome="no_submission"),
        record(7, 1.0, reasons=["uses leak column leak_a"], leaks_detected=["leak_a", "leak_b"]),
    ]
    make_run(results, "a", records)
    make_run(results, "b", [record(0, 0.92)])
    # a crash mid-append leaves a truncated last line: the report skips it
    with open(results / "b" / "episodes.jsonl", "a") as handle:
        handle.write('{"schema_version": 1, "index": 1')
    (row,) = summary_rows(group_runs(load_runs(results)))
    assert (row["runs"], row["episodes"], row["passed"], row["error"]) == (2, 9, 4, 1)
    assert (row["invalid"], row["no_submission"], row["failed"]) == (1, 1, 2)
    assert row["pass_rate"] == pytest.approx(4 / 8)
    assert (row["pass_rate_low"], row["pass_rate_high"]) == wilson_interval(4, 8)
    assert row["leaks.leak_a"] == 1 and row["leaks.leak_b"] == 1 and row["leaks_any"] == 1
    assert row["score_mean"] == pytest.approx((3 * 0.95 + 0.85 + 1.0 + 0.92) / 6)
    assert row["regret_mean"] == pytest.approx(0.01)
    assert (row["input_tokens"], row["tokens"]) == (900, 990)
    assert row["cost_usd"] == pytest.approx(0.009) and row["wall_s"] == pytest.approx(3.0)


def test_groups_split_by_preset(tmp_path):
    results = tmp_path / "results"
    make_run(results, "a", [record(0, 0.95)])
    make_run(results, "b", [record(0, 0.95, preset="seed")])
    make_run(results, "c", [record(0, 0.95)], model="local/leaky")
    keys = [(g.model, g.preset) for g in group_runs(load_runs(results))]
    assert keys == [
        ("local/baseline", "default"),
        ("local/baseline", "seed"),
        ("local/leaky", "default"),
    ]


def test_no_runs_is_a_clear_error(cli, tmp_path):
    result = cli("--results-dir", tmp_path / "empty", "report")
    assert result.exit_code == 1 and "no runs in" in result.stderr
    result = cli("--results-dir", tmp_path / "empty", "report", "--run", "nope")
    assert result.exit_code == 2 and "no run 'nope'" in result.stderr
