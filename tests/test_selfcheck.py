"""`leakbench selfcheck`: policies judged exactly as in a run; traps fail with their leak named."""

from __future__ import annotations

import json

import pytest

from leakbench.selfcheck import ORACLE, oracle_row, run_selfcheck
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
        assert row.detections == {row.leak: 2}, (trap, row.detections)
    assert rows["baseline"].detections == {} and rows["baseline"].outcomes.get("error") is None
    assert rows[ORACLE].pass_rate == 1.0 and rows[ORACLE].mean_score == 0.0
    assert default_check.problems() == []


def test_traps_without_their_leak_are_skipped_on_seed():
    check = run_selfcheck(_settings("seed"), 2, policies=["trap-proxy", "trap-preprocessing"])
    assert set(check.skipped) == {"trap-proxy"}
    (trap, oracle) = check.rows
    assert trap.policy == "trap-preprocessing" and trap.passed == 0 and trap.leak_named == 2
    assert oracle.policy == ORACLE


def test_oracle_reference_passes_and_is_flagged_by_nothing():
    row = oracle_row(_settings("default"), 3)
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
    # with the leak audit and the fingerprint off, the preprocessing trap is no longer caught
    config = tmp_path / "lax.toml"
    config.write_text("[grading]\nfingerprint = false\nleak_audit = false\nthreshold = 1.0\n")
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
