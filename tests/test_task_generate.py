from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from leakbench.settings import FamilySettings, SettingsSources, TaskSettings, resolve
from leakbench.task.generate import make_instance
from leakbench.task.keys import new_key
from leakbench.task.prior import logit_variance

# The original project's numbers need the public streams.
SEED_TASK = TaskSettings(public_seeds=True)
DEFAULT_TASK = resolve(SettingsSources(preset="default", environ={})).task
KEY = bytes(range(32))

# Values of the original project's make_problem(seed) (draw order: train numerics, test numerics,
# cat0 train/test, cat1 train/test, noise train/test), pinned to the last digit.
FIRST_TRAIN_ROW = {
    0: {
        "num_0": 0.1257302210933933,
        "num_1": -0.1321048632913019,
        "num_2": 0.6404226504432821,
        "num_3": 0.10490011715303971,
        "num_4": -0.535669373161111,
        "cat0": 1,
        "cat1": 0,
        "target": 1,
        "leak_future_signal": 1,
        "leak_global_target_mean": 0.528,
        "leak_cat0_rate_full": 0.6410256410256411,
    },
    42: {
        "num_0": 0.30471707975443135,
        "num_1": -1.0399841062404955,
        "num_2": 0.7504511958064572,
        "num_3": 0.9405647163912139,
        "num_4": -1.9510351886538364,
        "cat0": 2,
        "cat1": 0,
        "target": 1,
        "leak_future_signal": 1,
        "leak_global_target_mean": 0.482,
        "leak_cat0_rate_full": 0.4745098039215686,
    },
}


@pytest.mark.parametrize("seed", [0, 42])
def test_reproduces_the_original_generator(seed):
    inst = make_instance(SEED_TASK, seed, key=None)
    row = inst.train.iloc[0]
    for column, value in FIRST_TRAIN_ROW[seed].items():
        assert row[column] == value, column
    assert inst.y_test[0] == 1


def test_frames_shapes_dtypes_and_roles():
    inst = make_instance(SEED_TASK, 3, key=None)
    assert inst.train.shape == (800, 11) and inst.test.shape == (200, 10)
    assert "target" not in inst.test.columns and "target" not in inst.holdout.columns
    assert list(inst.test.columns) == list(inst.holdout.columns)
    assert isinstance(inst.train["cat0"].dtype, pd.CategoricalDtype)
    assert list(inst.train["cat1"].cat.categories) == [0, 1, 2]
    assert inst.leak_columns == [
        "leak_future_signal",
        "leak_global_target_mean",
        "leak_cat0_rate_full",
    ]
    assert len(inst.holdout) == SEED_TASK.n_holdout


def test_same_seed_same_frames_other_seed_other_frames():
    a, b, c = (
        make_instance(SEED_TASK, 7, key=None),
        make_instance(SEED_TASK, 7, key=None),
        make_instance(SEED_TASK, 8, key=None),
    )
    pd.testing.assert_frame_equal(a.train, b.train, check_exact=True)
    pd.testing.assert_frame_equal(a.holdout, b.holdout, check_exact=True)
    assert not a.train["num_0"].equals(c.train["num_0"])


def test_seed_leaks_are_what_the_original_describes():
    inst = make_instance(SEED_TASK, 11, key=None)
    y_all = np.concatenate([inst.train["target"], inst.y_test])
    assert (inst.train["leak_future_signal"] == inst.train["target"]).all()
    assert (inst.test["leak_future_signal"].to_numpy() == inst.y_test).all()
    assert (inst.test["leak_global_target_mean"] == y_all.mean()).all()
    cat_all = np.concatenate([inst.train["cat0"].astype(int), inst.test["cat0"].astype(int)])
    for level in range(4):
        rate = y_all[cat_all == level].mean()
        assert np.allclose(inst.test.loc[inst.test["cat0"] == level, "leak_cat0_rate_full"], rate)


def test_holdout_leaks_carry_no_label_information():
    inst = make_instance(SEED_TASK, 5, key=None)
    h = inst.holdout
    # the future signal in the holdout is independent of the holdout labels
    assert abs(roc_auc_score(inst.y_holdout, h["leak_future_signal"]) - 0.5) < 0.05
    # the global mean is the train-only one, up to bootstrap error (so it varies for the audit)
    assert abs(h["leak_global_target_mean"].mean() - inst.train["target"].mean()) < 0.002
    assert abs(np.corrcoef(h["leak_global_target_mean"], inst.y_holdout)[0, 1]) < 0.05
    # the category rates are the train-only ones
    train_rates = inst.train.groupby("cat0", observed=False)["target"].mean()
    expected = h["cat0"].map(train_rates).astype(float)
    assert np.allclose(h["leak_cat0_rate_full"], expected)


