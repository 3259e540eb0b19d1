"""The synthetic data family and the task instance built from it (SPEC §4.1–4.3, §4.5).

An instance is a function of (task settings, instance key, seed): ``task/keys.py`` turns the key
and seed into the instance's random streams. Under a prior (``task.family.prior``) the instance
first draws its own data-generating process (``task/prior.py``); after that the family, drawn or
fixed, is used the same way, so the oracle P(y=1|x) = Phi(f/sd) stays exact.

The draw order is part of the contract: with ``task.public_seeds`` (no key), instance ``seed=s``
of the seed preset equals the original project's ``make_problem(seed=s)`` value for value. One
``numpy.random.default_rng(seed)`` draws, in this order: train numerics, test numerics, then for
each categorical its train and its test codes, then the train noise and the test noise. The hidden
holdout is drawn after all of that, so adding it changed nothing the original produced; leak kinds
draw from streams of their own, and so do the process and the disguised naming of leak columns.
The family's richer knobs (interactions, nonlinear terms, intercept) draw nothing: they only add
deterministic terms to the logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.special import ndtr

from leakbench.settings import FamilySettings, TaskSettings
from leakbench.stats import auroc
from leakbench.task.keys import InstanceStreams
from leakbench.task.leaks import LEAK_KINDS, LeakContext
from leakbench.task.prior import draw_family

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
    leak_kinds: dict[str, str] = field(default_factory=dict)  # leak column -> leak kind
    id_columns: list[str] = field(default_factory=list)  # columns a kind added, role "id"
    # The process that made the data: drawn from the prior, or the fixed family. Private: it is
    # written only to private/process.json, never to instance.json. None when read from a folder
    # that does not record it.
    process: FamilySettings | None = None

    @cached_property
    def oracle_auroc(self) -> float:
        return auroc(self.y_test, self.oracle_test)

    @cached_property
    def holdout_oracle_auroc(self) -> float:
        return auroc(self.y_holdout, self.oracle_holdout)


def _draw_splits(
    rng: np.random.Generator,
    noise_rng: np.random.Generator,
    family: FamilySettings,
    sizes: list[int],
) -> list[tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
    """Draw several splits together, interleaved per draw kind (the original's order). The
    noise comes from ``noise_rng``: the same generator as ``rng`` in the public streams."""
    k = len(family.num_weights)
    numerics = [rng.normal(0, 1, size=(n, k)) for n in sizes]
    cats: list[list[np.ndarray]] = [[] for _ in sizes]
    for levels in family.cat_levels:
        for i, n in enumerate(sizes):
            cats[i].append(rng.integers(0, levels, size=n))
    noises = [noise_rng.normal(0, family.noise_sd, n) for n in sizes]
    return list(zip(numerics, cats, noises, strict=True))


# Centred (mean 0 under N(0, 1)) so that a term shifts no class balance.
_NONLINEAR = {
    "square": lambda v: v**2 - 1.0,
    "abs": lambda v: np.abs(v) - np.sqrt(2 / np.pi),
    "sin": np.sin,
}


def _split(
    family: FamilySettings, x: np.ndarray, cats: list[np.ndarray], noise: np.ndarray
) -> Split:
    logit = x @ np.asarray(family.num_weights)
    for codes, effects in zip(cats, family.cat_effects, strict=True):
        logit = logit + np.asarray(effects)[codes]
    for i, j, weight in family.interactions:
        logit = logit + weight * x[:, i] * x[:, j]
    for form, i, weight in family.nonlinear:
        logit = logit + weight * _NONLINEAR[form](x[:, i])
    if family.intercept:
        logit = logit + family.intercept
    frame = pd.DataFrame(x, columns=family.numeric_columns())
    for name, codes, levels in zip(
        family.categorical_columns(), cats, family.cat_levels, strict=True
    ):
        frame[name] = pd.Categorical(codes, categories=np.arange(levels, dtype=np.int64))
    return Split(frame, logit, noise)


def make_instance(task: TaskSettings, seed: int, *, key: bytes | None) -> Instance:
    """Generate instance ``seed`` of ``task`` from the secret instance ``key`` (deterministic in
    both). ``key=None`` means the public streams and needs ``task.public_seeds``."""
    if key is None and not task.public_seeds:
        raise ValueError(
            "make_instance needs the run's instance key (key=None is only for task.public_seeds)"
        )
    if key is not None and task.public_seeds:
        raise ValueError("task.public_seeds instances take no key (pass key=None)")
    streams = InstanceStreams(key, seed)
    family = draw_family(task.family, streams.process())
    sizes = [task.n_train, task.n_test]
    tr, te = (
        _split(family, *d) for d in _draw_splits(streams.features, streams.noise, family, sizes)
    )
    holdout_draws = _draw_splits(streams.holdout, streams.holdout, family, [task.n_holdout])
    (ho,) = (_split(family, *d) for d in holdout_draws)

    y_train, y_test, y_holdout = tr.target, te.target, ho.target
    train = tr.frame.copy()
    train[TARGET] = y_train
    test, holdout = te.frame.copy(), ho.frame.copy()
    leak_kinds: dict[str, str] = {}
    id_columns: list[str] = []
    for index, name in enumerate(task.leaks):
        kind = LEAK_KINDS[name]
        # Each kind gets its own stream keyed by (seed, position) so it never shifts the base draws.
        ctx = LeakContext(tr.frame, te.frame, ho.frame, y_train, y_test, streams.leak(index))
        cols = kind.compute(ctx)
        for extra in cols.extra:
            train[extra.name], test[extra.name], holdout[extra.name] = (
                extra.train,
                extra.test,
                extra.holdout,
            )
            id_columns.append(extra.name)
        train[kind.column], test[kind.column], holdout[kind.column] = (
            cols.train,
            cols.test,
            cols.holdout,
        )
        leak_kinds[kind.column] = name
    if task.leak_naming == "disguised":
        names = disguised_names(family, list(leak_kinds), streams.names())
        order = _disguised_order(family, list(test.columns), names)
        test, holdout = (f.rename(columns=names)[order] for f in (test, holdout))
        train = train.rename(columns=names)[[*order, TARGET]]
        leak_kinds = {names[c]: k for c, k in leak_kinds.items()}

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
        leak_columns=list(leak_kinds),
        leak_kinds=leak_kinds,
        id_columns=id_columns,
        process=family,
    )


def disguised_names(
    family: FamilySettings, columns: list[str], rng: np.random.Generator
) -> dict[str, str]:
    """Innocuous names for leak columns: they continue the numeric features' numbering
    (``num_5``, ``num_6``, ... after ``num_0..num_4``) in an order drawn from ``rng``."""
    k = family.n_numeric
    slots = rng.permutation(len(columns))
    return {c: f"num_{k + int(s)}" for c, s in zip(columns, slots, strict=True)}


def _disguised_order(
    family: FamilySettings, columns: list[str], names: dict[str, str]
) -> list[str]:
    # Disguised leaks sit among the numeric features, by number; categoricals and ids follow.
    renamed = [names.get(c, c) for c in columns]
    numeric = sorted(
        (c for c in renamed if c in names.values() or c in family.numeric_columns()),
        key=lambda c: int(c.split("_")[1]),
    )
    return numeric + [c for c in renamed if c not in numeric]
