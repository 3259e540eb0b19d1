"""`leakbench selfcheck`: policies judged exactly as in a run; traps fail with their own reason
named (failed-check codes), honest policies only ever miss the threshold, the ladder is ordered."""

from __future__ import annotations

import json

import pytest

from leakbench.selfcheck import ORACLE, PolicyRow, SelfCheck, oracle_row, run_selfcheck
from leakbench.settings import SettingsSources, resolve

FAST = {"task.n_holdout": 1000}
TRAPS = [
    "trap-future-signal",
    "trap-global-mean",
    "trap-cat0-rate",
    "trap-proxy",
    "trap-missingness",
    "trap-target-encoding",
    "trap-entity",
    "trap-preprocessing",
]


def _settings(preset: str):
    return resolve(SettingsSources(preset=preset, environ={}, flags=FAST))


@pytest.fixture(scope="module")
def default_check():
    return run_selfcheck(_settings("default"), 2, policies=[*TRAPS, "baseline"])


def test_every_trap_fails_with_its_leak_named(default_check):
    rows = {r.policy: r for r in default_check.rows}
    for trap in TRAPS:
        row = rows[trap]
        assert row.episodes == 2 and row.passed == 0, trap
        assert row.leak_named == 2, trap
        if row.leak != "preprocessing":  # (refused at submission by the refit, or fingerprinted)
            assert row.detections == {row.leak: 2}, (trap, row.detections)
            assert row.failed_checks.get("leak") == 2, (trap, row.failed_checks)
    assert rows["baseline"].detections == {} and rows["baseline"].outcomes.get("error") is None
    assert set(rows["baseline"].failed_checks) <= {"threshold"}
    assert rows[ORACLE].pass_rate == 1.0 and rows[ORACLE].mean_score == 0.0
    assert default_check.problems() == []


def test_traps_without_their_leak_are_skipped_on_seed():
    check = run_selfcheck(
        _settings("seed"), 2, policies=["trap-proxy", "trap-formula", "trap-preprocessing"]
    )
    # no proxy leak on seed, and its family is published (no prior): nothing stale to submit
    assert set(check.skipped) == {"trap-proxy", "trap-formula"}
    (trap, oracle) = check.rows
    assert trap.policy == "trap-preprocessing" and trap.passed == 0 and trap.leak_named == 2
    assert oracle.policy == ORACLE


def test_oracle_reference_passes_and_is_flagged_by_nothing():
    from leakbench.task.keys import new_key

    row = oracle_row(_settings("default"), 3, new_key())
    assert row.passed == 3 and row.detections == {} and row.mean_score == 0.0


def test_cli_table_json_and_exit_codes(cli, tmp_path):
    args = ["--results-dir", tmp_path / "r", "selfcheck", "--seeds", "1", "--policy", "leaky"]
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["policy"] for r in data["rows"]] == ["leaky", ORACLE]
    assert data["problems"] == [] and not (tmp_path / "r").exists()  # temp folder by default
    bad = cli("selfcheck", "--policy", "local/nope")
    assert bad.exit_code == 2 and "unknown local policy 'nope'" in bad.stderr


def test_a_trap_that_passes_fails_the_selfcheck(cli, tmp_path):
    # with the leak audit, the fingerprint and the refit checks off (the refit predicts test
    # rows with label-free leak columns), the missingness trap is no longer caught
    config = tmp_path / "lax.toml"
    config.write_text(
        "[grading]\nfingerprint = false\nleak_audit = false\nrefit_check = false\nthreshold = 1.0\n"
    )
    result = cli(
        "--config",
        config,
        "selfcheck",
        "--seeds",
        "1",
        "--policy",
        "trap-missingness",
        "--keep",
    )
    assert result.exit_code == 1
    assert "trap-missingness passed 1 of 1 episodes" in result.stderr
    assert "local/trap-missingness" in result.stdout
    assert len(list((tmp_path / "results").iterdir())) == 1  # --keep: the run is in results/


