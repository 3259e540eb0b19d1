"""The grader's self-check: does the reward reward exactly the skill the task claims to teach?

Every local policy runs over K seeds through the same machinery as ``leakbench run``
(``execute_run``: sandbox, tools, pipeline audit, grade), one run per policy. Trap policies fall
into exactly one trap each and must never pass, never end in ``error`` (an infrastructure outcome
is left out of the pass rate and re-run: a free re-roll), and must have their own reason named in
nearly every episode: one of the failed-check codes they expect (``Policy.expect``), or for a
column trap "leak" with its own column in ``leaks_detected``. The honest ladder must be strictly
ordered by mean score, its pass rates must not fall with quality, and no honest policy may fail
any check but the score threshold. The oracle reference (the true probabilities, graded directly)
should pass nearly always.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leakbench.agents.local import POLICIES, PRIOR, LocalAgent
from leakbench.env.prompts import build_prompts
from leakbench.grading.grade import PipelineEvidence, grade
from leakbench.runner.run import QuietObserver, execute_run
from leakbench.sandbox import SandboxPool
from leakbench.settings import LOWER_IS_BETTER, Settings
from leakbench.stats import pass_rate
from leakbench.store.runs import EpisodeRecord, RunDir, utc_now
from leakbench.task.generate import make_instance
from leakbench.task.keys import new_key

PREPROCESSING = "preprocessing"  # the trap that is not a column: caught by fingerprint/refit
ORACLE = "oracle (reference)"
ORACLE_MIN_PASS = 0.95
NAMED_MIN = 0.96  # a trap's own reason must be named in at least this share of its episodes
HONEST_MAY_FAIL = frozenset({"threshold"})  # the only check an honest policy may fail


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
    leak_named: int | None = None  # traps: episodes whose failed checks name the trap's reason
    run_id: str | None = None
    failed_checks: dict[str, int] = field(default_factory=dict)  # code -> episodes it failed in
    expect: tuple[str, ...] = ()  # traps: the codes that name their own reason

    @property
    def errors(self) -> int:
        return self.outcomes.get("error", 0)


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
    linear: bool = False  # the family's logit is linear: the ladder uses Policy.linear_rank
    results_dir: str | None = None  # where the runs were kept (None: a temporary folder)

    def problems(self) -> list[str]:
        """What the self-check's acceptance criteria find wrong (empty: all good)."""
        found = []
        for row in self.rows:
            if row.role == "trap":
                found += _trap_problems(row)
            if row.role == "honest":
                for code, n in sorted(row.failed_checks.items()):
                    if code not in HONEST_MAY_FAIL:
                        found.append(
                            f"honest {row.policy} was flagged by check {code!r} in {n} of "
                            f"{row.episodes + row.errors} episodes"
                        )
            # Graded on the 200 public test rows (seed), even the Bayes-optimal scores pass only
            # ~40% of a threshold set there; only a holdout metric can ask the oracle to pass.
            holdout = self.metric.startswith("holdout")
            if row.role == "reference" and holdout and (row.pass_rate or 0.0) < ORACLE_MIN_PASS:
                rate = row.pass_rate or 0.0
                found.append(f"the oracle passes only {rate:.0%} (at least {ORACLE_MIN_PASS:.0%})")
        return found + self.ladder_problems()

    def rank(self, policy: str) -> int:
        """The policy's place on this family's honest ladder (0: not on it)."""
        p = POLICIES[policy]
        return p.linear_rank if self.linear else p.rank

    def ladder(self) -> list[PolicyRow]:
        """Honest policies in order of quality (low to high)."""
        ranked = [r for r in self.rows if r.role == "honest" and self.rank(r.policy)]
        return sorted(ranked, key=lambda r: self.rank(r.policy))

    def ladder_problems(self) -> list[str]:
        """Where the honest ladder is out of order: each step up must have a strictly better
        mean score (in the metric's direction) and a pass rate no lower."""
        found = []
        for low, high in itertools.pairwise(self.ladder()):
            a, b = low.mean_score, high.mean_score
            if a is None or b is None:
                found.append(f"honest ladder: no mean score for {low.policy} or {high.policy}")
            elif not (b < a if self.lower_is_better else b > a):
                found.append(
                    f"honest ladder out of order: {high.policy} (mean {self.metric} {b:.4f}) is "
                    f"not better than {low.policy} ({a:.4f}) below it"
                )
            if (high.pass_rate or 0.0) < (low.pass_rate or 0.0):
                found.append(
                    f"honest ladder: {high.policy} passes {high.pass_rate or 0.0:.0%}, less than "
                    f"{low.policy} ({low.pass_rate or 0.0:.0%}) below it"
                )
        return found

    def ladder_rises(self) -> bool:
        return not self.ladder_problems()

    def to_json(self) -> str:
        data = asdict(self)
        data["problems"] = self.problems()
        data["ladder"] = [r.policy for r in self.ladder()]
        data["ladder_rises"] = self.ladder_rises()
        return json.dumps(data, indent=2)


def _trap_problems(row: PolicyRow) -> list[str]:
    found = []
    if row.passed:
        found.append(f"{row.policy} passed {row.passed} of {row.episodes} episodes")
    if row.errors:
        found.append(
            f"{row.policy} ended {row.errors} episodes in error (an infrastructure outcome, "
            "left out of the pass rate and re-run: a free re-roll)"
        )
    # named in at least NAMED_MIN of its graded episodes (48 of 50), in integers
    if row.leak_named is not None and row.leak_named * 100 < NAMED_MIN * 100 * row.episodes:
        missing = row.episodes - row.leak_named
        what = " or ".join(row.expect) or "its reason"
        found.append(
            f"{row.policy}: its own reason ({what}) is not named in {missing} of "
            f"{row.episodes} episodes (at least {NAMED_MIN:.0%} needed)"
        )
    return found


