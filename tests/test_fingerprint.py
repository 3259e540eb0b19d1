"""check_fingerprint: fitted statistics against train-only and train+test values."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from leakbench.grading.fingerprint import check_fingerprint
from leakbench.sandbox.introspect import fingerprint


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"num_0": rng.normal(size=80), "num_1": rng.normal(2, 3, size=80)})
    train["cat0"] = pd.Categorical(rng.integers(0, 3, 80))
    train["target"] = rng.integers(0, 2, 80)
    test = pd.DataFrame({"num_0": rng.normal(1, 1, size=20), "num_1": rng.normal(size=20)})
    test["cat0"] = pd.Categorical(rng.integers(0, 3, 20))
    return train, test


def test_scaler_fit_on_train_is_clean_and_on_train_plus_test_is_flagged():
    train, test = frames()
    cols = ["num_0", "num_1"]
    assert check_fingerprint(fingerprint(StandardScaler().fit(train[cols])), train, test) == []
    both = pd.concat([train[cols], test[cols]])
    reasons = check_fingerprint(fingerprint(StandardScaler().fit(both)), train, test)
    assert reasons == [
        "StandardScaler (StandardScaler) was fit on train+test rows: mean of num_0 matches "
        "train+test, not train (and 5 more statistics)"
    ]


def test_imputer_and_minmax_inside_a_column_transformer():
    train, test = frames()
    both = pd.concat([train.drop(columns="target"), test])
    pre = ColumnTransformer(
        [
            ("imp", SimpleImputer(strategy="median"), [0]),
            ("mm", Pipeline([("i", SimpleImputer()), ("s", MinMaxScaler())]), ["num_1"]),
        ]
    )
    reasons = check_fingerprint(fingerprint(pre.fit(both)), train, test)
    assert any(
        r.startswith("SimpleImputer (imp) was fit on train+test rows: median of num_0")
        for r in reasons
    )
    assert any(r.startswith("SimpleImputer (mm/i)") for r in reasons)
    assert check_fingerprint(fingerprint(pre.fit(train.drop(columns="target"))), train, test) == []


def test_garbage_from_a_worker_is_ignored():
    train, test = frames()
    for junk in (
        {},
        {"estimators": "x"},
        {"estimators": [1, None, {"features": ["num_0"], "stats": {"mean_": ["a"]}}]},
        {
            "estimators": [
                {"class": "StandardScaler", "features": ["nope"], "stats": {"mean_": [0]}}
            ]
        },
        {"estimators": [{"features": ["num_0", "num_1"], "stats": {"mean_": [0.0]}}]},
        {"estimators": [{"features": ["cat0"], "stats": {"mean_": [1.0]}, "params": 3}]},
    ):
        assert check_fingerprint(junk, train, test) == []
