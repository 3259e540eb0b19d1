"""One run at a glance and one episode in full, loaded from the run folder (``leakbench view``).

Reads ``manifest.json``, ``episodes.jsonl`` and each episode's ``instance.json``,
``transcript.jsonl`` and ``grade.json``; works on a run still being written (an episode folder
without its line yet is ``running``, or ``unfinished`` once the run has stopped) and tolerates
truncated JSONL lines. Everything is plain data (pydantic models): the terminal view, the HTML
pages and ``--json`` all show the same. Usable without the CLI::

    from leakbench.report.episode_view import load_episode, load_run_view
    view = load_episode(RunDir.open(path), 7)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from leakbench.errors import UsageError
from leakbench.grading.grade import Grade
from leakbench.report.runs_list import cost_known, cost_of
from leakbench.report.summary import select_runs
from leakbench.settings import LOWER_IS_BETTER
from leakbench.store.files import read_jsonl
from leakbench.store.runs import EpisodeRecord, RunDir

# What the sandbox appends when it cuts a tool result short (sandbox.capture.shape_output).
_TRUNCATED = re.compile(r"\n\.\.\. \[output truncated: (\d+) more characters\]\n\Z")
_WITHHELD = "[output withheld:"
# The lines submit_answer prints in the sandbox (env.episode.Submission, sandbox.worker):
# read only from transcripts written before the harness logged ``submission`` events.
_SUBMIT_LINES = (
    ("submission accepted:", True),
    ("submission rejected (it does not count):", False),
    ("not counted:", False),
    ("submissions are not accepted here", False),
    ("submit_answer only works", False),
)


class SandboxCall(BaseModel):
    ok: bool = True
    timed_out: bool = False
    restarted: bool = False
    duration_s: float | None = None


class ToolResultView(BaseModel):
    content: str
    is_error: bool = False
    truncated: bool = False  # the sandbox cut the output short (its marker ends the text)
    dropped_chars: int | None = None  # how many characters it cut
    withheld: bool = False  # the print-values guard withheld the whole output


class ToolCallView(BaseModel):
    id: str
    name: str
    code: str | None = None  # python_expression's code
    input: dict[str, Any] = Field(default_factory=dict)
    cut_off: bool = False  # cut off by max_tokens: the harness did not run it
    sandbox: SandboxCall | None = None
    result: ToolResultView | None = None


class TurnView(BaseModel):
    step: int
    stop: str | None = None
    text: str = ""
    tool_calls: list[ToolCallView] = Field(default_factory=list)
    usage: dict[str, float] = Field(default_factory=dict)


class SubmitAttempt(BaseModel):
    step: int
    call_id: str
    accepted: bool
    message: str


class EpisodeRow(BaseModel):
    """One episode in the run at a glance."""

    index: int
    seed: int | None = None
    outcome: str  # an outcome, or "running" / "unfinished" for an episode without its line
    score: float | None = None
    steps: int = 0
    reason: str | None = None  # the first failing reason, or the error
    tokens: int = 0
    cost_usd: float | None = None  # None: unknown (the model has no price)


class RunView(BaseModel):
    run_id: str
    path: str
    model: str
    preset: str
    status: str
    created_at: str
    done: int
    planned: int
    executor: str = "local"  # where the episodes were played: local, or ray (a cluster)
    metric: str | None = None
    threshold: float | None = None
    lower_is_better: bool = False
    cost_known: bool = True
    episodes: list[EpisodeRow] = Field(default_factory=list)


class EpisodeView(BaseModel):
    """One episode in full: transcript, submission attempts, grade."""

    run_id: str
    model: str
    index: int
    seed: int | None = None
    outcome: str  # as in EpisodeRow
    record: EpisodeRecord | None = None  # its line in episodes.jsonl (None: no line yet)
    agent: str | None = None
    system: str | None = None
    task: str | None = None
    turns: list[TurnView] = Field(default_factory=list)
    submissions: list[SubmitAttempt] = Field(default_factory=list)
    submission_files: list[str] = Field(default_factory=list)
    grade: Grade | None = None
    error: str | None = None
    harness_fault: str | None = None  # the traceback of a harness fault
    tokens: int = 0  # input + output, of the whole episode (so far)
    cost_usd: float | None = None  # None: unknown (the model has no price)
    problems: list[str] = Field(default_factory=list)  # what could not be read, and why


def select_run(results_dir: Path, run: str) -> RunDir:
    """The one run ``run`` names: a folder, an id, or a prefix of exactly one id."""
    try:
        paths = select_runs(results_dir, run)
    except UsageError:
        raise UsageError(
            f"no run '{run}' in {results_dir}", hint="list runs with `leakbench runs`"
        ) from None
    if len(paths) > 1:
        names = ", ".join(p.name for p in paths[:5])
        more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
        raise UsageError(
            f"run '{run}' is ambiguous: it matches {names}{more}", hint="give more of the id"
        )
    return RunDir.open(paths[0])


def parse_index(text: str) -> int:
    """An episode index as given on the command line: ``7`` or ``0007``."""
    if not text.isdigit():
        raise UsageError(f"episode '{text}' is not an episode index (e.g. 7 or 0007)")
    return int(text)


def episode_indices(run: RunDir, records: list[EpisodeRecord] | None = None) -> list[int]:
    """Episodes with a line in ``episodes.jsonl`` or a folder (begun, maybe not finished)."""
    records = run.records() if records is None else records
    found = {r.index for r in records}
    folder = run.path / "episodes"
    if folder.is_dir():
        found |= {int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()}
    return sorted(found)


def _unfinished(run: RunDir) -> str:
    return "running" if run.manifest.status == "running" else "unfinished"


def _tokens(usage: dict[str, float]) -> int:
    return round(usage.get("input_tokens", 0.0) + usage.get("output_tokens", 0.0))


def _turn_usage(turns: list[Any]) -> dict[str, float]:
    """Usage summed over turns (events or ``TurnView``): an episode's so far, before its line."""
    usage: dict[str, float] = {}
    for turn in turns:
        raw = turn.usage if isinstance(turn, TurnView) else turn.get("usage")
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            if isinstance(value, int | float):
                usage[key] = usage.get(key, 0.0) + value
    return usage