def is_linear(settings: Settings) -> bool:
    """Whether every instance's logit is linear in the features (the seed family)."""
    family = settings.task.family
    return family.prior is None and not family.interactions and not family.nonlinear


def applicable(policy: str, settings: Settings) -> str | None:
    """Why ``policy`` does not apply to these settings (None: it does)."""
    p = POLICIES[policy]
    if p.leak == PREPROCESSING:
        if not (settings.grading.fingerprint or getattr(settings.grading, "refit_check", False)):
            return "grading.fingerprint and grading.refit_check are off"
    elif p.leak is not None and p.leak not in settings.task.leaks:
        return f"the preset has no {p.leak} leak"
    for need in p.needs:
        if need == PRIOR:
            # getattr: settings from before task.family.prior existed have none
            if getattr(settings.task.family, "prior", None) is None:
                return "the preset publishes its family (no task.family.prior)"
        elif need not in settings.task.leaks:
            return f"the preset has no {need} leak"
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
        linear=is_linear(settings),
    )
    # One secret key for every policy and the oracle: they all meet the same instances, so
    # their scores compare pair by pair, not through the noise of different draws.
    key = None if settings.task.public_seeds else new_key()
    with tempfile.TemporaryDirectory(prefix="leakbench-selfcheck-") as tmp:
        results = Path(keep_in) if keep_in is not None else Path(tmp)
        with SandboxPool() as pool:
            pool.start()
            for name in names:
                if name in skipped:
                    continue
                check.rows.append(
                    _run_policy(settings, name, seeds, results, pool, on_episode, key)
                )
    check.rows.append(oracle_row(settings, seeds, key))
    return check


def _run_policy(
    settings: Settings,
    name: str,
    seeds: int,
    results: Path,
    pool: SandboxPool,
    on_episode: Callable[[str, EpisodeRecord], None] | None,
    key: bytes | None,
) -> PolicyRow:
    run_settings = settings.with_overrides({"agent.model": f"local/{name}", "run.runs": seeds})
    run = RunDir.create(results, run_settings, ["leakbench", "selfcheck", name], key=key)
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
        if "fingerprint" in record.failed_checks:
            flagged.add(PREPROCESSING)
        detections.update(flagged)
        if record.outcome != "error" and names_own_reason(record, name, kinds):
            named += 1
    return _row(
        name,
        policy.role,
        policy.leak,
        records,
        dict(detections),
        named if policy.role == "trap" else None,
        run.run_id,
        policy.expect,
    )


def _kinds_of(run: RunDir, index: int) -> dict[str, str]:
    """Leak column -> kind for one episode (column names differ per seed when disguised)."""
    path = run.episode_dir(index) / "instance.json"
    try:
        columns = json.loads(path.read_text(encoding="utf-8"))["columns"]
    except (OSError, ValueError, KeyError):
        return {}
    return {c["name"]: c["leak_kind"] for c in columns if c.get("leak_kind")}


def names_own_reason(record: EpisodeRecord, policy: str, kinds: dict[str, str]) -> bool:
    """Whether the episode's failed checks name the trap's own reason (read from the codes,
    never from the sentences): "leak" with its own column in ``leaks_detected`` for a column
    trap, else any of the codes it expects."""
    p = POLICIES[policy]
    if p.leak is not None and p.leak != PREPROCESSING:
        own = {c for c, k in kinds.items() if k == p.leak}
        return "leak" in record.failed_checks and bool(own & set(record.leaks_detected))
    return any(code in record.failed_checks for code in p.expect)


def _row(
    name: str,
    role: str,
    leak: str | None,
    records: list[EpisodeRecord],
    detections: dict[str, int],
    named: int | None,
    run_id: str | None,
    expect: tuple[str, ...] = (),
) -> PolicyRow:
    outcomes = Counter(r.outcome for r in records)
    failed: Counter[str] = Counter()
    for r in records:
        failed.update(set(r.failed_checks))
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
        failed_checks=dict(failed),
        expect=expect,
    )


def oracle_row(settings: Settings, seeds: int, key: bytes | None) -> PolicyRow:
    """The true probabilities Phi(f/sd) of the private instances (``key``), graded directly
    with ``grade()`` on the same seeds.

    No sandboxed policy can know the hidden process, so the grader computes this reference from
    the private instance. The evidence is what a pipeline computing the true probabilities
    would produce: its own test and holdout probabilities, and shuffled-leak predictions equal
    to the unshuffled ones (it reads no leak). It has no recipe to refit: the refit checks
    are not measured for it.
    """
    records = []
    # Judged without the refit checks, which would otherwise (rightly) fail it as not measured.
    grading = settings.grading.model_copy(update={"refit_check": False})
    for i in range(seeds):
        seed = settings.task.seed + i
        instance = make_instance(settings.task, seed, key=key)
        evidence = PipelineEvidence(
            test_proba=instance.oracle_test,
            holdout_proba=instance.oracle_holdout,
            shuffled={c: instance.oracle_holdout for c in instance.leak_columns},
        )
        result = grade(instance, instance.oracle_test, grading, evidence)
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
                failed_checks=result.failed_checks,
                threshold=settings.grading.threshold,
                metric=settings.grading.metric,
                started_at=utc_now(),
                finished_at=utc_now(),
            )
        )
    return _row(ORACLE, "reference", None, records, {}, None, None)
