"""Was the pipeline's preprocessing fit on train only? Judged from its fitted statistics.

The worker reports each transformer's fitted per-feature statistics (``Session.fingerprint``);
here each one is recomputed on the train rows and on train+test rows. A statistic that matches
train+test and not train means the transformer saw the test rows when it was fit: preprocessing
leakage (SPEC §4.2, §6). The fingerprint comes from an untrusted worker, so anything malformed or
unmappable is skipped, never trusted and never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

REL_TOL = 1e-6
ABS_TOL = 1e-9

Stat = Callable[[np.ndarray], float]


def _iqr(low: float, high: float) -> Stat:
    return lambda x: float(np.nanpercentile(x, high) - np.nanpercentile(x, low))


def _stat_functions(cls: str, attr: str, params: dict[str, Any]) -> list[tuple[str, Stat]]:
    """The ways an estimator computes ``attr`` from a column: (label, function) pairs."""
    mean = ("mean", lambda x: float(np.nanmean(x)))
    median = ("median", lambda x: float(np.nanmedian(x)))
    if attr == "mean_":
        return [mean]
    if attr == "var_":
        return [("variance", lambda x: float(np.nanvar(x)))]
    if attr == "center_":
        return [median]
    if attr == "data_min_":
        return [("minimum", lambda x: float(np.nanmin(x)))]
    if attr == "data_max_":
        return [("maximum", lambda x: float(np.nanmax(x)))]
    if attr == "scale_":
        if cls == "StandardScaler":
            return [("standard deviation", lambda x: float(np.nanstd(x)))]
        if cls == "MaxAbsScaler":
            return [("maximum absolute value", lambda x: float(np.nanmax(np.abs(x))))]
        if cls == "RobustScaler":
            q = params.get("quantile_range") or [25.0, 75.0]
            if isinstance(q, list) and len(q) == 2:
                return [("interquartile range", _iqr(float(q[0]), float(q[1])))]
        return []
    if attr == "statistics_":
        strategy = params.get("strategy")
        if strategy == "mean":
            return [mean]
        if strategy == "median":
            return [median]
        if strategy is None:
            return [mean, median]
    return []


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _numeric(column: pd.Series) -> np.ndarray | None:
    if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
        return None
    try:
        return pd.to_numeric(column, errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError):
        return None


def check_fingerprint(fingerprint: dict, train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """Reasons the pipeline's fitted statistics show it was fit on train+test rows (empty: none).

    A statistic is flagged when it matches the train+test value (within a relative tolerance of
    1e-6) and not the train-only value; features that cannot be mapped are ignored. Inside a
    ColumnTransformer a scaler after an imputer sees imputed data; with no missing values that
    equals the raw column, which is what is compared.
    """
    entries = fingerprint.get("estimators") if isinstance(fingerprint, dict) else None
    if not isinstance(entries, list):
        return []
    reasons = []
    columns: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            found = _entry_reason(entry, columns, train, test)
        except (ValueError, TypeError, OverflowError, ArithmeticError, RecursionError):
            continue  # the worker's fingerprint is untrusted: what cannot be read is skipped
        if found:
            reasons.append(found)
    return reasons


def _entry_reason(
    entry: dict[str, Any],
    columns: dict[str, tuple[np.ndarray, np.ndarray] | None],
    train: pd.DataFrame,
    test: pd.DataFrame,
) -> str | None:
    """The reason one fingerprint entry shows a fit on train+test rows, or None."""
    cls, path = str(entry.get("class", "?")), str(entry.get("path", "?"))
    features, stats = entry.get("features"), entry.get("stats")
    params = entry.get("params") if isinstance(entry.get("params"), dict) else {}
    if not isinstance(features, list) or not isinstance(stats, dict):
        return None
    hits = []
    for attr, values in stats.items():
        if not isinstance(values, list) or len(values) != len(features):
            continue
        for feature, value in zip(features, values, strict=True):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            value = float(value)  # a huge JSON integer raises OverflowError: entry skipped
            if not math.isfinite(value):
                continue
            data = _columns(columns, str(feature), train, test)
            if data is None:
                continue
            train_only, both = data
            for label, fn in _stat_functions(cls, str(attr), params):
                with np.errstate(all="ignore"):
                    a, b = fn(train_only), fn(both)
                if _close(value, b) and not _close(value, a):
                    hits.append(f"{label} of {feature}")
                    break
    if not hits:
        return None
    more = f" (and {len(hits) - 1} more statistics)" if len(hits) > 1 else ""
    return (
        f"{cls} ({path}) was fit on train+test rows: {hits[0]} matches train+test, not train{more}"
    )


def _columns(
    cache: dict[str, tuple[np.ndarray, np.ndarray] | None],
    name: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray] | None:
    if name not in cache:
        cache[name] = None
        if name in train.columns and name in test.columns:
            a, b = _numeric(train[name]), _numeric(test[name])
            if a is not None and b is not None and len(a) and np.isfinite(a).any():
                cache[name] = (a, np.concatenate([a, b]))
    return cache[name]
