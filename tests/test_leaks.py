"""The leak catalogue: what each kind puts in train, public test and holdout; the family knobs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from leakbench.settings import FamilySettings, TaskSettings
from leakbench.task.files import read_instance, write_instance
from leakbench.task.generate import make_instance
from leakbench.task.leaks import LEAK_KINDS

ALL = list(LEAK_KINDS)
# public streams: the bounds below were checked on the original project's instances
TASK = TaskSettings(leaks=ALL, n_holdout=3000, public_seeds=True)


@pytest.fixture(scope="module")
def inst():
    return make_instance(TASK, 4, key=None)


def _auc(y, x):
    return roc_auc_score(y, x)


def test_adding_leaks_never_changes_the_base_draws(inst):
    clean = make_instance(TaskSettings(leaks=[], n_holdout=3000, public_seeds=True), 4, key=None)
    features = [*TASK.family.columns(), "target"]
    pd.testing.assert_frame_equal(inst.train[features], clean.train, check_exact=True)
    pd.testing.assert_frame_equal(inst.holdout[TASK.family.columns()], clean.holdout)
    assert (inst.y_holdout == clean.y_holdout).all() and (inst.y_test == clean.y_test).all()


def test_noisy_proxy_tracks_the_label_in_train_and_test_only(inst):
    col = "leak_followup_score"
    assert _auc(inst.train["target"], inst.train[col]) > 0.85
    assert _auc(inst.y_test, inst.test[col]) > 0.85
    assert abs(_auc(inst.y_holdout, inst.holdout[col]) - 0.5) < 0.05
    assert inst.holdout[col].std() > 0.4  # it still varies, so the audit can see its use


def test_missingness_tracks_the_label_in_train_and_test_only(inst):
    col = "leak_lab_result"
    miss = inst.train[col].isna()
    y = inst.train["target"]
    assert miss[y == 1].mean() - miss[y == 0].mean() > 0.3
    test_miss = inst.test[col].isna().to_numpy()
    assert test_miss[inst.y_test == 1].mean() - test_miss[inst.y_test == 0].mean() > 0.2
    hmiss = inst.holdout[col].isna().to_numpy()
    assert abs(hmiss[inst.y_holdout == 1].mean() - hmiss[inst.y_holdout == 0].mean()) < 0.04
    assert 0.2 < hmiss.mean() < 0.45  # the train's overall rate


def test_id_target_encoding_includes_the_rows_own_label(inst):
    col, ids = "leak_customer_id_rate", "customer_id"
    assert ids in inst.id_columns and ids not in inst.leak_columns
    both = pd.DataFrame(
        {
            "id": np.concatenate([inst.train[ids], inst.test[ids]]),
            "y": np.concatenate([inst.train["target"], inst.y_test]),
        }
    )
    rate = both.groupby("id")["y"].transform("mean").to_numpy()
    assert np.allclose(inst.train[col], rate[: len(inst.train)])
    assert np.allclose(inst.test[col], rate[len(inst.train) :])
    # holdout: the train-only rate of its id (base rate for ids train never saw)
    train_rate = inst.train.groupby(ids)["target"].mean()
    expected = inst.holdout[ids].map(train_rate).fillna(inst.train["target"].mean())
    assert np.allclose(inst.holdout[col], expected)
    assert abs(_auc(inst.y_holdout, inst.holdout[col]) - 0.5) < 0.05


def test_entity_overlap_lets_an_id_memory_score_on_test_only(inst):
    col = "leak_entity_id"
    memory = inst.train.groupby(col)["target"].mean()
    prior = inst.train["target"].mean()
    test_guess = inst.test[col].map(memory).fillna(prior)
    holdout_guess = inst.holdout[col].map(memory).fillna(prior)
    assert _auc(inst.y_test, test_guess) > 0.85
    assert abs(_auc(inst.y_holdout, holdout_guess) - 0.5) < 0.05
    assert inst.holdout[col].isin(set(inst.train[col])).mean() > 0.95  # known ids reused


def test_global_mean_holdout_is_the_train_rate_up_to_sampling_error(inst):
    h = inst.holdout["leak_global_target_mean"]
    assert abs(h.mean() - inst.train["target"].mean()) < 0.002
    assert 0.005 < h.std() < 0.03
    assert abs(np.corrcoef(h, inst.y_holdout)[0, 1]) < 0.05


def test_family_knobs_keep_the_oracle_exact():
    family = FamilySettings(
        num_weights=[1.0, -0.5, 0.3],
        cat_levels=[2],
        cat_effects=[[0.0, 0.4]],
        interactions=[(0, 1, 0.7)],
        nonlinear=[("square", 2, 0.5), ("abs", 0, -0.3), ("sin", 1, 0.2)],
        intercept=-0.4,
        noise_sd=0.6,
    )
    inst = make_instance(
        TaskSettings(family=family, leaks=[], n_holdout=100, public_seeds=True), 1, key=None
    )
    x = inst.test[["num_0", "num_1", "num_2"]].to_numpy()
    f = (
        x @ np.array([1.0, -0.5, 0.3])
        + 0.4 * (inst.test["cat0"].astype(int) == 1)
        + 0.7 * x[:, 0] * x[:, 1]
        + 0.5 * (x[:, 2] ** 2 - 1)
        - 0.3 * (np.abs(x[:, 0]) - np.sqrt(2 / np.pi))
        + 0.2 * np.sin(x[:, 1])
        - 0.4
    )
    assert np.allclose(inst.oracle_test, norm.cdf(f / 0.6), atol=1e-12)


def test_family_knobs_are_validated():
    with pytest.raises(ValueError, match="no feature num_7"):
        FamilySettings(interactions=[(0, 7, 1.0)])


def test_disguised_names_hide_the_leaks_among_the_features(tmp_path):
    task = TASK.model_copy(update={"leak_naming": "disguised"})
    a, b, other = (
        make_instance(task, 4, key=None),
        make_instance(task, 4, key=None),
        make_instance(task, 5, key=None),
    )
    assert a.leak_columns == b.leak_columns and set(a.leak_kinds.values()) == set(ALL)
    assert not any(c.startswith("leak_") for c in a.train.columns)
    assert a.leak_kinds != other.leak_kinds  # the names depend on the seed
    numerics = [c for c in a.test.columns if c.startswith("num_")]
    assert numerics == [f"num_{i}" for i in range(5 + len(ALL))]
    # same values as the explicit instance, only renamed
    explicit = make_instance(TASK, 4, key=None)
    for column, kind in a.leak_kinds.items():
        original = LEAK_KINDS[kind].column
        assert np.array_equal(a.holdout[column], explicit.holdout[original], equal_nan=True)
    manifest = write_instance(a, tmp_path / "i", "h")
    roles = {c.name: (c.role, c.leak_kind) for c in manifest.columns}
    assert all(roles[c] == ("leak", k) for c, k in a.leak_kinds.items())
    assert roles["customer_id"] == ("id", None)
    back = read_instance(tmp_path / "i")
    assert back.leak_kinds == a.leak_kinds and back.id_columns == ["customer_id"]
    pd.testing.assert_frame_equal(back.train, a.train, check_exact=True)
