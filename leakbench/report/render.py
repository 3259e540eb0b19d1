"""Summary and episode rows as a rich table, Markdown, CSV or JSON.

CSV and JSON carry the raw numbers (full precision, empty / null for "not available"); the table
and Markdown show them formatted for people.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from leakbench.report.summary import LEAK_PREFIX

FORMATS = ("table", "markdown", "csv", "json", "html")


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return _num(mean) if sd is None else f"{mean:.4f} ± {sd:.4f}"


def plural(n: int, noun: str) -> str:
    """``1 group``, ``2 groups``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _int(value: int) -> str:
    return f"{int(value):,}"


def pass_rate_text(row: dict[str, Any]) -> str:
    """``30.0% [10.8%, 60.3%]``: the pass rate and its 95% CI (``pass_rate_low/high``)."""
    if row["pass_rate"] is None:
        return "-"
    return f"{_pct(row['pass_rate'])} [{_pct(row['pass_rate_low'])}, {_pct(row['pass_rate_high'])}]"


def summary_cells(row: dict[str, Any]) -> list[tuple[str, str]]:
    """One summary row as (label, text) pairs, in display order."""
    cells = [
        ("model", row["model"]),
        ("preset", row["preset"]),
        ("metric", row["metric"] or "-"),
        ("threshold", _num(row["threshold"])),
        ("run status", row["run_status"]),
        ("runs", str(row["runs"])),
        ("instances", _instances(row)),
        ("episodes", str(row["episodes"])),
        ("errors", str(row["error"])),
        # errors count neither way: say what the rate is out of
        ("passed", f"{row['passed']} of {plural(row['graded'], 'graded episode')}"),
        ("pass rate [95% CI]", pass_rate_text(row)),
        ("score mean ± sd", _mean_sd(row["score_mean"], row["score_sd"])),
        ("AUROC mean ± sd", _mean_sd(row["auroc_mean"], row["auroc_sd"])),
        ("regret to oracle", _num(row["regret_mean"])),
        ("leaks detected", str(row["leaks_any"])),
    ]
    cells += [
        (f"leak: {key[len(LEAK_PREFIX) :]}", str(value))
        for key, value in row.items()
        if key.startswith(LEAK_PREFIX)
    ]
    cells += [
        ("invalid", str(row["invalid"])),
        ("no submission", str(row["no_submission"])),
        ("mean steps", _num(row["steps_mean"], 1)),
        ("input tokens", _int(row["input_tokens"])),
        ("output tokens", _int(row["output_tokens"])),
        ("cache read tokens", _int(row["cache_read_tokens"])),
        ("cache write tokens", _int(row["cache_write_tokens"])),
        ("cost", f"${row['cost_usd']:.4f}"),
        ("wall time", f"{row['wall_s']:.1f}s"),
    ]
    return cells


def _instances(row: dict[str, Any]) -> str:
    public = row["public_seed_runs"]
    if not public:
        return "secret key"
    runs = "" if public == row["runs"] else f" in {public} of {row['runs']} runs"
    return f"public seeds{runs}: NOT tamper-proof"


def episode_cells(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("run", row["run_id"]),
        ("run status", row["run_status"]),
        ("index", str(row["index"])),
        ("seed", str(row["seed"]) + ("" if row["tamper_proof"] else " (public)")),
        ("outcome", row["outcome"]),
        ("score", _num(row["score"])),
        ("steps", str(row["steps"])),
        ("tokens", _int(row["tokens"])),
        ("cost", f"${row['cost_usd']:.4f}"),
        ("reasons", row["reasons"]),
    ]


def cells(rows: Sequence[dict[str, Any]], episodes: bool) -> list[list[tuple[str, str]]]:
    return [episode_cells(r) if episodes else summary_cells(r) for r in rows]


def table(rows: Sequence[dict[str, Any]], episodes: bool) -> Table:
    """A rich table. The summary is transposed (a column per group) so it fits a terminal."""
    grid = cells(rows, episodes)
    if episodes:
        out = Table(title="episodes", title_justify="left")
        for label, _ in grid[0] if grid else episode_cells(_EMPTY_EPISODE):
            out.add_column(label, overflow="fold")
        for row in grid:
            out.add_row(*(text for _, text in row))
        return out
    out = Table(title="summary", title_justify="left")
    out.add_column("", no_wrap=True)
    for _ in grid:
        out.add_column("", justify="right")
    labels = [label for label, _ in grid[0]] if grid else []
    for i, label in enumerate(labels):
        out.add_row(label, *(row[i][1] for row in grid))
    return out


_EMPTY_EPISODE: dict[str, Any] = {
    "run_id": "",
    "run_status": "",
    "index": 0,
    "seed": 0,
    "tamper_proof": True,
    "outcome": "",
    "score": None,
    "steps": 0,
    "tokens": 0,
    "cost_usd": 0.0,
    "reasons": "",
}


def table_text(rows: Sequence[dict[str, Any]], episodes: bool, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, no_color=True, highlight=False)
    console.print(table(rows, episodes))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[dict[str, Any]], episodes: bool) -> str:
    grid = cells(rows, episodes)
    if not grid:
        return ""
    labels = [label for label, _ in grid[0]]
    lines = ["| " + " | ".join(_md_escape(x) for x in labels) + " |"]
    lines.append("|" + "|".join("---" for _ in labels) + "|")
    lines += ["| " + " | ".join(_md_escape(text) for _, text in row) + " |" for row in grid]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"
