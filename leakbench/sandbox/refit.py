"""Refitting a submitted pipeline's recipe on ``train_df`` alone (runs inside a worker).

The grader asks three things of a pipeline beyond its predictions (SPEC §6): that its unfitted
recipe, ``sklearn.base.clone(pipeline)``, carries no learned state; that the recipe fit on
``train_df`` alone reproduces the submitted predictions; and that it loses its skill when fit on
permuted labels. The recipe is made and refit here, in sandbox workers, because it is the agent's
code; the harness judges only the bytes and numbers that come back (``grading/recipe.py`` reads
the recipe's pickle without executing it).
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd

RECIPE_LIMIT_BYTES = 1 << 20
TARGET = "target"  # the label column of train_df (leakbench.task.generate.TARGET)


def fit_columns(pipeline: Any, train: pd.DataFrame, target: str) -> list[str]:
    """The columns of ``train`` the pipeline was fit on: its ``feature_names_in_`` when it has
    them, else every column but the target."""
    names = getattr(pipeline, "feature_names_in_", None)
    if names is None:
        return [c for c in train.columns if c != target]
    columns = [str(c) for c in np.asarray(names).ravel()]
    missing = [c for c in columns if c not in train.columns]
    if missing:
        raise ValueError(f"it was fit on columns train_df does not have ({', '.join(missing[:5])})")
    return columns


def recipe_of(pipeline: Any) -> bytes:
    """``clone(pipeline)`` pickled (cloudpickle: classes the agent defined travel by value)."""
    import cloudpickle
    from sklearn.base import clone

    try:
        recipe = clone(pipeline)
    except Exception as exc:
        raise ValueError(
            f"sklearn.base.clone(pipeline) fails ({type(exc).__name__}: {exc}); the grader "
            "refits a clone on train_df, so build the pipeline from estimators that clone"
        ) from None
    data = cloudpickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > RECIPE_LIMIT_BYTES:
        raise ValueError(
            f"the unfitted pipeline (clone) pickles to {len(data)} bytes; a recipe carries "
            "parameters, not data"
        )
    return data


def positive_proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Column 1 of ``predict_proba``, checked to be one finite number per row."""
    proba = np.asarray(model.predict_proba(frame), dtype=float)
    if proba.ndim != 2 or proba.shape[0] != len(frame) or proba.shape[1] < 2:
        raise ValueError(f"predict_proba returned shape {list(proba.shape)}")
    return np.ascontiguousarray(proba[:, 1])


def refit_predictions(
    recipe: Any,
    train: pd.DataFrame,
    columns: list[str],
    frame: pd.DataFrame,
    perm_frame: pd.DataFrame,
    permutations: int,
    seed: int,
) -> np.ndarray:
    """The recipe fit on ``train`` predicting ``frame``, then ``permutations`` refits on
    permuted labels predicting ``perm_frame``: one flat array, in that order."""
    from sklearn.base import clone

    x = train[columns]
    y = train[TARGET].to_numpy()
    parts = [positive_proba(clone(recipe).fit(x, y), frame)]
    rng = np.random.default_rng(seed)
    for _ in range(permutations):
        parts.append(positive_proba(clone(recipe).fit(x, rng.permutation(y)), perm_frame))
    return np.concatenate(parts)


def submission_problem(
    pipeline: Any, recipe: bytes, train: pd.DataFrame, test: pd.DataFrame, tolerance: float
) -> tuple[str, str] | None:
    """Why the grader could not accept this pipeline, as (failed-check code, message), or None.

    Done when the agent submits, so that it can still fix what the grader would later reject:
    a pipeline that cannot predict ``test_df`` as given, answers differently twice, or whose
    recipe refit on ``train_df`` alone gives other predictions (fit on other rows, or a
    ``random_state`` left unset). The grader checks all of it again in clean workers.
    """
    from sklearn.base import clone

    try:
        first = positive_proba(pipeline, test)
        second = positive_proba(pipeline, test)
    except Exception as exc:
        return (
            "pipeline_problem",
            f"pipeline.predict_proba(test_df) fails ({type(exc).__name__}: {exc}); the grader "
            "passes every column of test_df, so let the pipeline select its own columns "
            "(e.g. with a ColumnTransformer)",
        )
    if float(np.max(np.abs(first - second), initial=0.0)) > tolerance:
        return (
            "nondeterministic",
            "the pipeline answers the same rows differently from one call to the next; "
            "predictions must be deterministic",
        )
    try:
        columns = fit_columns(pipeline, train, TARGET)
        model = clone(pickle.loads(recipe)).fit(train[columns], train[TARGET])
        refit = positive_proba(model, test)
    except Exception as exc:
        return (
            "refit",
            f"clone(pipeline) cannot be refit on train_df ({type(exc).__name__}: {exc})",
        )
    gap = float(np.max(np.abs(refit - first), initial=0.0))
    if gap > tolerance:
        return (
            "refit",
            "clone(pipeline) refit on train_df alone predicts test_df differently (largest "
            f"difference {gap:.3g}); the grader requires that refit to reproduce your pipeline: "
            "fit it on train_df only (never on test rows), and set random_state in every "
            "estimator that draws random numbers",
        )
    return None
