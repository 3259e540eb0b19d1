"""Scripted local policies (``local/<name>``): they act through the same tools, with code strings,
as an LLM would, so local mode, the tests and the self-check judge them exactly like a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leakbench.agents.base import ToolCall, ToolResult, Turn

EXPLORE = "print(train_df.shape, test_df.shape)\nprint(train_df.dtypes.to_string())"

# Everything below runs inside the sandbox, where train_df, test_df, pd, np and sklearn exist.
_PIPELINE = """
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

X = train_df.drop(columns=["target", *drop])
y = train_df["target"].astype(int)
num_cols = [c for c in X.columns if str(X[c].dtype) != "category"]
cat_cols = [c for c in X.columns if str(X[c].dtype) == "category"]
num_pipe = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
cat_pipe = Pipeline(
    [
        ("impute", SimpleImputer(strategy="most_frequent")),
        ("ohe", OneHotEncoder(handle_unknown="ignore")),
    ]
)
pre = ColumnTransformer([("num", num_pipe, num_cols), ("cat", cat_pipe, cat_cols)])
pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000, C=C))])
pipe.fit(X, y)
proba = pipe.predict_proba(test_df[X.columns])[:, 1]
submit_answer({"y_pred_proba": proba, "pipeline": pipe})
"""


def _fit_and_submit(drop: str, c: float = 1.0) -> str:
    return f"drop = {drop}\nC = {c!r}\n{_PIPELINE}"


ALL_LEAKS = '[c for c in train_df.columns if c.startswith("leak_")]'


@dataclass(frozen=True)
class Policy:
    description: str
    turns: tuple[tuple[str, ...], ...]  # code for python_expression, per turn


POLICIES: dict[str, Policy] = {
    "baseline": Policy(
        "drops every leak_ column and fits the seed's scaler + one-hot + logistic regression",
        ((EXPLORE,), (_fit_and_submit(ALL_LEAKS),)),
    ),
    "leaky": Policy(
        "keeps every column, leaks included",
        ((EXPLORE,), (_fit_and_submit("[]"),)),
    ),
    "partial": Policy(
        "drops only the obvious leak (leak_future_signal) and keeps the subtler ones",
        ((EXPLORE,), (_fit_and_submit('["leak_future_signal"]'),)),
    ),
    "oracle-like": Policy(
        "the best honest model for this family: leaks dropped, weak regularisation",
        ((EXPLORE,), (_fit_and_submit(ALL_LEAKS, c=100.0),)),
    ),
    "no-submit": Policy(
        "explores and stops without submitting",
        ((EXPLORE,), ("train_df.describe()",)),
    ),
    "invalid": Policy(
        "submits malformed probabilities only (wrong length, then NaN)",
        (
            (EXPLORE,),
            ('submit_answer({"y_pred_proba": np.full(len(test_df) - 1, 0.5)})',),
            ('submit_answer({"y_pred_proba": np.full(len(test_df), np.nan)})',),
        ),
    ),
}


class LocalAgent:
    """Plays a policy's turns one by one, then ends its turn."""

    def __init__(self, policy: str) -> None:
        self.name = f"local/{policy}"
        self._policy = POLICIES[policy]
        self._turn = 0

    def begin(self, system_prompt: str, task_prompt: str, tools: list[dict[str, Any]]) -> None:
        self._turn = 0

    def next_turn(self, results: list[ToolResult]) -> Turn:
        if self._turn >= len(self._policy.turns):
            return Turn(text="I am done.", tool_calls=[], stop="end_turn")
        codes = self._policy.turns[self._turn]
        self._turn += 1
        calls = [
            ToolCall(
                id=f"local_{self._turn}_{i}", name="python_expression", input={"expression": c}
            )
            for i, c in enumerate(codes)
        ]
        return Turn(text="", tool_calls=calls, stop="tool_use")