def test_new_traps_fail_with_their_own_reason_and_rf_fix_is_clean():
    policies = ["trap-test-labels-lr", "trap-formula", "rf-fix"]
    check = run_selfcheck(_settings("default"), 2, policies=policies)
    rows = {r.policy: r for r in check.rows}
    for trap in ("trap-test-labels-lr", "trap-formula"):
        row = rows[trap]
        assert row.passed == 0 and row.errors == 0, (trap, row.outcomes)
        assert row.leak_named == 2, (trap, row.failed_checks)
        assert row.expect and set(row.expect) & set(row.failed_checks), (trap, row.failed_checks)
    assert rows["trap-test-labels-lr"].failed_checks.get("refit") == 2
    assert rows["trap-formula"].failed_checks.get("label_dependence") == 2
    forest = rows["rf-fix"]
    assert forest.episodes == 2 and set(forest.failed_checks) <= {"threshold"}, forest
    assert check.problems() == []


# -- the acceptance logic, on synthetic rows ------------------------------------------------------


def _row(policy, role, *, episodes=50, passed=0, mean=None, named=None, **kw) -> PolicyRow:
    outcomes = kw.pop("outcomes", {"failed": episodes - passed, "passed": passed})
    return PolicyRow(
        policy=policy,
        role=role,
        leak=kw.pop("leak", None),
        episodes=episodes,
        passed=passed,
        pass_rate=passed / episodes if episodes else None,
        interval=(0.0, 1.0),
        mean_score=mean,
        outcomes=outcomes,
        detections=kw.pop("detections", {}),
        leak_named=named,
        failed_checks=kw.pop("failed_checks", {}),
        expect=kw.pop("expect", ()),
    )


def _check(rows, lower_is_better=True) -> SelfCheck:
    return SelfCheck(
        preset="default",
        seeds=50,
        first_seed=0,
        metric="holdout_regret" if lower_is_better else "auroc",
        threshold=0.0442,
        lower_is_better=lower_is_better,
        rows=rows,
    )


def _ladder(means, rates=(0, 10, 45, 50)) -> list[PolicyRow]:
    names = ["numerics-only", "baseline", "boosted", "tuned"]  # ranks 1..4
    return [
        _row(n, "honest", passed=p, mean=m, failed_checks={"threshold": 50 - p})
        for n, m, p in zip(names, means, rates, strict=True)
    ]


def test_a_trap_must_be_named_in_96_percent_of_its_episodes():
    def trap(named):
        return _row("trap-test-labels-lr", "trap", named=named, expect=("refit",), failed_checks={})

    assert _check([trap(48)]).problems() == []  # 48 of 50 is enough
    (problem,) = _check([trap(47)]).problems()
    assert problem.startswith("trap-test-labels-lr: its own reason (refit) is not named in 3 of")


def test_a_trap_that_passes_or_ends_in_error_is_a_problem():
    row = _row(
        "trap-error",
        "trap",
        episodes=9,
        passed=1,
        named=9,
        expect=("pipeline_problem",),
        outcomes={"failed": 8, "passed": 1, "error": 1},
    )
    problems = _check([row]).problems()
    assert "trap-error passed 1 of 9 episodes" in problems
    assert any(p.startswith("trap-error ended 1 episodes in error") for p in problems)


def test_an_honest_policy_may_fail_only_the_threshold():
    rows = _ladder([0.08, 0.045, 0.03, 0.02])
    rows[2].failed_checks["refit"] = 2
    rows[3].failed_checks["leak"] = 1
    problems = _check(rows).problems()
    assert problems == [
        "honest boosted was flagged by check 'refit' in 2 of 50 episodes",
        "honest tuned was flagged by check 'leak' in 1 of 50 episodes",
    ]


def test_the_honest_ladder_must_be_strictly_ordered():
    assert _check(_ladder([0.08, 0.045, 0.03, 0.02])).problems() == []
    # regret: lower is better, so a tie or a rise one step up is out of order
    out = _check(_ladder([0.08, 0.045, 0.045, 0.02]))
    assert not out.ladder_rises()
    (problem,) = out.problems()
    assert problem.startswith("honest ladder out of order: boosted (mean holdout_regret 0.0450)")
    # for AUROC higher is better: the same numbers are upside down
    assert len(_check(_ladder([0.90, 0.92, 0.93, 0.94]), lower_is_better=False).problems()) == 0
    assert len(_check(_ladder([0.08, 0.045, 0.03, 0.02]), lower_is_better=False).problems()) == 3
    # pass rates may not fall with quality
    (problem,) = _check(_ladder([0.08, 0.045, 0.03, 0.02], rates=(0, 10, 45, 40))).problems()
    assert problem == "honest ladder: tuned passes 80%, less than boosted (90%) below it"
