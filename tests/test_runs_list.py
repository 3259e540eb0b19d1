"""`leakbench runs`: newest first, one row per run with its status, counts, pass rate and cost;
folders that are not runs are skipped with a warning; an empty results folder is no error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leakbench.report.runs_list import list_run_rows
from tests.test_calibration import make_run, record


def _run(
    results: Path,
    run_id: str,
    records: list,
    created: str,
    *,
    model: str = "local/baseline",
    status: str = "completed",
    planned: int | None = None,
) -> Path:
    path = make_run(results, run_id, records, model=model)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(created_at=created, status=status, runs=planned or len(records))
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def results(tmp_path) -> Path:
    """Four runs whose names sort in another order than their creation times."""
    results = tmp_path / "results"
    cost = {"input_tokens": 1000.0, "output_tokens": 200.0, "cost_usd": 0.25}
    _run(
        results,
        "a-priced",
        [
            record(0, 0.95, usage=cost),
            record(1, 0.5, usage=cost),
            record(2, None, outcome="error", error="model API: overloaded", usage=cost),
        ],
        "2026-05-12T10:00:00.000001Z",
        model="anthropic/claude-haiku-4-5",
        status="running",
        planned=5,
    )
    _run(
        results,
        "b-unpriced",
        [record(0, 0.95, usage=cost)],
        "2026-05-14T08:30:00.000000Z",
        model="anthropic/claude-nobody-prices-1",
    )
    _run(
        results,
        "c-local",
        [record(i, 0.95) for i in range(4)],
        "2026-05-11T23:59:59.000000Z",
        status="interrupted",
        planned=10,
    )
    _run(
        results,
        "d-errors",
        [record(0, None, outcome="error", error="sandbox: died")],
        "2026-05-13T00:00:00.000000Z",
        status="completed_with_errors",
    )
    return results


def _runs(cli, results: Path, *args: str):
    return cli("--results-dir", results, "runs", *args)


def test_newest_first_with_every_column(cli, results):
    result = _runs(cli, results)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    header = lines[0].split()
    assert header[:5] == ["run", "id", "created", "(UTC)", "model"]
    assert header[5:] == ["preset", "status", "episodes", "pass", "rate", "errors", "cost"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["b-unpriced", "d-errors", "a-priced", "c-local"]
    assert rows[0][1:] == [
        "2026-05-14", "08:30:00", "anthropic/claude-nobody-prices-1", "default", "completed",
        "1/1", "100.0%", "0", "unknown",
    ]  # fmt: skip
    assert rows[1][5:] == ["completed_with_errors", "1/1", "-", "1", "$0.0000"]
    # 1 passed of 2 graded (the error counts neither way); the cost of all three episodes
    assert rows[2][3:] == [
        "anthropic/claude-haiku-4-5", "default", "running", "3/5", "50.0%", "1", "$0.7500",
    ]  # fmt: skip
    assert rows[3][5:] == ["interrupted", "4/10", "100.0%", "0", "$0.0000"]


def test_json_is_the_same_list(cli, results):
    result = _runs(cli, results, "--json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    assert [r["run_id"] for r in data] == ["b-unpriced", "d-errors", "a-priced", "c-local"]
    priced = data[2]
    assert priced == {
        "run_id": "a-priced",
        "created_at": "2026-05-12T10:00:00.000001Z",
        "model": "anthropic/claude-haiku-4-5",
        "preset": "default",
        "status": "running",
        "done": 3,
        "planned": 5,
        "passed": 1,
        "errors": 1,
        "pass_rate": 0.5,
        "cost_usd": pytest.approx(0.75),
        "path": str(results / "a-priced"),
    }
    assert data[0]["cost_usd"] is None  # no price: unknown, not $0
    assert data[1]["pass_rate"] is None and data[1]["errors"] == 1
    assert data[3]["cost_usd"] == 0.0


def test_folders_that_are_not_runs_are_skipped_with_one_warning_each(cli, results):
    (results / "notes").mkdir()
    (results / "broken").mkdir()
    (results / "broken" / "manifest.json").write_text("{not json")
    (results / "future").mkdir()
    (results / "future" / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    (results / ".cache").mkdir()  # hidden: passed over in silence
    (results / "README.txt").write_text("not a folder")
    result = _runs(cli, results, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 4
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: skipped ") for w in warnings)
    assert "broken" in warnings[0] and "not a valid run manifest" in warnings[0]
    assert "future" in warnings[1] and "schema version 99 is not supported" in warnings[1]
    assert "notes" in warnings[2] and "not a run (no manifest.json)" in warnings[2]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("make", [True, False])
def test_empty_or_missing_results_folder_is_one_line_and_exit_0(cli, tmp_path, make):
    results = tmp_path / "results"
    if make:
        results.mkdir()
    result = _runs(cli, results)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.strip() == f"no runs in {results} (make one with `leakbench run`)"
    as_json = _runs(cli, results, "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == []


def test_usable_from_python(results):
    rows, skipped = list_run_rows(results)
    assert skipped == []
    local = next(r for r in rows if r.run_id == "c-local")
    assert (local.done, local.planned, local.passed, local.pass_rate) == (4, 10, 4, 1.0)
    assert local.as_dict()["status"] == "interrupted"
