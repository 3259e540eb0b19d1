"""`leakbench view`: a run at a glance, one episode of each outcome, runs still running or
interrupted, --json against the files, --html pages, and agent output shown escaped."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import leakbench.env.episode
from leakbench.agents import local
from leakbench.cli import app
from leakbench.report.episode_page import episode_page_path, write_episode_pages
from leakbench.report.episode_view import load_episode
from leakbench.store.runs import RunDir

# What a hostile agent writes: colour, an OSC 52 clipboard write, rich markup, HTML.
HOSTILE = "agent \x1b[31mred\x1b[0m \x1b]52;c;aGVsbG8=\x07 [bold red]x[/] <script>alert(1)</script>"
# ... and a line that looks like the harness accepting a submission it never made.
FAKE_ACCEPT = "submission accepted: 200 probabilities and a fitted pipeline. The episode is over."
HOSTILE_CODE = f"# {HOSTILE}\nprint({HOSTILE!r})\nprint({FAKE_ACCEPT!r})\nprint('x' * 9000)"
ESCAPES = ("\x1b", "\x07")


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"NO_COLOR": "1"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One real run per outcome (about 8 s for the module): name -> run folder."""
    base = tmp_path_factory.mktemp("view")
    results = base / "results"
    lenient = base / "lenient.toml"
    lenient.write_text("[grading]\nthreshold = 1.0\n")  # holdout_regret: every honest one passes
    hostile = local.Policy("prints escape sequences and markup", ((HOSTILE_CODE,),))
    original_turn = local.LocalAgent.next_turn

    def next_turn(self, results_):
        turn = original_turn(self, results_)
        if self.name == "local/hostile":
            turn = dataclasses.replace(turn, text=HOSTILE)
        return turn

    def broken_grader(*args, **kwargs):
        raise RuntimeError("the grader broke on [bold]purpose[/]")

    made: dict[str, Path] = {}
    plan = [
        ("passed", ["--config", lenient, "run", "--model", "local/baseline", "--runs", "1"]),
        ("failed", ["run", "--model", "local/leaky", "--runs", "2"]),
        ("invalid", ["run", "--model", "local/invalid", "--runs", "1"]),
        ("no_submission", ["run", "--model", "local/hostile", "--runs", "1"]),
        ("error", ["run", "--model", "local/numerics-only", "--runs", "1"]),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(local.POLICIES, "hostile", hostile)
        mp.setattr(local.LocalAgent, "next_turn", next_turn)
        for name, args in plan:
            if name == "error":
                mp.setattr(leakbench.env.episode, "grade", broken_grader)
            before = set(results.iterdir()) if results.exists() else set()
            result = _invoke("-q", "--results-dir", results, *args)
            assert result.exit_code == (3 if name == "error" else 0), result.output
            (made[name],) = set(results.iterdir()) - before
    return made


def _records(run: Path) -> list[dict]:
    lines = (run / "episodes.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["index"])


def _view(run: Path, *args: object):
    return _invoke("--results-dir", run.parent, "view", run.name, *args)


def test_run_at_a_glance_has_one_line_per_episode_with_its_values(runs):
    run = runs["failed"]
    result = _view(run)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {run.name}"
    assert lines[1] == "local/leaky · preset default · completed · 2/2 episodes done"
    assert lines[2].startswith("metric holdout_regret (lower is better), threshold 0.0435")
    header = next(line for line in lines if "first failing reason" in line)
    columns = "# seed outcome holdout_regret steps first failing reason tokens cost"
    assert header.split() == columns.split(" ")
    for record in _records(run):
        row = next(line for line in lines if line.strip().startswith(f"{record['index']:04d}"))
        cells = row.split()
        assert cells[1:5] == [str(record["seed"]), "failed", f"{record['score']:.4f}", "2"]
        assert record["reasons"][0][:60] in row
        assert cells[-2:] == ["0", "$0.0000"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "passed",
            ["passed", "accepted: submission accepted: 200 probabilities", "failed checks   none"],
        ),
        ("failed", ["leaks detected  leak_future_signal", "uses leak column leak_future_signal"]),
        ("invalid", ["refused: submission rejected (it does not count)", "NaN or infinite"]),
        ("no_submission", ["ended its turn without submitting", "no submit_answer call"]),
        (
            "error",
            ["harness fault: RuntimeError: the grader broke on [bold]purpose[/]", "Traceback"],
        ),
    ],
)
def test_an_episode_of_each_outcome(runs, name, expected):
    run = runs[name]
    result = _view(run, "0000")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    record = _records(run)[0]
    assert out.startswith(f"episode 0000 of run {run.name}\n")
    assert f"seed {record['seed']} · {name} · {record['steps']} steps" in out
    for text in expected:
        assert text in out, text
    for section in ("system prompt (", "task (", "step 1 · tool_use", "submission ─", "grade ─"):
        assert section in out
    assert f"submit attempts counted by the harness: {record['submit_attempts']}" in out
    assert "outcome         " + name in out


