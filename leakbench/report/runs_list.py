"""The runs in a results folder, newest first, one row each (``leakbench runs``).

Usable without the CLI::

    from leakbench.report.runs_list import list_run_rows
    rows, skipped = list_run_rows(Path("results"))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError
from leakbench.stats import pass_rate
from leakbench.store.runs import EpisodeRecord, RunDir, total_usage


@dataclass(frozen=True)
class RunRow:
    """One run as ``leakbench runs`` lists it."""

    run_id: str
    created_at: str  # UTC, ISO 8601, as in the manifest
    model: str
    preset: str
    status: str
    done: int  # episodes with a line in episodes.jsonl
    planned: int
    passed: int
    errors: int
    pass_rate: float | None  # passed / (done - errors); None while nothing is graded
    cost_usd: float | None  # None: the model has no price, so the cost is unknown
    path: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A folder in the results folder that is not a readable run, and why."""

    path: Path
    reason: str


def cost_known(run: RunDir) -> bool:
    """Whether the run's cost is known: a local policy costs nothing; a model costs what its
    price (``[pricing.<model>]`` in the run's saved settings) says, and without one, unknown."""
    model = run.manifest.model
    if model.startswith("local/"):
        return True
    from leakbench.agents import parse_model

    try:
        _, name = parse_model(model)
        return name in run.settings().pricing
    except LeakbenchError:
        return False


def cost_of(run: RunDir, usage: dict[str, float], known: bool | None = None) -> float | None:
    """The cost in US dollars of ``usage`` in this run, as ``leakbench run`` reports it: 0 for a
    local policy, None when the model has no price (``known``: ``cost_known(run)`` if given)."""
    if run.manifest.model.startswith("local/"):
        return 0.0
    if not (cost_known(run) if known is None else known):
        return None
    return float(usage.get("cost_usd", 0.0))


def run_row(run: RunDir, records: list[EpisodeRecord] | None = None) -> RunRow:
    records = run.records() if records is None else records
    manifest = run.manifest
    rate = pass_rate(records)
    return RunRow(
        run_id=manifest.run_id,
        created_at=manifest.created_at,
        model=manifest.model,
        preset=manifest.preset,
        status=manifest.status,
        done=len(records),
        planned=manifest.runs,
        passed=rate.passed,
        errors=sum(r.outcome == "error" for r in records),
        pass_rate=rate.rate,
        cost_usd=cost_of(run, total_usage(records)),
        path=str(run.path),
    )


def list_run_rows(results_dir: Path) -> tuple[list[RunRow], list[Skipped]]:
    """Every run in ``results_dir``, newest first, and the folders that are not runs.

    Hidden folders (``.name``) are passed over in silence; files are not looked at.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        return [], []
    rows: list[RunRow] = []
    skipped: list[Skipped] = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        if not (path / "manifest.json").is_file():
            skipped.append(Skipped(path, "not a run (no manifest.json)"))
            continue
        try:
            rows.append(run_row(RunDir.open(path)))
        except LeakbenchError as exc:
            skipped.append(Skipped(path, str(exc)))
        except OSError as exc:
            skipped.append(Skipped(path, f"cannot read it: {exc.strerror or exc}"))
    rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return rows, skipped
