"""Leak kinds: small plug-ins that say how a leaky column looks in train, public test and holdout.

Each kind computes its column three times. In ``train_df`` and ``test_df`` it carries label
information the way the original task's leaks do. In the hidden holdout it is computed the way it
would be known at prediction time, so it carries no label information: a pipeline that relies on it
loses skill there, and shuffling it changes the pipeline's predictions (the leak audit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LeakContext:
    """What a leak kind may look at. Frames hold the clean features only (no target, no leaks)."""

    train: pd.DataFrame
    test: pd.DataFrame
    holdout: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    rng: np.random.Generator  # the kind's own stream: adding a leak never shifts other draws


@dataclass(frozen=True)
class LeakColumns:
    train: np.ndarray
    test: np.ndarray
    holdout: np.ndarray


@dataclass(frozen=True)
class LeakKind:
    name: str
    column: str  # the explicit column name
    description: str  # what the column is and why it leaks, for the README and prompts
    compute: Callable[[LeakContext], LeakColumns]
    requires: tuple[str, ...] = ()  # feature columns the kind is computed from


LEAK_KINDS: dict[str, LeakKind] = {}


def register(kind: LeakKind) -> LeakKind:
    if kind.name in LEAK_KINDS:
        raise ValueError(f"leak kind '{kind.name}' is registered twice")
    LEAK_KINDS[kind.name] = kind
    return kind


def _future_signal(ctx: LeakContext) -> LeakColumns:
    # The outcome itself, recorded after the fact. At prediction time it does not exist yet; the
    # holdout gets a draw with the train base rate, which has the column's marginal but no signal.
    base_rate = float(ctx.y_train.mean())
    holdout = (ctx.rng.random(len(ctx.holdout)) < base_rate).astype(np.int64)
    return LeakColumns(ctx.y_train.copy(), ctx.y_test.copy(), holdout)


def _global_target_mean(ctx: LeakContext) -> LeakColumns:
    full_mean = float(np.concatenate([ctx.y_train, ctx.y_test]).mean())
    n_train, n_test = len(ctx.y_train), len(ctx.y_test)
    train_mean = float(ctx.y_train.mean())
    return LeakColumns(
        np.full(n_train, full_mean),
        np.full(n_test, full_mean),
        np.full(len(ctx.holdout), train_mean),
    )


def _cat0_rate_full(ctx: LeakContext) -> LeakColumns:
    # Per-level target rate over train+test rows, so each test row's own label is in its value.
    cat_train = ctx.train["cat0"].cat.codes.to_numpy()
    cat_test = ctx.test["cat0"].cat.codes.to_numpy()
    levels = len(ctx.train["cat0"].cat.categories)
    full_rates = _level_rates(
        np.concatenate([cat_train, cat_test]), np.concatenate([ctx.y_train, ctx.y_test]), levels
    )
    train_rates = _level_rates(cat_train, ctx.y_train, levels)
    cat_holdout = ctx.holdout["cat0"].cat.codes.to_numpy()
    return LeakColumns(full_rates[cat_train], full_rates[cat_test], train_rates[cat_holdout])


def _level_rates(codes: np.ndarray, y: np.ndarray, levels: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=levels).astype(float)
    positives = np.bincount(codes, weights=y.astype(float), minlength=levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return positives / counts  # NaN for an empty level, as pandas' groupby mean gives


register(
    LeakKind(
        "future_signal",
        "leak_future_signal",
        "the target itself, recorded after the outcome",
        _future_signal,
    )
)
register(
    LeakKind(
        "global_target_mean",
        "leak_global_target_mean",
        "the target mean over train and test rows together (a constant)",
        _global_target_mean,
    )
)
register(
    LeakKind(
        "cat0_rate_full",
        "leak_cat0_rate_full",
        "the target rate of the row's cat0 level over train and test rows, own label included",
        _cat0_rate_full,
        requires=("cat0",),
    )
)
