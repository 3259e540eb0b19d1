"""The grader's self-check: does the reward reward exactly the skill the task claims to teach?

Every local policy runs over K seeds through the same machinery as ``leakbench run``
(``execute_run``: sandbox, tools, pipeline audit, grade), one run per policy. Trap policies fall
into exactly one leak each and must never pass, with their leak named in the reasons; the honest
ladder's pass rates should rise with quality; and the oracle reference (the true probabilities,
graded directly) should pass nearly always.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leakbench.agents.local import POLICIES, LocalAgent
from leakbench.grading.grade import PipelineEvidence, grade
from leakbench.runner.prompts import build_prompts
from leakbench.runner.run import QuietObserver, execute_run
from leakbench.sandbox import SandboxPool
from leakbench.settings import LOWER_IS_BETTER, Settings
from leakbench.stats import pass_rate
from leakbench.store.runs import EpisodeRecord, RunDir, utc_now
from leakbench.task.generate import make_instance

PREPROCESSING = "preprocessing"  # the trap that is not a column: caught by the fingerprint
ORACLE = "oracle (reference)"
ORACLE_MIN_PASS = 0.95


@dataclass
class PolicyRow:
    """One policy's results over the self-check's seeds."""

    policy: str
    role: str  # honest | trap | other | reference
    leak: str | None
    episodes: int
    passed: int
    pass_rate: float | None
    interval: tuple[float, float]
    mean_score: float | None
    outcomes: dict[str, int]
    detections: dict[str, int]  # leak kind (or "preprocessing") -> episodes it was flagged in
    leak_named: int | None = None  # traps: episodes whose reasons name the trap's leak
    run_id: str | None = None


@dataclass
class SelfCheck:
    preset: str
    seeds: int
    first_seed: int
    metric: str
    threshold: float
    lower_is_better: bool
    rows: list[PolicyRow]
    skipped: dict[str, str] = field(default_factory=dict)  # policy -> why it did not run
    results_dir: str | None = None  # where the runs were kept (None: a temporary folder)

    def problems(self) -> list[str]:
        """What the self-check's acceptance criteria find wrong (empty: all good)."""
        found = []
        for row in self.rows:
            if row.role == "trap":
                if row.passed:
                    found.append(f"{row.policy} passed {row.passed} of {row.episodes} episodes")
                if row.leak_named is not None and row.leak_named < row.episodes:
                    missing = row.episodes - row.leak_named
                    found.append(f"{row.policy}: its leak is not named in {missing} episodes")
            if row.role == "reference" and (row.pass_rate or 0.0) < ORACLE_MIN_PASS:
                rate = row.pass_rate or 0.0
                found.append(f"the oracle passes only {rate:.0%} (at least {ORACLE_MIN_PASS:.0%})")
        return found

    def ladder(self) -> list[PolicyRow]:
        """Honest policies in order of quality (low to high)."""
        ranked = [r for r in self.rows if r.role == "honest" and POLICIES[r.policy].rank]
        return sorted(ranked, key=lambda r: POLICIES[r.policy].rank)

    def ladder_rises(self) -> bool:
        rates = [r.pass_rate or 0.0 for r in self.ladder()]
        return all(a <= b for a, b in itertools.pairwise(rates))

    def to_json(self) -> str:
        data = asdict(self)
        data["problems"] = self.problems()
        data["ladder"] = [r.policy for r in self.ladder()]
        data["ladder_rises"] = self.ladder_rises()
        return json.dumps(data, indent=2)


def applicable(policy: str, settings: Settings) -> str | None:
    """Why ``policy`` does not apply to these settings (None: it does)."""
    leak = POLICIES[policy].leak
    if leak is None:
        return None
    if leak == PREPROCESSING:
        return None if settings.grading.fingerprint else "grading.fingerprint is off"
    if leak not in settings.task.leaks:
        return f"the preset has no {leak} leak"
    return None


def run_selfcheck(
    settings: Settings,
    seeds: int,
    *,
    policies: list[str] | None = None,
    keep_in: Path | None = None,
    on_episode: Callable[[str, EpisodeRecord], None] | None = None,
) -> SelfCheck:
    """Run every (chosen) policy over ``seeds`` instances and grade the oracle on the same ones.

    Runs go to ``keep_in`` (a results dir) when given, else to a temporary folder deleted at the
    end.
    """
    names = policies or list(POLICIES)
    skipped = {p: why for p in names if (why := applicable(p, settings)) is not None}
    grading = settings.grading
    check = SelfCheck(
        preset=settings.task.preset,
        seeds=seeds,
        first_seed=settings.task.seed,
        metric=grading.metric,
        threshold=grading.threshold,
        lower_is_better=grading.metric in LOWER_IS_BETTER,
        rows=[],
        skipped=skipped,
        results_dir=str(keep_in) if keep_in is not None else None,
    )
    with tempfile.TemporaryDirectory(prefix="leakbench-selfcheck-") as tmp:
        results = Path(keep_in) if keep_in is not None else Path(tmp)
        with SandboxPool() as pool:
            pool.start()
            for name in names:
                if name in skipped:
                    continue
                check.rows.append(_run_policy(settings, name, seeds, results, pool, on_episode))
    check.rows.append(oracle_row(settings, seeds))
    return check


