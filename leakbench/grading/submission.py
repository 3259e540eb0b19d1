"""Validating submitted probabilities, from the sandbox or from a file, with precise reasons."""

from __future__ import annotations

import csv
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


PREDICTIONS_FORMATS = (
    ".npy: a 1-D array of floats, as np.save(path, proba) writes it; "
    ".csv or .txt: a header row naming the column, then one probability per row"
)
_CSV_HOW = (
    "e.g. pd.Series(proba, name='y_pred_proba').to_csv(path, index=False) "
    "or np.savetxt(path, proba, header='y_pred_proba', comments='')"
)


def load_predictions(path: Path, n_expected: int | None = None) -> np.ndarray:
    """Read a predictions file as a float array, one value per test row, or raise.

    ``.npy``: a 1-D array of numbers (``np.save(path, proba)``); no pickles, no object arrays,
    no 2-D ``predict_proba`` output (save ``proba[:, 1]``).

    ``.csv`` / ``.txt``: the first row is always the header, then one row per test row. The
    probability column is the only column; or, after dropping an unnamed first column that
    holds the row index 0..n-1 (``to_csv`` with its default ``index=True``), the only one
    left; or the one column named like a submission key (``y_pred_proba``, ``proba``, ...).
    A header written by ``np.savetxt(..., header=name)`` (``# name``) counts. A number in the
    header is accepted only as pandas' default column labels 0, 1, ... in order, which is what
    ``pd.Series(proba).to_csv(path, index=False)`` writes; a first row holding any other
    number means the file has no header, and it is refused rather than read one row off.
    An empty cell is pandas' spelling of NaN and reads as NaN.

    With ``n_expected``, a wrong number of rows is refused here, naming the header row.
    Range and NaN checks are ``validate_probabilities``'s.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidSubmission("file", f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = _load_npy(path)
        header = None
    elif suffix in (".csv", ".txt"):
        values, header = _load_csv(path)
    else:
        raise InvalidSubmission(
            "file",
            f"{path}: unknown predictions format {suffix or '(no extension)'!r}; "
            f"use {PREDICTIONS_FORMATS}",
        )
    if n_expected is not None and len(values) != n_expected:
        where = (
            f"an array of {len(values)}"
            if header is None
            else f"{len(values)} data rows below the header row {header!r} "
            "(the first row of a CSV is always its header)"
        )
        raise InvalidSubmission(
            "length",
            f"{path}: expected {n_expected} probabilities (one per test_df row, in its order), "
            f"got {where}",
        )
    return values


def _load_npy(path: Path) -> np.ndarray:
    # Read the header before the data so an object array is refused in our words, not numpy's.
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
    except (ValueError, OSError, EOFError):
        raise InvalidSubmission(
            "file",
            f"{path}: not a readable .npy array (not written by np.save); "
            "write it with np.save(path, proba)",
        ) from None
    if dtype.hasobject:
        raise InvalidSubmission(
            "file",
            f"{path}: holds Python objects (object dtype), not numbers; "
            "save a float array: np.save(path, np.asarray(proba, dtype=float))",
        )
    if dtype.kind not in "fiu":
        raise InvalidSubmission(
            "non_numeric",
            f"{path}: holds {dtype} values, not numbers; "
            "save a float array: np.save(path, np.asarray(proba, dtype=float))",
        )
    if len(shape) != 1:
        hint = "save a 1-D array"
        if len(shape) == 2 and shape[1] == 2:
            hint = "save the positive-class column: np.save(path, proba[:, 1])"
        elif len(shape) == 2 and shape[1] == 1:
            hint = "flatten it: np.save(path, proba.ravel())"
        raise InvalidSubmission(
            "shape", f"{path}: probabilities must be 1-D, got an array of shape {shape}; {hint}"
        )
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidSubmission("file", f"{path}: not a readable .npy array ({exc})") from None
    return values.astype(float)


def _load_csv(path: Path) -> tuple[np.ndarray, str]:
    """Return the chosen column's values and the header row as written."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidSubmission("file", f"{path}: not a readable CSV file ({exc})") from None
    while rows and not rows[-1]:
        rows.pop()  # trailing blank lines carry no value
    if not rows:
        raise InvalidSubmission("file", f"{path}: the file is empty; {_CSV_HOW}")
    header = [cell.strip() for cell in rows[0]]
    header_text = ",".join(rows[0])
    if not header:
        raise InvalidSubmission(
            "header", f"{path}: the first row is empty; it must be the header, {_CSV_HOW}"
        )
    header[0] = header[0].removeprefix("#").strip()  # np.savetxt(..., header=name)
    numbers = [cell for cell in header if _is_number(cell)]
    if numbers != [str(i) for i in range(len(numbers))]:
        raise InvalidSubmission(
            "header",
            f"{path}: the first row {header_text!r} holds a number, not a column name; the "
            "first row of a CSV is always its header, so a file without one would be read one "
            f"row off. Start the file with a header naming the column, {_CSV_HOW}",
        )
    data = rows[1:]
    for i, row in enumerate(data):
        if row and len(row) != len(header):
            raise InvalidSubmission(
                "shape",
                f"{path}: data row {i + 1} has {len(row)} fields, the header has {len(header)}",
            )
    columns = list(range(len(header)))
    if len(columns) > 1 and header[0] == "":
        index = [row[0].strip() if row else "" for row in data]
        if index != [str(i) for i in range(len(data))]:
            row = next(i for i, v in enumerate(index) if v != str(i))
            raise InvalidSubmission(
                "shape",
                f"{path}: the first column has no name, so it must be the row index 0..n-1 in "
                f"order, but data row {row + 1} holds {index[row]!r:.40}; write the file "
                "without an index: .to_csv(path, index=False)",
            )
        columns = columns[1:]
    if len(columns) > 1:
        named = [c for c in columns if header[c] in PROBA_KEYS]
        if len(named) != 1:
            names = ", ".join(repr(header[c]) for c in columns)
            why = "several are named" if named else "none is named"
            raise InvalidSubmission(
                "shape",
                f"{path}: expected one probability column, got {len(columns)} columns "
                f"({names}) and {why} like a probability ({', '.join(PROBA_KEYS)}); write "
                f"only that column or name exactly one of them y_pred_proba, {_CSV_HOW}",
            )
        columns = named
    column = columns[0]
    cells = pd.Series([row[column].strip() if row else "" for row in data], dtype=object)
    values = pd.to_numeric(cells.replace("", "nan"), errors="coerce")
    bad = values.isna() & ~cells.str.lower().isin(["", "nan"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InvalidSubmission(
            "non_numeric",
            f"{path}: value {cells.iloc[row]!r:.40} on data row {row + 1} is not a number",
        )
    return values.to_numpy(dtype=float), header_text


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
