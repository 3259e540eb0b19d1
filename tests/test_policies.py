"""Local policies: honest ones find the leaks from the data alone, each trap uses exactly its leak.

The policies' code runs in-process here (fast); ``test_selfcheck.py`` runs them in the sandbox.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leakbench.agents.local import POLICIES
from leakbench.settings import SettingsSources, resolve
from leakbench.task.generate import make_instance
from leakbench.task.leaks import LEAK_KINDS

SMALL = {"task.n_holdout": 500}


def _task(preset: str):
    return resolve(SettingsSources(preset=preset, environ={}, flags=SMALL)).task


def _play(policy: str, instance) -> dict:
    """Run the policy's code the way the sandbox does; return its namespace and submission."""
    box: dict = {}
    ns = {
        "train_df": instance.train.copy(),
        "test_df": instance.test.copy(),
        "pd": pd,
        "np": np,
        "submit_answer": box.update,
    }
    for turn in POLICIES[policy].turns:
        for code in turn:
            exec(code, ns)
    ns["submission"] = box
    return ns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_find_leaks_needs_no_names(seed):
    inst = make_instance(_task("disguised"), seed)
    ns = _play("baseline", inst)
    found = ns["find_leaks"](inst.train)
    assert set(found) == set(inst.leak_columns) | set(inst.id_columns)


def test_baseline_drops_exactly_the_seed_leaks_on_the_seed_preset():
    inst = make_instance(_task("seed"), 3)
    ns = _play("baseline", inst)
    assert sorted(ns["find_leaks"](inst.train)) == sorted(inst.leak_columns)
    assert list(ns["X"].columns) == inst.task.family.columns()


def test_roles_and_trap_kinds_are_known():
    traps = {p.leak for p in POLICIES.values() if p.role == "trap"}
    assert traps == set(LEAK_KINDS) | {"preprocessing"}
    ranks = sorted(p.rank for p in POLICIES.values() if p.role == "honest" and p.rank)
    assert ranks == sorted(set(ranks)) and len(ranks) >= 3
    for name in ("baseline", "leaky", "partial", "oracle-like", "no-submit", "invalid"):
        assert name in POLICIES


@pytest.mark.parametrize("preset", ["default", "disguised"])
@pytest.mark.parametrize(
    "policy", [p for p, v in POLICIES.items() if v.role == "trap" and v.leak != "preprocessing"]
)
def test_each_trap_uses_exactly_its_leak(preset, policy):
    inst = make_instance(_task(preset), 1)
    ns = _play(policy, inst)
    kind = POLICIES[policy].leak
    used = [c for c in inst.leak_columns if c not in ns["drop"]]
    assert [inst.leak_kinds[c] for c in used] == [kind]
    pipe = ns["submission"]["pipeline"]
    base = pipe.predict_proba(inst.holdout)[:, 1]
    shuffled = inst.holdout.copy()
    shuffled[used[0]] = np.random.default_rng(0).permutation(shuffled[used[0]].to_numpy())
    assert np.max(np.abs(pipe.predict_proba(shuffled)[:, 1] - base)) > 1e-3


@pytest.mark.parametrize("policy", ["numerics-only", "baseline", "boosted", "tuned"])
def test_honest_policies_ignore_every_disguised_leak(policy):
    inst = make_instance(_task("disguised"), 2)
    pipe = _play(policy, inst)["submission"]["pipeline"]
    base = pipe.predict_proba(inst.holdout)[:, 1]
    for column in inst.leak_columns:
        shuffled = inst.holdout.copy()
        shuffled[column] = shuffled[column].sample(frac=1, random_state=0).to_numpy()
        assert np.array_equal(pipe.predict_proba(shuffled)[:, 1], base), column
