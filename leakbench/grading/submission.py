"""Validating submitted probabilities, from the sandbox or from a file, with precise reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROBA_KEYS = ("y_pred_proba", "proba", "probas", "pred_proba", "y_pred")


class InvalidSubmission(ValueError):
    """A payload that cannot count as a submission; ``code`` names the rule it broke."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate_probabilities(
    values: Any, n_expected: int, *, shape: list[int] | None = None
) -> np.ndarray:
    """Return ``values`` as a float array of length ``n_expected`` in [0, 1], or raise."""
    if values is None:
        raise InvalidSubmission("missing", "no probabilities were given")
    raw = np.asarray(values, dtype=object) if isinstance(values, list) else np.asarray(values)
    shape = list(shape) if shape is not None else list(raw.shape)
    if len(shape) != 1:
        hint = ""
        if len(shape) == 2 and shape[1] == 2:
            hint = "; submit the positive-class column, e.g. model.predict_proba(X)[:, 1]"
        elif len(shape) == 2 and shape[1] == 1:
            hint = "; flatten it, e.g. proba.ravel()"
        raise InvalidSubmission(
            "shape", f"probabilities must be 1-D, got an array of shape {tuple(shape)}{hint}"
        )
    items = raw.tolist()
    bad = [v for v in items if not isinstance(v, int | float) or isinstance(v, bool)]
    if bad:
        bad = bad[0]
        raise InvalidSubmission(
            "non_numeric", f"probabilities must be numbers; found {type(bad).__name__} {bad!r:.40}"
        )
    proba = np.asarray(items, dtype=float)
    if len(proba) != n_expected:
        raise InvalidSubmission(
            "length",
            f"expected {n_expected} probabilities (one per test_df row, in its order), "
            f"got {len(proba)}",
        )
    finite = np.isfinite(proba)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise InvalidSubmission(
            "not_finite",
            f"{int((~finite).sum())} value(s) are NaN or infinite (first at index {first})",
        )
    outside = (proba < 0) | (proba > 1)
    if outside.any():
        raise InvalidSubmission(
            "range",
            f"probabilities must lie in [0, 1]; {int(outside.sum())} value(s) do not "
            f"(min {proba.min():.4g}, max {proba.max():.4g})",
        )
    return proba


def load_predictions(path: Path) -> Any:
    """Read a predictions file: ``.npy`` (no pickles) or CSV with one probability column.

    Returns the raw values for ``validate_probabilities``; a file that cannot be read at all
    raises ``InvalidSubmission``.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidSubmission("file", f"{path}: file not found")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidSubmission("file", f"{path}: not a readable .npy array ({exc})") from None
    try:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidSubmission("file", f"{path}: not a readable CSV file ({exc})") from None
    first = frame.iloc[0].tolist() if len(frame) else []
    has_header = bool(first) and all(_is_name(cell) for cell in first)
    if has_header:
        frame = frame.iloc[1:].set_axis(first, axis=1)
    if frame.shape[1] != 1:
        chosen = [c for c in PROBA_KEYS if has_header and c in frame.columns]
        if not chosen:
            raise InvalidSubmission(
                "shape",
                f"{path}: expected one probability column, got {frame.shape[1]} columns "
                f"(or name one of them {', '.join(PROBA_KEYS)})",
            )
        frame = frame[[chosen[0]]]
    column = frame.iloc[:, 0]
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & ~column.str.strip().str.lower().isin(["nan", "inf", "-inf"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InvalidSubmission(
            "non_numeric",
            f"{path}: value {column.iloc[row]!r:.40} on data row {row + 1} is not a number",
        )
    return values.to_numpy(dtype=float)


def _is_name(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return bool(cell.strip())
    return False