def _run_policy(
    settings: Settings,
    name: str,
    seeds: int,
    results: Path,
    pool: SandboxPool,
    on_episode: Callable[[str, EpisodeRecord], None] | None,
) -> PolicyRow:
    run_settings = settings.with_overrides({"agent.model": f"local/{name}", "run.runs": seeds})
    run = RunDir.create(results, run_settings, ["leakbench", "selfcheck", name])
    result = execute_run(
        run,
        run_settings,
        lambda: LocalAgent(name),
        build_prompts(run_settings),
        pool,
        QuietObserver(None if on_episode is None else lambda record: on_episode(name, record)),
    )
    policy = POLICIES[name]
    records = sorted(result.records, key=lambda r: r.index)
    detections: Counter[str] = Counter()
    named = 0
    for record in records:
        kinds = _kinds_of(run, record.index)
        flagged = {kinds.get(c, c) for c in record.leaks_detected}
        if any(r.startswith("preprocessing fit on test rows") for r in record.reasons):
            flagged.add(PREPROCESSING)
        detections.update(flagged)
        if policy.leak is not None and _names_leak(record, policy.leak, kinds):
            named += 1
    return _row(
        name,
        policy.role,
        policy.leak,
        records,
        dict(detections),
        named if policy.role == "trap" else None,
        run.run_id,
    )


def _kinds_of(run: RunDir, index: int) -> dict[str, str]:
    """Leak column -> kind for one episode (column names differ per seed when disguised)."""
    path = run.episode_dir(index) / "instance.json"
    try:
        columns = json.loads(path.read_text(encoding="utf-8"))["columns"]
    except (OSError, ValueError, KeyError):
        return {}
    return {c["name"]: c["leak_kind"] for c in columns if c.get("leak_kind")}


def _names_leak(record: EpisodeRecord, leak: str, kinds: dict[str, str]) -> bool:
    if leak == PREPROCESSING:
        return any(r.startswith("preprocessing fit on test rows") for r in record.reasons)
    columns = [c for c, k in kinds.items() if k == leak]
    return any(c in r for c in columns for r in record.reasons)


def _row(
    name: str,
    role: str,
    leak: str | None,
    records: list[EpisodeRecord],
    detections: dict[str, int],
    named: int | None,
    run_id: str | None,
) -> PolicyRow:
    outcomes = Counter(r.outcome for r in records)
    rate = pass_rate(records)
    scores = [r.score for r in records if r.score is not None]
    return PolicyRow(
        policy=name,
        role=role,
        leak=leak,
        episodes=rate.graded,
        passed=rate.passed,
        pass_rate=rate.rate,
        interval=rate.interval,
        mean_score=sum(scores) / len(scores) if scores else None,
        outcomes=dict(outcomes),
        detections=detections,
        leak_named=named,
        run_id=run_id,
    )


def oracle_row(settings: Settings, seeds: int) -> PolicyRow:
    """The true probabilities Phi(f/sd), graded directly with ``grade()`` on the same seeds.

    The evidence is what a pipeline computing them would produce: its own test and holdout
    probabilities, and shuffled-leak predictions equal to the unshuffled ones (it reads no leak).
    """
    records = []
    for i in range(seeds):
        seed = settings.task.seed + i
        instance = make_instance(settings.task, seed)
        evidence = PipelineEvidence(
            test_proba=instance.oracle_test,
            holdout_proba=instance.oracle_holdout,
            shuffled={c: instance.oracle_holdout for c in instance.leak_columns},
        )
        result = grade(instance, instance.oracle_test, settings.grading, evidence)
        records.append(
            EpisodeRecord(
                index=i,
                seed=seed,
                model="oracle",
                preset=settings.task.preset,
                outcome=result.outcome,
                passed=result.passed,
                score=result.score,
                reasons=result.reasons,
                leaks_detected=result.leaks_detected,
                threshold=settings.grading.threshold,
                metric=settings.grading.metric,
                started_at=utc_now(),
                finished_at=utc_now(),
            )
        )
    return _row(ORACLE, "reference", None, records, {}, None, None)
