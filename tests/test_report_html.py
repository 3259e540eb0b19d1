"""The HTML report's breakdowns, markers, links to episode pages, left-out plots and escaping."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from leakbench.cli import app
from leakbench.grading.grade import FAILED_CHECKS
from leakbench.report import group_runs, load_runs, make_report
from leakbench.report.summary import OUTCOME_CODES, failure_reasons, leak_detections
from leakbench.task.leaks import LEAK_KINDS
from tests.test_calibration import make_run, record

DOWN = "\u2193"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Real runs: an honest policy, a trap (one leak), every column kept under disguised names
    (so a leak's kind must come from instance.json); about 6 s."""
    results = tmp_path_factory.mktemp("html") / "results"
    runner = CliRunner()
    for policy, n, preset in (
        ("baseline", 3, "default"),
        ("trap-proxy", 2, "default"),
        ("leaky", 2, "disguised"),
    ):
        args = ["-q", "--results-dir", str(results), "run", "--preset", preset, "--runs", str(n)]
        result = runner.invoke(app, [*args, "--model", f"local/{policy}"], env={"NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
    return results


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report.html"
    args = ["--results-dir", str(results), "report", "--format", "html", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--episodes"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "7 episode pages" in result.stderr
    return out


@dataclass
class Cell:
    text: str = ""
    hrefs: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


@dataclass
class Table:
    h2: str
    h3: str
    rows: list[list[Cell]] = field(default_factory=list)

    def column(self, name: str) -> list[Cell]:
        head = [c.text for c in self.rows[0]]
        i = next(i for i, h in enumerate(head) if h.startswith(name))
        return [row[i] for row in self.rows[1:] if len(row) == len(head)]  # not a run's row


class Page(HTMLParser):
    """Tables with the headings above them, every link, image and note."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[Table] = []
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.notes: list[str] = []
        self._heading: str | None = None
        self._h2 = self._h3 = ""
        self._cell: Cell | None = None
        self._note: list[str] | None = None
        self._note_tag = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("h2", "h3"):
            self._heading, text = tag, ""
            setattr(self, f"_{tag}", text)
            if tag == "h2":
                self._h3 = ""
        elif tag == "table":
            self.tables.append(Table(self._h2, self._h3))
        elif tag == "tr":
            self.tables[-1].rows.append([])
        elif tag in ("td", "th"):
            self._cell = Cell()
            self.tables[-1].rows[-1].append(self._cell)
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif a.get("class") == "note":
            self._note, self._note_tag = [], tag
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
            if self._cell is not None:
                self._cell.hrefs.append(a["href"])
        if a.get("title") and self._cell is not None:
            self._cell.titles.append(a["title"])

    def handle_endtag(self, tag):
        if tag == self._heading:
            self._heading = None
        elif tag in ("td", "th"):
            self._cell = None
        elif self._note is not None and tag == self._note_tag:
            self.notes.append(" ".join("".join(self._note).split()))
            self._note = None

    def handle_data(self, data):
        if self._heading:
            name = f"_{self._heading}"
            setattr(self, name, getattr(self, name) + data)
        if self._cell is not None:
            self._cell.text += data
        if self._note is not None:
            self._note.append(data)

    def table(self, h2: str, h3: str = "") -> Table:
        (found,) = [t for t in self.tables if t.h2.startswith(h2) and t.h3.startswith(h3)]
        return found


def _page(report: Path) -> Page:
    return Page(report.read_text(encoding="utf-8"))


def _records(results: Path, policy: str) -> list[dict]:
    (run,) = [p for p in results.iterdir() if f"_local-{policy}_" in p.name]
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def test_failure_reasons_table_counts_match_the_records(results, report):
    page = _page(report)
    for policy in ("baseline", "trap-proxy", "leaky"):
        lines = _records(results, policy)
        expected = Counter(code for line in lines for code in set(line["failed_checks"]))
        heading = f"local/{policy} "
        if not expected:
            assert any(heading in note for note in page.notes)
            continue
        table = page.table("Why episodes did not pass", heading)
        counts = [int(c.text.split()[0]) for c in table.column("episodes")]
        codes = [c.text for c in table.column("check")]
        assert dict(zip(codes, counts, strict=True)) == dict(expected)
        assert counts == sorted(counts, reverse=True)  # most common first
        meanings = [c.text for c in table.column("what it means")]
        assert meanings == [FAILED_CHECKS[code] for code in codes]
    leaky = page.table("Why episodes did not pass", "local/leaky")
    # "leak" is listed once per column caught, yet counts each episode once
    assert leaky.column("check")[0].text == "leak"
    assert leaky.column("episodes")[0].text == "2 (100%)"


def test_leak_detections_are_counted_by_kind_from_each_instance(results, report):
    page = _page(report)
    proxy = page.table("Leaks detected", "local/trap-proxy")
    assert [c.text for c in proxy.column("leak kind")] == ["noisy_proxy"]
    assert [c.text for c in proxy.column("columns")] == ["leak_followup_score"]
    assert proxy.column("episodes")[0].text.startswith("2 ")
    assert proxy.column("what it is")[0].text == LEAK_KINDS["noisy_proxy"].description
    # disguised: the columns are renamed per seed, the kinds come from each instance.json
    (run,) = [p for p in results.iterdir() if "_local-leaky_" in p.name]
    expected: Counter[str] = Counter()
    for line in _records(results, "leaky"):
        instance = json.loads(
            (run / "episodes" / f"{line['index']:04d}" / "instance.json").read_text()
        )
        kinds = {c["name"]: c["leak_kind"] for c in instance["columns"] if c["leak_kind"]}
        expected.update({kinds[column] for column in line["leaks_detected"]})
        assert all(column.startswith("num_") for column in line["leaks_detected"])
    leaky = page.table("Leaks detected", "local/leaky")
    shown = {
        c.text: int(n.text.split()[0])
        for c, n in zip(leaky.column("leak kind"), leaky.column("episodes"), strict=True)
    }
    assert shown == dict(expected) and len(shown) >= 5
    (none,) = [note for note in page.notes if note.startswith("No leak detected in:")]
    assert "local/baseline" in none and "local/leaky" not in none


def test_lower_is_better_is_marked(report, tmp_path):
    page = _page(report)
    summary = page.table("Summary")
    metric = next(row for row in summary.rows if row[0].text == "metric")
    assert all(
        f"holdout_regret{DOWN} lower is better" in c.text.replace("\n", "") for c in metric[1:]
    )
    assert all("lower is better" in c.titles for c in metric[1:])
    metrics = page.table("Metrics")
    marks = {row[0].text.split()[0]: row[0].text.split()[1] for row in metrics.rows[1:]}
    assert marks["brier"] == marks["log_loss"] == marks["ece"] == marks["holdout_regret"] == DOWN
    assert marks["auroc"] == marks["holdout_auroc"] == "\u2191"
    assert f"score {DOWN} lower is better" in [c.text for c in page.table("Episodes").rows[0]]
    # an auroc group: higher is better, no marker on its threshold or score
    make_run(tmp_path / "r", "auroc", [record(0, 0.95), record(1, 0.5)])
    text = make_report(tmp_path / "r", fmt="html")
    threshold = next(r for r in Page(text).table("Summary").rows if r[0].text == "threshold")
    assert DOWN not in threshold[1].text and "auroc" in text


def test_every_run_and_episode_links_to_a_page_that_exists(results, report):
    page = _page(report)
    folder = report.parent / "report_episodes"
    assert page.hrefs and all(not h.startswith(("/", "http")) for h in page.hrefs)
    for href in page.hrefs:
        assert (report.parent / unquote(href)).is_file(), href
    episodes = page.table("Episodes")
    runs = sorted(p.name for p in results.iterdir())
    # a row per run (its id linked to its index page), then its episodes (index linked)
    run_rows = [row[0] for row in episodes.rows if len(row) == 1]
    assert [c.text.split(" ·")[0] for c in run_rows] == runs
    assert [unquote(c.hrefs[0]) for c in run_rows] == [
        f"report_episodes/{r}/index.html" for r in runs
    ]
    linked = [unquote(i.hrefs[0]) for i in episodes.column("index")]
    assert len(set(linked)) == 7 == len(list(folder.glob("*/[0-9][0-9][0-9][0-9].html")))
    for href in linked:
        assert href.split("/")[1] in runs and href.startswith("report_episodes/")
    run_links = {unquote(c.hrefs[0]) for c in page.table("Runs").column("run")}
    assert run_links == {f"report_episodes/{r}/index.html" for r in runs}
    # the breakdowns' examples link to the same pages
    reasons = page.table("Why episodes did not pass", "local/trap-proxy")
    assert all(c.hrefs for c in reasons.column("e.g."))


def test_plots_with_nothing_to_show_are_left_out_with_a_note(report):
    page = _page(report)
    assert len(page.images) == 3  # scores, pass rates, reliability
    assert "Steps left out: every episode took 2 steps." in page.notes
    assert "Cost left out: no episode cost anything (local policies are free)." in page.notes


def test_no_probabilities_no_scores_no_plots(tmp_path):
    results = tmp_path / "results"
    make_run(
        results,
        "e",
        [record(0, None, outcome="error", error="API"), record(1, None, outcome="error")],
    )
    page = Page(make_report(results, fmt="html"))
    assert page.images == []
    notes = " ".join(page.notes)
    assert "no episode has a score" in notes and "no group has a graded episode" in notes
    assert "no passed or failed episode has submitted probabilities" in notes
    (table,) = [t for t in page.tables if t.h2.startswith("Why")]
    assert [c.text for c in table.column("check")] == ["error"]
    assert table.column("what it means")[0].text == OUTCOME_CODES["error"]
    assert "written next to the report when it goes to a file" in notes  # stdout: no pages


def test_agent_strings_are_escaped_in_the_report_and_pages(cli, tmp_path):
    results = tmp_path / "results"
    evil = "<script>alert(1)</script>"
    records = [
        record(0, 0.5, reasons=[f"reason {evil}"]),
        record(1, None, outcome="error", error=evil),
    ]
    records[0] = records[0].model_copy(update={"failed_checks": ["<img src=x onerror=alert(1)>"]})
    make_run(results, 'run<script>"x', records, model="local/<b>bold</b>")
    out = tmp_path / "r.html"
    result = cli("--results-dir", results, "report", "-f", "html", "-o", out, "--episodes")
    assert result.exit_code == 0, result.output
    for path in [out, *(tmp_path / "r_episodes").rglob("*.html")]:
        text = path.read_text().lower()
        assert "<script" not in text and "<img src=x" not in text and "<b>bold" not in text, path
    text = out.read_text()
    assert "reason &lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = Page(text)
    hrefs = [unquote(h) for h in page.hrefs]
    assert 'r_episodes/run<script>"x/0000.html' in hrefs
    assert all((tmp_path / h).is_file() for h in hrefs)


def test_breakdowns_from_python(results):
    groups = {g.model: g for g in group_runs(load_runs(results))}
    proxy = failure_reasons(groups["local/trap-proxy"])
    assert proxy[0].count == 2 and {b.code for b in proxy} >= {"leak", "threshold"}
    assert all("_local-trap-proxy_" in run for b in proxy for run, _ in b.episodes)
    assert leak_detections(groups["local/baseline"]) == []


def test_every_outcome_counts_even_without_codes(tmp_path):
    """Outcomes stand in for missing codes; a failure graded before codes were kept says so."""
    results = tmp_path / "results"
    records = [
        record(0, 0.95),  # passed: no row
        record(1, 0.5),  # failed, no failed_checks (an older record)
        record(2, 0.5, failed_checks=["threshold"]),
        record(3, 0.6, failed_checks=["threshold"]),
        record(4, None, outcome="invalid", failed_checks=["invalid", "refit"]),
        record(5, None, outcome="no_submission"),
        record(6, None, outcome="error", error="API"),
    ]
    make_run(results, "a", records)
    (group,) = group_runs(load_runs(results))
    rows = {b.code: [i for _, i in b.episodes] for b in failure_reasons(group)}
    assert rows == {
        "threshold": [2, 3],
        "unrecorded": [1],
        "invalid": [4],
        "refit": [4],
        "no_submission": [5],
        "error": [6],
    }
    assert next(iter(rows)) == "threshold"  # most common first
