"""Leak kinds: small plug-ins that say how a leaky column looks in train, public test and holdout.

Each kind computes its column three times. In ``train_df`` and ``test_df`` it carries label
information the way the original task's leaks do. In the hidden holdout it is computed the way it
would be known at prediction time, so it carries no label information: a pipeline that relies on it
loses skill there. Where it can, the holdout column still varies from row to row, so that shuffling
it changes the predictions of a pipeline that reads it: that is what the leak audit measures.

A kind may also add plain feature columns it is built from (an id it encodes); they are recorded
with their own role and are not audited. Preprocessing fit on train+test is the one leak that is
not a column: the fingerprint check (``grading/fingerprint.py``) catches it.
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
class ExtraColumn:
    """A non-leak column a kind adds (e.g. the id it encodes), placed before its leak column."""

    name: str
    role: str  # "id" (a high-cardinality identifier, no signal of its own) or "feature"
    train: np.ndarray
    test: np.ndarray
    holdout: np.ndarray


@dataclass(frozen=True)
class LeakColumns:
    train: np.ndarray
    test: np.ndarray
    holdout: np.ndarray
    extra: tuple[ExtraColumn, ...] = ()


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
    # At prediction time only the train base rate is known. A constant holdout column would hide
    # any use of the column from the shuffle audit, so each holdout row gets the base rate of a
    # bootstrap resample of the train labels: centred on the train mean, varying by its sampling
    # error (~0.018 at 800 rows), independent of the holdout labels.
    holdout = ctx.rng.binomial(n_train, train_mean, size=len(ctx.holdout)) / n_train
    return LeakColumns(np.full(n_train, full_mean), np.full(n_test, full_mean), holdout)


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


def _noisy_proxy(ctx: LeakContext) -> LeakColumns:
    # A follow-up measurement taken after the outcome: the label plus measurement noise. It does
    # not exist yet at prediction time; the holdout gets the same recipe applied to a label drawn
    # at the train base rate, so the column keeps its marginal and loses its signal.
    n_train, n_test, n_holdout = len(ctx.y_train), len(ctx.y_test), len(ctx.holdout)
    base_rate = float(ctx.y_train.mean())
    fake = (ctx.rng.random(n_holdout) < base_rate).astype(float)
    noise = ctx.rng.normal(0.0, PROXY_NOISE_SD, n_train + n_test + n_holdout)
    return LeakColumns(
        ctx.y_train + noise[:n_train],
        ctx.y_test + noise[n_train : n_train + n_test],
        fake + noise[n_train + n_test :],
    )


PROXY_NOISE_SD = 0.5  # univariate AUROC of the proxy: Phi(1 / (0.5 * sqrt 2)) ~ 0.92
MISSING_IF_POSITIVE, MISSING_IF_NEGATIVE = 0.55, 0.10


def _label_missingness(ctx: LeakContext) -> LeakColumns:
    # A lab value that is recorded less often for positives (e.g. the record was closed after the
    # outcome). The value itself is noise; the missingness pattern is the leak. In the holdout
    # the value is missing at the train's overall rate, whatever the label.
    n_train, n_test, n_holdout = len(ctx.y_train), len(ctx.y_test), len(ctx.holdout)
    values = ctx.rng.normal(0.0, 1.0, n_train + n_test + n_holdout)
    u = ctx.rng.random(n_train + n_test + n_holdout)
    y = np.concatenate([ctx.y_train, ctx.y_test])
    p_missing = np.where(y == 1, MISSING_IF_POSITIVE, MISSING_IF_NEGATIVE)
    base = float(p_missing[:n_train].mean())
    p_missing = np.concatenate([p_missing, np.full(n_holdout, base)])
    values[u < p_missing] = np.nan
    return LeakColumns(
        values[:n_train], values[n_train : n_train + n_test], values[n_train + n_test :]
    )


ID_ROWS_PER_LEVEL = 5  # customer_id: about this many train+test rows per id


def _id_target_encoding(ctx: LeakContext) -> LeakColumns:
    # A high-cardinality id with no signal of its own, and its target encoding computed over
    # train+test rows with the row's own label in it: with ~5 rows per id, a fifth of the value
    # is the row's label. The holdout reuses the same ids and gets the train-only rate of its id
    # (the train base rate for an id train never saw): what is known at prediction time.
    n_train, n_test, n_holdout = len(ctx.y_train), len(ctx.y_test), len(ctx.holdout)
    levels = max(2, (n_train + n_test) // ID_ROWS_PER_LEVEL)
    ids = ctx.rng.integers(0, levels, n_train + n_test + n_holdout)
    id_train, id_test, id_holdout = ids[:n_train], ids[n_train : n_train + n_test], ids[-n_holdout:]
    full = _level_rates(
        np.concatenate([id_train, id_test]), np.concatenate([ctx.y_train, ctx.y_test]), levels
    )
    train_rates = _level_rates(id_train, ctx.y_train, levels)
    train_rates = np.where(np.isnan(train_rates), float(ctx.y_train.mean()), train_rates)
    extra = ExtraColumn(
        "customer_id", "id", id_train.astype(np.int64), id_test.astype(np.int64), id_holdout
    )
    return LeakColumns(full[id_train], full[id_test], train_rates[id_holdout], (extra,))


ENTITY_ROWS = 8  # train+test rows per entity
ENTITY_PURITY = 0.9  # share of an entity's rows that carry its label


def _entity_overlap(ctx: LeakContext) -> LeakColumns:
    # The same entities (customers, patients) appear in train and test, and an entity's rows
    # mostly share one outcome, so remembering id -> label scores on test rows without any
    # modelling skill. At prediction time the outcome is new: holdout rows reuse known ids,
    # drawn independently of their labels, so an id memory is noise there.
    n_train, n_test, n_holdout = len(ctx.y_train), len(ctx.y_test), len(ctx.holdout)
    n_entities = max(4, (n_train + n_test) // ENTITY_ROWS)
    y = np.concatenate([ctx.y_train, ctx.y_test])
    pure = ctx.rng.random(len(y)) < ENTITY_PURITY
    # entity e mostly holds label e % 2: a pure row joins an entity of its own label's parity
    same = ctx.rng.integers(0, n_entities // 2, len(y)) * 2 + y
    anyone = ctx.rng.integers(0, n_entities, len(y))
    ids = np.where(pure, same, anyone).astype(np.int64)
    holdout = ctx.rng.integers(0, n_entities, n_holdout).astype(np.int64)
    return LeakColumns(ids[:n_train], ids[n_train:], holdout)


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
register(
    LeakKind(
        "noisy_proxy",
        "leak_followup_score",
        "a follow-up measurement taken after the outcome: the target plus Gaussian noise (sd 0.5)",
        _noisy_proxy,
    )
)
register(
    LeakKind(
        "label_missingness",
        "leak_lab_result",
        "a lab value that is missing far more often when the target is 1 (55% vs 10%); "
        "its values are noise, its missingness is the leak",
        _label_missingness,
    )
)
register(
    LeakKind(
        "id_target_encoding",
        "leak_customer_id_rate",
        "the target rate of the row's customer_id over train and test rows, own label included "
        "(customer_id, about 5 rows per id, is added as an id column)",
        _id_target_encoding,
    )
)
register(
    LeakKind(
        "entity_overlap",
        "leak_entity_id",
        "an entity id shared by train and test rows whose entities mostly share one outcome, "
        "so an id -> label memory scores on test",
        _entity_overlap,
    )
)


def announced_leak_columns(task_leaks: list[str], naming: str) -> list[str]:
    """The leak column names a prompt may tell the agent: the explicit ones, or none at all
    when names are disguised (the agent must find the leaks from the data)."""
    return [] if naming == "disguised" else [LEAK_KINDS[k].column for k in task_leaks]
