"""Pipelines the tests fit directly, outside any sandbox."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def seed_baseline(inst, keep_leaks: bool) -> Pipeline:
    """The original project's baseline, StandardScaler + OneHotEncoder + LogisticRegression,
    fitted on the instance's train rows with or without its leak columns."""
    drop = ["target", *([] if keep_leaks else inst.leak_columns)]
    x = inst.train.drop(columns=drop)
    numeric = [c for c in x.columns if not isinstance(x[c].dtype, pd.CategoricalDtype)]
    categorical = [c for c in x.columns if c not in numeric]
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))])
    return pipe.fit(x, inst.train["target"])
