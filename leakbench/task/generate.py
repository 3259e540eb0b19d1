"""The synthetic data family and the task instance built from it (SPEC §4.1–4.3).

The draw order is part of the contract: instance ``seed=s`` of the seed preset equals the original
project's ``make_problem(seed=s)`` value for value. One ``numpy.random.default_rng(seed)`` draws, in
this order: train numerics, test numerics, then for each categorical its train and its test codes,
then the train noise and the test noise. The hidden holdout is drawn after all of that, so adding it
changed nothing the original produced; leak kinds draw from streams of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.special import ndtr
from sklearn.metrics import roc_auc_score

from leakbench.settings import FamilySettings, TaskSettings
from leakbench.task.leaks import LEAK_KINDS, LeakContext

TARGET = "target"


@dataclass(frozen=True)
class Split:
    """Clean features of one split, its clean logit ``f`` and the label noise."""

    frame: pd.DataFrame
    logit: np.ndarray
    noise: np.ndarray

    @property
    def target(self) -> np.ndarray:
        # The original thresholded sigmoid(f + noise) at 0.5; doing the same keeps even the
        # float edge case (|f + noise| below 1e-16) bit-identical.
        with np.errstate(over="ignore"):
            proba = 1 / (1 + np.exp(-(self.logit + self.noise)))
        return (proba > 0.5).astype(np.int64)


@dataclass
class Instance:
    """One task instance: what the agent sees and the answer key the grader keeps."""

    seed: int
    task: TaskSettings
    train: pd.DataFrame  # features, target, leak columns
    test: pd.DataFrame  # features and leak columns; no target
    y_test: np.ndarray
    oracle_test: np.ndarray  # P(target=1 | x) for each test row
    holdout: pd.DataFrame  # features and leak columns computed without label information
    y_holdout: np.ndarray
    oracle_holdout: np.ndarray
    leak_columns: list[str]

    @cached_property
    def oracle_auroc(self) -> float:
        return float(roc_auc_score(self.y_test, self.oracle_test))

    @cached_property
    def holdout_oracle_auroc(self) -> float:
        return float(roc_auc_score(self.y_holdout, self.oracle_holdout))

    @property
    def feature_columns(self) -> list[str]:
        return self.task.family.columns()


def _draw_splits(
    rng: np.random.Generator, family: FamilySettings, sizes: list[int]
) -> list[tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
    """Draw several splits together, interleaved per draw kind (the original's order)."""
    k = len(family.num_weights)
    numerics = [rng.normal(0, 1, size=(n, k)) for n in sizes]
    cats: list[list[np.ndarray]] = [[] for _ in sizes]
    for levels in family.cat_levels:
        for i, n in enumerate(sizes):
            cats[i].append(rng.integers(0, levels, size=n))
    noises = [rng.normal(0, family.noise_sd, n) for n in sizes]
    return list(zip(numerics, cats, noises, strict=True))


def _split(
    family: FamilySettings, x: np.ndarray, cats: list[np.ndarray], noise: np.ndarray
) -> Split:
    logit = x @ np.asarray(family.num_weights)
    for codes, effects in zip(cats, family.cat_effects, strict=True):
        logit = logit + np.asarray(effects)[codes]
    frame = pd.DataFrame(x, columns=family.numeric_columns())
    for name, codes, levels in zip(
        family.categorical_columns(), cats, family.cat_levels, strict=True
    ):
        frame[name] = pd.Categorical(codes, categories=np.arange(levels, dtype=np.int64))
    return Split(frame, logit, noise)


def make_instance(task: TaskSettings, seed: int) -> Instance:
    """Generate instance ``seed`` of the family ``task`` describes (deterministic)."""
    family = task.family
    rng = np.random.default_rng(seed)
    tr, te = (_split(family, *d) for d in _draw_splits(rng, family, [task.n_train, task.n_test]))
    (ho,) = (_split(family, *d) for d in _draw_splits(rng, family, [task.n_holdout]))

    y_train, y_test, y_holdout = tr.target, te.target, ho.target
    train = tr.frame.copy()
    train[TARGET] = y_train
    test, holdout = te.frame.copy(), ho.frame.copy()
    leak_columns = []
    for index, name in enumerate(task.leaks):
        kind = LEAK_KINDS[name]
        # Each kind gets its own stream keyed by (seed, position) so it never shifts the base draws.
        ctx = LeakContext(
            tr.frame, te.frame, ho.frame, y_train, y_test, np.random.default_rng([seed, 1, index])
        )
        cols = kind.compute(ctx)
        train[kind.column], test[kind.column], holdout[kind.column] = (
            cols.train,
            cols.test,
            cols.holdout,
        )
        leak_columns.append(kind.column)

    sd = family.noise_sd
    return Instance(
        seed=seed,
        task=task,
        train=train,
        test=test,
        y_test=y_test,
        oracle_test=ndtr(te.logit / sd),
        holdout=holdout,
        y_holdout=y_holdout,
        oracle_holdout=ndtr(ho.logit / sd),
        leak_columns=leak_columns,
    )