def test_oracle_is_the_exact_conditional_probability():
    inst = make_instance(SEED_TASK, 2, key=None)
    x = inst.test[[f"num_{i}" for i in range(5)]].to_numpy()
    f = (
        x @ np.array([1.2, -0.8, 0.6, 0.4, -0.2])
        + 0.5 * (inst.test["cat0"].astype(int) == 1)
        - 0.3 * (inst.test["cat1"].astype(int) == 2)
    )
    assert np.allclose(inst.oracle_test, norm.cdf(f / 0.8), atol=1e-12)
    assert inst.oracle_auroc == pytest.approx(roc_auc_score(inst.y_test, inst.oracle_test))
    # calibration: over many holdout rows the mean oracle probability matches the label rate
    assert abs(inst.oracle_holdout.mean() - inst.y_holdout.mean()) < 0.03


def test_family_knobs_change_the_data_without_new_code():
    family = FamilySettings(num_weights=[2.0, 1.0], cat_levels=[3], cat_effects=[[0.0, 1.0, -1.0]])
    task = TaskSettings(family=family, leaks=["future_signal", "cat0_rate_full"], n_holdout=50)
    inst = make_instance(task, 0, key=KEY)
    assert list(inst.test.columns) == [
        "num_0",
        "num_1",
        "cat0",
        "leak_future_signal",
        "leak_cat0_rate_full",
    ]
    assert list(inst.train["cat0"].cat.categories) == [0, 1, 2]


def test_same_key_and_seed_give_identical_frames_other_key_other_instance():
    a, b = make_instance(DEFAULT_TASK, 7, key=KEY), make_instance(DEFAULT_TASK, 7, key=KEY)
    for name in ("train", "test", "holdout"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert np.array_equal(a.y_test, b.y_test) and a.process == b.process
    other = make_instance(DEFAULT_TASK, 7, key=new_key())
    assert not np.array_equal(a.train["num_0"], other.train["num_0"])
    assert not np.array_equal(a.y_holdout, other.y_holdout)
    assert a.process != other.process  # a process of its own, drawn with the key
    assert a.process.num_weights != other.process.num_weights


def test_keyed_seed_preset_is_not_the_public_instance():
    keyed = make_instance(TaskSettings(), 0, key=KEY)
    public = make_instance(SEED_TASK, 0, key=None)
    assert keyed.train.iloc[0]["num_0"] != public.train.iloc[0]["num_0"]
    assert keyed.process == public.process == TaskSettings().family  # no prior: fixed family


def test_a_key_is_required_unless_public_seeds():
    with pytest.raises(ValueError, match="needs the run's instance key"):
        make_instance(TaskSettings(), 0, key=None)
    with pytest.raises(ValueError, match="take no key"):
        make_instance(SEED_TASK, 0, key=KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        make_instance(TaskSettings(), 0, key=b"short")
    with pytest.raises(TypeError):
        make_instance(TaskSettings(), 0)  # type: ignore[call-arg]


def test_prior_draws_magnitudes_with_random_signs_and_places_and_fixed_variance():
    processes = [make_instance(DEFAULT_TASK, s, key=KEY).process for s in range(12)]
    prior = DEFAULT_TASK.family.prior
    variances = {round(logit_variance(p), 12) for p in processes}
    assert len(variances) == 1  # every instance is equally hard
    assert len({tuple(p.num_weights) for p in processes}) == 12
    for p in processes:
        assert p.prior is None and p.cat_levels == [4, 3] and p.noise_sd == 0.8
        assert sorted(abs(w) for w in p.num_weights) == sorted(prior.num_weights)
        pairs = [(i, j) for i, j, _ in p.interactions]
        assert len(set(pairs)) == 2 and all(i != j for i, j in pairs)
        assert sorted(abs(w) for *_, w in p.interactions) == sorted(prior.interactions)
        assert len({i for _, i, _ in p.nonlinear}) == 2
        assert [(f, abs(w)) for f, _, w in p.nonlinear] == [tuple(t) for t in prior.nonlinear]
        for effects, values in zip(p.cat_effects, prior.cat_effects, strict=True):
            flipped = sorted(-v for v in values)
            assert sorted(effects) in (sorted(values), flipped)
        assert -0.25 <= p.intercept <= 0.25
    # signs and placement really vary
    assert {np.sign(p.num_weights[0]) for p in processes} == {-1.0, 1.0}
    assert len({p.nonlinear[0][1] for p in processes}) > 2


def test_the_drawn_process_is_what_the_oracle_uses():
    inst = make_instance(DEFAULT_TASK, 3, key=KEY)
    p = inst.process
    x = inst.holdout[[f"num_{i}" for i in range(6)]].to_numpy()
    f = x @ np.asarray(p.num_weights) + p.intercept
    for j, effects in enumerate(p.cat_effects):
        f = f + np.asarray(effects)[inst.holdout[f"cat{j}"].astype(int)]
    for i, j, w in p.interactions:
        f = f + w * x[:, i] * x[:, j]
    g = {"square": lambda v: v**2 - 1, "abs": lambda v: np.abs(v) - np.sqrt(2 / np.pi)}
    for form, i, w in p.nonlinear:
        f = f + w * g[form](x[:, i])
    assert np.allclose(inst.oracle_holdout, norm.cdf(f / 0.8), atol=1e-12)
