"""Predictions files written the usual pandas and numpy ways are read exactly as written."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from leakbench.grading.submission import InvalidSubmission, load_predictions
from leakbench.task.files import read_instance

N = 200
# Probabilities whose every value needs all 17 significant digits, so a lossy writer or reader
# shows, and distinct values, so a file read one row off cannot compare equal.
P = np.random.default_rng(12).random(N)


def _series(path, p):
    pd.Series(p).to_csv(path, index=False)  # header "0"


def _series_with_index(path, p):
    pd.Series(p).to_csv(path)  # header ",0", then "i,value"


def _named_series_with_index(path, p):
    pd.Series(p, name="y_pred_proba").to_csv(path)


def _frame(path, p):
    pd.DataFrame({"y_pred_proba": p}).to_csv(path, index=False)


def _frame_with_id(path, p):
    pd.DataFrame({"id": np.arange(len(p)) + 1000, "proba": p}).to_csv(path, index=False)


def _frame_crlf_bom(path, p):
    # what Windows / Excel-minded code writes
    frame = pd.DataFrame({"y_pred_proba": p})
    frame.to_csv(path, index=False, lineterminator="\r\n", encoding="utf-8-sig")


def _savetxt_commented_header(path, p):
    np.savetxt(path, p, header="y_pred_proba")  # "# y_pred_proba"


def _savetxt_plain_header(path, p):
    np.savetxt(path, p, header="y_pred_proba", comments="")


def _npy(path, p):
    np.save(path, p)


WRITERS = [
    ("p.npy", _npy),
    ("p.csv", _series),
    ("p.csv", _series_with_index),
    ("p.csv", _named_series_with_index),
    ("p.csv", _frame),
    ("p.csv", _frame_with_id),
    ("p.csv", _frame_crlf_bom),
    ("p.csv", _savetxt_commented_header),
    ("p.txt", _savetxt_commented_header),
    ("p.txt", _savetxt_plain_header),
]


@pytest.mark.parametrize(("name", "write"), WRITERS)
@pytest.mark.parametrize("n", [N, N - 1, N + 1])
def test_each_usual_writer_is_read_exactly(tmp_path, name, write, n):
    p = P[:n] if n <= N else np.append(P, 0.5)
    path = tmp_path / name
    write(path, p)
    values = load_predictions(path)
    assert values.dtype == float
    assert np.array_equal(values, p)  # float64 repr and "%.18e" both round-trip exactly


def test_wrong_length_is_refused_naming_the_header(tmp_path):
    for n in (N - 1, N + 1):
        path = tmp_path / f"p{n}.csv"
        _series(path, np.resize(P, n))
        with pytest.raises(InvalidSubmission) as err:
            load_predictions(path, n_expected=N)
        assert err.value.code == "length"
        assert err.value.message == (
            f"{path}: expected {N} probabilities (one per test_df row, in its order), got "
            f"{n} data rows below the header row '0' (the first row of a CSV is always its header)"
        )
    np.save(tmp_path / "p.npy", P[:-1])
    with pytest.raises(InvalidSubmission, match=r"got an array of 199$"):
        load_predictions(tmp_path / "p.npy", n_expected=N)
    assert np.array_equal(load_predictions(tmp_path / "p.npy", n_expected=N - 1), P[:-1])


def test_lower_precision_writers_keep_their_precision(tmp_path):
    p32 = P.astype(np.float32)
    pd.Series(p32).to_csv(tmp_path / "a.csv", index=False)
    assert np.array_equal(load_predictions(tmp_path / "a.csv").astype(np.float32), p32)
    np.save(tmp_path / "a.npy", p32)
    assert np.array_equal(load_predictions(tmp_path / "a.npy"), p32.astype(float))
    pd.Series(P).to_csv(tmp_path / "b.csv", index=False, float_format="%.4f")
    assert np.allclose(load_predictions(tmp_path / "b.csv"), P, rtol=0, atol=5e-5)
    labels = (P > 0.5).astype(int)
    np.save(tmp_path / "c.npy", labels)
    assert np.array_equal(load_predictions(tmp_path / "c.npy"), labels)


def test_nan_and_blank_cells_stay_in_their_row(tmp_path):
    p = P.copy()
    p[[0, 7]] = np.nan
    pd.Series(p).to_csv(tmp_path / "a.csv", index=False)  # pandas writes NaN as ""
    values = load_predictions(tmp_path / "a.csv")
    assert np.array_equal(values, p, equal_nan=True)
    (tmp_path / "b.csv").write_text("y_pred_proba\n0.25\n\n0.75\n\n\n")
    values = load_predictions(tmp_path / "b.csv")  # trailing blank lines are not rows
    assert np.array_equal(values, [0.25, np.nan, 0.75], equal_nan=True)


def _text(content):
    def write(path, p):
        path.write_text(content)

    return write


def _write_npz(path, p):
    with path.open("wb") as fh:
        np.savez(fh, p=p)


def _write_npy_object(path, p):
    np.save(path, np.array(list(p), dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    ("name", "write", "code", "needle"),
    [
        # no header: refused, whatever the length, because the first value would be lost
        ("p.csv", lambda path, p: np.savetxt(path, p), "header", "holds a number, not a column"),
        ("p.txt", lambda path, p: np.savetxt(path, p), "header", "first row of a CSV is always"),
        ("p.csv", _text("0.5\n" * N), "header", "Start the file with a header naming the column"),
        ("p.csv", _text("1\n" + "0.5\n" * N), "header", "holds a number"),
        ("p.csv", _text("0.5,0.5\n" * N), "header", "holds a number"),
        ("p.csv", _text(""), "file", "the file is empty"),
        ("p.csv", _text("\n0.5\n"), "header", "the first row is empty"),
        # more than one candidate column
        (
            "p.csv",
            lambda path, p: pd.DataFrame(np.c_[1 - p, p]).to_csv(path, index=False),
            "shape",
            "got 2 columns ('0', '1') and none is named like a probability",
        ),
        (
            "p.csv",
            lambda path, p: pd.DataFrame(np.c_[1 - p, p]).to_csv(path),
            "shape",
            "got 2 columns ('0', '1')",
        ),
        (
            "p.csv",
            lambda path, p: pd.DataFrame({"y_pred": p > 0.5, "y_pred_proba": p}).to_csv(
                path, index=False
            ),
            "shape",
            "several are named like a probability",
        ),
        # an unnamed first column that is not the row index 0..n-1, in order
        (
            "p.csv",
            lambda path, p: pd.Series(p, index=np.arange(len(p))[::-1]).to_csv(path),
            "shape",
            "data row 1 holds '199'; write the file without an index",
        ),
        ("p.csv", _text("y_pred_proba\n0.5\n0.5,0.5\n"), "shape", "data row 2 has 2 fields"),
        ("p.csv", _text("y_pred_proba\n0.5\nabc\n"), "non_numeric", "'abc' on data row 2"),
        ("p.csv", _text("y_pred_proba\n0.5\n1_0\n"), "non_numeric", "'1_0' on data row 2"),
        ("p.csv", lambda path, p: path.write_bytes(b"\xff\xfe\x00y"), "file", "not a readable"),
        # .npy: only a 1-D numeric array
        ("p.npy", lambda path, p: np.save(path, np.c_[1 - p, p]), "shape", "proba[:, 1]"),
        ("p.npy", lambda path, p: np.save(path, p[:, None]), "shape", "proba.ravel()"),
        ("p.npy", _write_npy_object, "file", "holds Python objects (object dtype), not numbers"),
        ("p.npy", lambda path, p: np.save(path, p > 0.5), "non_numeric", "holds bool values"),
        ("p.npy", lambda path, p: path.write_bytes(pickle.dumps(p)), "file", "not written by"),
        ("p.npy", _write_npz, "file", "not written by"),
        ("p.npy", _series, "file", "not a readable .npy array"),
        # one format per extension
        ("p.json", _text("[0.5]"), "file", "unknown predictions format '.json'; use .npy:"),
        ("p", _text("y_pred_proba\n0.5\n"), "file", "format '(no extension)'"),
    ],
)
def test_ambiguous_or_bad_files_are_refused_with_the_way_to_write_them(
    tmp_path, name, write, code, needle
):
    path = tmp_path / name
    write(path, P)
    with pytest.raises(InvalidSubmission) as err:
        load_predictions(path)
    assert err.value.code == code
    assert needle in err.value.message
    assert "\n" not in err.value.message and err.value.message.startswith(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(InvalidSubmission, match="file not found"):
        load_predictions(tmp_path / "nope.csv")


@pytest.fixture
def instance_dir(cli, tmp_path):
    out = tmp_path / "inst"
    assert cli("generate", "--preset", "seed", "--seed", "3", "--out", out).exit_code == 0
    return out


def _grade_json(cli, instance_dir, path):
    result = cli("grade", "--instance", instance_dir, "--predictions", path, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_grade_reads_every_usual_file_exactly_as_the_array(cli, tmp_path, instance_dir):
    oracle = read_instance(instance_dir).oracle_test
    assert len(oracle) == N
    np.save(tmp_path / "array.npy", oracle)
    expected = _grade_json(cli, instance_dir, tmp_path / "array.npy")
    assert expected["metrics"]["regret"] == 0.0
    for i, (name, write) in enumerate(WRITERS):
        path = tmp_path / f"{i}_{name}"
        write(path, oracle)
        assert _grade_json(cli, instance_dir, path) == expected, write.__name__


@pytest.mark.parametrize("n", [N - 1, N + 1])
def test_grade_refuses_a_file_one_row_off(cli, tmp_path, instance_dir, n):
    path = tmp_path / "p.csv"
    _series(path, np.resize(P, n))
    result = cli("grade", "--instance", instance_dir, "--predictions", path)
    assert result.exit_code == 2
    assert f"expected {N} probabilities" in result.stderr and f"got {n}" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_grade_refuses_headerless_and_object_files_in_one_line(cli, tmp_path, instance_dir):
    np.savetxt(tmp_path / "p.csv", P)
    _write_npy_object(tmp_path / "p.npy", P)
    for name, needle in [("p.csv", "is always its header"), ("p.npy", "object dtype")]:
        result = cli("grade", "--instance", instance_dir, "--predictions", tmp_path / name)
        assert result.exit_code == 2
        assert needle in result.stderr and result.stderr.count("\n") == 1
        assert "Traceback" not in result.output and "allow_pickle" not in result.output