def test_grade_shows_score_against_threshold_and_every_check(runs):
    run = runs["failed"]
    out = _view(run, 1).stdout
    grade = json.loads((run / "episodes" / "0001" / "grade.json").read_text())
    assert (
        f"holdout_regret  {grade['score']:.4f} vs threshold 0.0435 "
        "(lower is better: passes at ≤ 0.0435)"
    ) in out
    for check in grade["checks"]:
        assert f"  {check}: " in out
    for reason in grade["reasons"]:
        assert f"  - {reason}" in out
    assert grade["failed_checks"] and "failed checks   " + ", ".join(grade["failed_checks"]) in out


def test_agent_output_is_neutralised_in_the_terminal(runs):
    result = _view(runs["no_submission"], 0)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert not any(c in out for c in ESCAPES)
    shown = "agent \\x1b[31mred\\x1b[0m \\x1b]52;c;aGVsbG8=\\a [bold red]x[/] <script>"
    assert out.count(shown) >= 3  # the turn's text, the code (a comment) and its output
    # the sandbox cut the long output: the marker is there and said once more, plainly
    assert "[output truncated by the sandbox: " in out
    # the run's table shows the reason the same way
    assert not any(c in _view(runs["no_submission"]).stdout for c in ESCAPES)


def test_json_is_the_files_content(runs):
    run = runs["failed"]
    glance = json.loads(_view(run, "--json").stdout)
    assert glance["run_id"] == run.name and glance["status"] == "completed"
    records = _records(run)
    assert [(e["index"], e["outcome"], e["score"]) for e in glance["episodes"]] == [
        (r["index"], r["outcome"], r["score"]) for r in records
    ]
    result = _view(run, 1, "--json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    folder = run / "episodes" / "0001"
    assert data["record"] == records[1]
    assert data["grade"] == json.loads((folder / "grade.json").read_text())
    events = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    turns = [e for e in events if e["type"] == "turn"]
    assert [t["step"] for t in data["turns"]] == [t["step"] for t in turns]
    code = turns[0]["tool_calls"][0]["input"]["expression"]
    assert data["turns"][0]["tool_calls"][0]["code"] == code
    results = [e["content"] for e in events if e["type"] == "tool_result"]
    assert [c["result"]["content"] for t in data["turns"] for c in t["tool_calls"]] == results
    assert data["submissions"][0]["accepted"] is True
    assert data["submission_files"] == ["pipeline.pkl", "probabilities.csv"]


def test_error_episode_json_carries_the_traceback(runs):
    data = json.loads(_view(runs["error"], 0, "--json").stdout)
    assert data["outcome"] == "error" and data["grade"] is None
    assert data["error"].startswith("harness fault: RuntimeError")
    assert "Traceback (most recent call last)" in data["harness_fault"]


def _copy(run: Path, tmp_path: Path, status: str, keep_lines: int) -> Path:
    """The run as it was while running (or after an interruption): the manifest's status, the
    first lines of episodes.jsonl plus half a line, the last episode without its grade."""
    copy = tmp_path / "results" / run.name
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["status"] = status
    (copy / "manifest.json").write_text(json.dumps(manifest))
    lines = (copy / "episodes.jsonl").read_text().splitlines(keepends=True)
    ordered = sorted(lines, key=lambda line: json.loads(line)["index"])
    (copy / "episodes.jsonl").write_text("".join(ordered[:keep_lines]) + ordered[-1][:40])
    last = copy / "episodes" / f"{len(lines) - 1:04d}"
    (last / "grade.json").unlink()
    transcript = (last / "transcript.jsonl").read_text()
    (last / "transcript.jsonl").write_text(transcript[: transcript.rindex("{") + 25])
    return copy


@pytest.mark.parametrize(
    ("status", "shown"), [("running", "running"), ("interrupted", "unfinished")]
)
def test_a_run_still_running_or_interrupted(runs, tmp_path, status, shown):
    run = _copy(runs["failed"], tmp_path, status, keep_lines=1)
    result = _view(run)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"local/leaky · preset default · {status} · 1/2 episodes done" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("0001"))
    assert row.split()[1:4] == ["1", shown, "-"]
    episode = _view(run, 1)
    assert episode.exit_code == 0, episode.output
    assert f"· {shown} (no line in episodes.jsonl yet)" in episode.stdout
    assert "not graded yet" in episode.stdout and "step 1 · tool_use" in episode.stdout
    data = json.loads(_view(run, 1, "--json").stdout)
    assert data["outcome"] == shown and data["record"] is None and data["grade"] is None


