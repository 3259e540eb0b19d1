"""Fingerprint of a fitted pipeline's preprocessing statistics, as plain JSON (runs in a worker).

The grader compares these numbers with statistics of train-only and train+test data
(``leakbench.grading.fingerprint``) to see what data each transformer was fit on.
"""

from __future__ import annotations

import math
from typing import Any

STAT_ATTRS = (
    "mean_",
    "var_",
    "scale_",
    "statistics_",
    "center_",
    "data_min_",
    "data_max_",
    "categories_",
)
_MAX_VALUES = 100_000
FINGERPRINT_VERSION = 1


def fingerprint(estimator: Any) -> dict[str, Any]:
    """Walk a fitted estimator and report every fitted statistic with its feature names."""
    entries: list[dict[str, Any]] = []
    _walk(estimator, "", None, entries, depth=0)
    return {"version": FINGERPRINT_VERSION, "estimators": entries}


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else str(name)


def _walk(est: Any, path: str, names: list[str] | None, out: list[dict], depth: int) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if depth > 20 or est is None or isinstance(est, str):
        return
    if isinstance(est, Pipeline):
        current = names
        for name, step in est.steps:
            if step is None or isinstance(step, str):
                continue
            _walk(step, _join(path, name), current, out, depth + 1)
            current = _names_out(step, current)
        return
    if isinstance(est, ColumnTransformer):
        ct_names = _feature_names(est) or names or []
        for name, trans, cols in getattr(est, "transformers_", []):
            _walk(trans, _join(path, name), _select(cols, ct_names), out, depth + 1)
        return
    if isinstance(est, FeatureUnion):
        for name, trans in est.transformer_list:
            _walk(trans, _join(path, name), names, out, depth + 1)
        return
    _record(est, path or type(est).__name__, names, out)
    # Meta-estimators keep their fitted inner estimators under these names.
    for attr in ("estimator_", "best_estimator_"):
        inner = getattr(est, attr, None)
        if inner is not None and hasattr(inner, "fit"):
            _walk(inner, _join(path, attr.rstrip("_")), names, out, depth + 1)
    for i, calibrated in enumerate(getattr(est, "calibrated_classifiers_", []) or []):
        inner = getattr(calibrated, "estimator", None)
        _walk(inner, _join(path, f"calibrated{i}"), names, out, depth + 1)


def _feature_names(est: Any) -> list[str] | None:
    names = getattr(est, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _names_out(step: Any, names: list[str] | None) -> list[str] | None:
    try:
        if names is not None and _feature_names(step) is None:
            return [str(n) for n in step.get_feature_names_out(names)]
        return [str(n) for n in step.get_feature_names_out()]
    except Exception:
        return None


def _select(cols: Any, names: list[str]) -> list[str] | None:
    """Turn a ColumnTransformer column selection into feature names."""
    import numpy as np

    try:
        if isinstance(cols, str):
            return [cols]
        if isinstance(cols, slice):
            return names[cols]
        arr = np.asarray(cols)
        if arr.dtype == bool:
            return [n for n, keep in zip(names, arr, strict=True) if keep]
        if arr.dtype.kind in "iu":
            return [names[int(i)] for i in arr.ravel()]
        return [str(c) for c in arr.ravel()]
    except Exception:
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _record(est: Any, path: str, names: list[str] | None, out: list[dict]) -> None:
    import numpy as np

    stats: dict[str, Any] = {}
    for attr in STAT_ATTRS:
        value = getattr(est, attr, None)
        if value is None:
            continue
        try:
            if attr == "categories_":
                stats[attr] = [[_plain(v) for v in np.asarray(c).ravel()] for c in value]
            else:
                arr = np.asarray(value).ravel()
                if arr.size <= _MAX_VALUES:
                    stats[attr] = [_plain(v) for v in arr]
        except Exception:
            continue
    if not stats:
        return
    params = {}
    try:
        for key, val in est.get_params(deep=False).items():
            if isinstance(val, bool | int | float | str) or val is None:
                params[key] = val if not isinstance(val, float) else _plain(val)
            elif isinstance(val, tuple) and all(isinstance(v, int | float) for v in val):
                params[key] = [float(v) for v in val]
    except Exception:
        pass
    out.append(
        {
            "path": path,
            "class": type(est).__name__,
            "features": _feature_names(est) or names,
            "params": params,
            "stats": stats,
        }
    )