def _first_reason(record: EpisodeRecord) -> str | None:
    if record.outcome == "error":
        return record.error or (record.reasons[0] if record.reasons else None)
    return record.reasons[0] if record.reasons else None


def _seed_of(folder: Path) -> int | None:
    try:
        seed = json.loads((folder / "instance.json").read_text(encoding="utf-8")).get("seed")
    except (OSError, ValueError, AttributeError):
        return None
    return seed if isinstance(seed, int) else None


def load_run_view(run: RunDir) -> RunView:
    """The run at a glance: its manifest and one row per episode begun."""
    records = run.records()
    by_index = {r.index: r for r in records}
    known = cost_known(run)
    rows = []
    for index in episode_indices(run, records):
        record = by_index.get(index)
        if record is not None:
            rows.append(
                EpisodeRow(
                    index=index,
                    seed=record.seed,
                    outcome=record.outcome,
                    score=record.score,
                    steps=record.steps,
                    reason=_first_reason(record),
                    tokens=_tokens(record.usage),
                    cost_usd=cost_of(run, record.usage, known),
                )
            )
            continue
        # begun but no line yet: what its transcript says so far
        folder = run.episode_dir(index)
        turns = [e for e in read_jsonl(folder / "transcript.jsonl") if e.get("type") == "turn"]
        usage = _turn_usage(turns)
        rows.append(
            EpisodeRow(
                index=index,
                seed=_seed_of(folder),
                outcome=_unfinished(run),
                steps=len(turns),
                tokens=_tokens(usage),
                cost_usd=cost_of(run, usage, known),
            )
        )
    manifest = run.manifest
    last = records[-1] if records else None
    return RunView(
        run_id=manifest.run_id,
        path=str(run.path),
        model=manifest.model,
        preset=manifest.preset,
        status=manifest.status,
        created_at=manifest.created_at,
        done=len(records),
        planned=manifest.runs,
        executor=manifest.executor,
        metric=last.metric if last else None,
        threshold=last.threshold if last else None,
        # from the metric: an error's record has no score, so says nothing about its direction
        lower_is_better=last.metric in LOWER_IS_BETTER if last else False,
        cost_known=known,
        episodes=rows,
    )