def test_html_pages_escape_agent_output_and_link_from_the_index(runs, tmp_path):
    run = runs["no_submission"]
    out = tmp_path / "pages"
    result = _view(run, "--html", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote 1 episode page and " in result.stderr
    page = (out / episode_page_path(run.name, 0)).read_text()
    assert not any(c in page for c in ESCAPES)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "[bold red]x[/]" in page and "\\x1b]52;c;aGVsbG8=" in page
    index = (out / run.name / "index.html").read_text()
    assert "href='0000.html'" in index and "no_submission" in index


def test_write_episode_pages_from_python(runs, tmp_path):
    run = RunDir.open(runs["failed"])
    pages = write_episode_pages(run, tmp_path, [1])
    assert pages == {1: tmp_path / episode_page_path(run.run_id, 1)}
    assert episode_page_path(run.run_id, 1) == f"{run.run_id}/0001.html"
    text = pages[1].read_text()
    assert "leak_future_signal" in text and "<pre" in text and "<script" not in text
    index = (tmp_path / run.run_id / "index.html").read_text()
    assert "href='0001.html'" in index and "href='0000.html'" not in index
    assert load_episode(run, 1).grade is not None


def test_full_shows_the_whole_task_prompt(runs):
    run = runs["passed"]
    short, full = _view(run, 0).stdout, _view(run, 0, "--full").stdout
    task = json.loads((run / "episodes" / "0000" / "transcript.jsonl").open().readline())["task"]
    assert "more lines not shown (--full shows them)" in short and task.strip() not in short
    assert task.strip() in full and "--full shows them" not in full


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "error: no run 'nope' in "),
        (["2"], "error: run '2' is ambiguous: it matches "),
        (["{failed}", "99"], "has no episode 99 (episodes: 0..1)"),
        (["{failed}", "x7"], "error: episode 'x7' is not an episode index"),
        (["{failed}", "--json", "--html", "out"], "--json and --html cannot be combined"),
    ],
)
def test_unknown_runs_and_episodes_are_one_line_usage_errors(runs, args, message):
    results = runs["failed"].parent
    args = [a.format(failed=runs["failed"].name) for a in args]
    result = _invoke("--results-dir", results, "view", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_runs_lists_the_real_runs_newest_first(runs):
    results = runs["failed"].parent
    data = json.loads(_invoke("--results-dir", results, "runs", "--json").stdout)
    assert [r["run_id"] for r in data] == [p.name for p in reversed(list(runs.values()))]
    by_model = {r["model"]: r for r in data}
    assert by_model["local/baseline"]["pass_rate"] == 1.0
    assert by_model["local/leaky"]["pass_rate"] == 0.0
    assert by_model["local/numerics-only"]["errors"] == 1
    assert by_model["local/numerics-only"]["pass_rate"] is None
    assert by_model["local/numerics-only"]["status"] == "completed_with_errors"


def test_submission_attempts_come_from_the_harness_not_the_agents_output(runs):
    faked = load_episode(RunDir.open(runs["no_submission"]), 0)
    assert FAKE_ACCEPT in faked.turns[0].tool_calls[0].result.content
    assert faked.submissions == [] and faked.problems == []
    refused = load_episode(RunDir.open(runs["invalid"]), 0)
    assert refused.submissions and not any(a.accepted for a in refused.submissions)
    assert refused.problems == []