def load_episode(
    run: RunDir, index: int, records: list[EpisodeRecord] | None = None
) -> EpisodeView:
    """Episode ``index`` in full; a ``UsageError`` if the run has no such episode.
    ``records``: the run's records when the caller has read them (many episodes, one read)."""
    records = run.records() if records is None else records
    record = next((r for r in records if r.index == index), None)
    folder = run.episode_dir(index)
    if record is None and not folder.is_dir():
        known = episode_indices(run, records)
        shown = f"{known[0]}..{known[-1]}" if known else "none yet"
        raise UsageError(f"run {run.run_id} has no episode {index} (episodes: {shown})")
    view = EpisodeView(
        run_id=run.run_id,
        model=run.manifest.model,
        index=index,
        seed=record.seed if record else _seed_of(folder),
        outcome=record.outcome if record else _unfinished(run),
        record=record,
        error=record.error if record else None,
    )
    _read_transcript(view, folder / "transcript.jsonl")
    usage = record.usage if record else _turn_usage(view.turns)
    view.tokens, view.cost_usd = _tokens(usage), cost_of(run, usage)
    _read_grade(view, folder / "grade.json")
    submission = folder / "submission"
    if submission.is_dir():
        view.submission_files = sorted(p.name for p in submission.iterdir() if p.is_file())
    return view


def _read_transcript(view: EpisodeView, path: Path) -> None:
    if not path.is_file():
        if view.record is not None:  # a finished episode has one; a starting one not yet
            view.problems.append("no transcript.jsonl")
        return
    calls: dict[str, ToolCallView] = {}
    step_of: dict[str, int] = {}
    recorded, printed = False, []  # the harness logs submissions (v2); what the output says
    for event in read_jsonl(path):
        kind = event.get("type")
        try:
            if kind == "begin":
                recorded = event.get("schema_version", 1) >= 2
                view.agent, view.system, view.task = (
                    event.get("agent"),
                    event.get("system"),
                    event.get("task"),
                )
            elif kind == "turn":
                turn = TurnView.model_validate(
                    {k: v for k, v in event.items() if k in ("step", "stop", "text", "usage")}
                )
                for raw in event.get("tool_calls") or []:
                    call = _tool_call(raw)
                    turn.tool_calls.append(call)
                    calls[call.id], step_of[call.id] = call, turn.step
                view.turns.append(turn)
            elif kind == "sandbox_call" and event.get("id") in calls:
                calls[event["id"]].sandbox = SandboxCall.model_validate(event, strict=False)
            elif kind == "submission" and event.get("id") in calls:
                view.submissions.append(
                    SubmitAttempt(
                        step=step_of[event["id"]],
                        call_id=event["id"],
                        accepted=bool(event.get("accepted")),
                        message=str(event.get("message", "")),
                    )
                )
            elif kind == "tool_result" and event.get("id") in calls:
                result = _tool_result(event)
                calls[event["id"]].result = result
                printed += _submit_attempts(result, event["id"], step_of[event["id"]])
            elif kind == "harness_fault":
                view.harness_fault = str(event.get("traceback", ""))
            elif kind == "error":
                view.error = view.error or str(event.get("message", ""))
        except (ValidationError, TypeError, KeyError) as exc:
            view.problems.append(f"transcript: a {kind} event could not be read: {exc}")
    if printed and not recorded:
        # A transcript from before the harness recorded submissions: what the tool output says,
        # which agent code could have printed itself.
        view.submissions = printed
        view.problems.append("submission attempts read from the tool output (an older transcript)")


def _tool_call(raw: dict[str, Any]) -> ToolCallView:
    tool_input = raw.get("input") if isinstance(raw.get("input"), dict) else {}
    code = tool_input.get("expression") if raw.get("name") == "python_expression" else None
    return ToolCallView(
        id=str(raw.get("id", "")),
        name=str(raw.get("name", "")),
        code=code if isinstance(code, str) else None,
        input=tool_input,
        cut_off=bool(raw.get("truncated", False)),
    )


def _tool_result(event: dict[str, Any]) -> ToolResultView:
    content = str(event.get("content", ""))
    cut = _TRUNCATED.search(content)
    return ToolResultView(
        content=content,
        is_error=bool(event.get("is_error", False)),
        truncated=cut is not None,
        dropped_chars=int(cut.group(1)) if cut else None,
        withheld=content.startswith(_WITHHELD),
    )


def _submit_attempts(result: ToolResultView, call_id: str, step: int) -> list[SubmitAttempt]:
    attempts = []
    for line in result.content.splitlines():
        for prefix, accepted in _SUBMIT_LINES:
            if line.startswith(prefix):
                attempts.append(
                    SubmitAttempt(step=step, call_id=call_id, accepted=accepted, message=line)
                )
                break
    return attempts


def _read_grade(view: EpisodeView, path: Path) -> None:
    if not path.is_file():
        return
    try:
        view.grade = Grade.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError) as exc:
        view.problems.append(f"grade.json could not be read: {str(exc).splitlines()[0]}")
