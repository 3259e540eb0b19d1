"""Scripted local policies (``local/<name>``): they act through the same tools, with code strings,
as an LLM would, so local mode, the tests and the self-check judge them exactly like a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leakbench.agents.base import ToolCall, ToolResult, Turn

EXPLORE = "print(train_df.shape, test_df.shape)\nprint(train_df.dtypes.to_string())"

# Everything below runs inside the sandbox, where train_df, test_df, pd, np and sklearn exist.

# How an honest analyst finds leaks without trusting column names: ids (integer columns with
# many distinct values), a missingness pattern that predicts the target, constant columns, a
# column that is a per-group target rate (constant within each level of a category or id and
# tracking the train target rate there), and a column that alone separates the classes too well
# (univariate AUROC beyond 0.85; no honest feature of these families gets near it). Each rule is
# checked on train_df only. Columns named leak_* are always dropped too.
_FIND_LEAKS = """
from sklearn.metrics import roc_auc_score


def find_leaks(df):
    y = df["target"].to_numpy()
    X = df.drop(columns=["target"])
    n = len(X)
    cats = [c for c in X.columns if str(X[c].dtype) == "category"]
    ids = [c for c in X.columns if X[c].dtype.kind in "iu" and X[c].nunique() > 0.05 * n]
    found = {c: "id" for c in ids}
    for c in X.columns:
        s = X[c]
        if c in found or c in cats:
            continue
        missing = s.isna().to_numpy()
        if missing.any() and abs(roc_auc_score(y, missing) - 0.5) > 0.1:
            found[c] = "missingness tracks the target"
            continue
        v = s.fillna(s.median()).to_numpy(dtype=float)
        if np.ptp(v) == 0:
            found[c] = "constant"
            continue
        for g in cats + ids:
            if s.groupby(X[g], observed=True).nunique().max() <= 1:
                rate = pd.Series(y, index=X.index).groupby(X[g], observed=True).transform("mean")
                if np.corrcoef(v, rate)[0, 1] > 0.8:
                    found[c] = "target rate of " + ("an id" if g in ids else "a category")
                    break
        if c in found:
            continue
        if abs(roc_auc_score(y, v) - 0.5) > 0.35:
            found[c] = "too good" + (" (binary)" if len(np.unique(v)) == 2 else "")
    for c in X.columns:
        if c.startswith("leak_"):
            found.setdefault(c, "named leak_")
    return found


def pick(found, name, why):
    # the trap's column: by its explicit name, or (disguised names) by what the data shows
    if name in found:
        return [name]
    return [c for c, w in found.items() if w == why and not c.startswith("leak_")]
"""

# The shared fit: one ColumnTransformer + LogisticRegression recipe with switches that turn it
# into each policy (seed's baseline with every switch off).
_PIPELINE = """
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

X = train_df.drop(columns=["target", *drop])
y = train_df["target"].astype(int)
cat_cols = [c for c in X.columns if str(X[c].dtype) == "category" or c in one_hot]
num_cols = [c for c in X.columns if c not in cat_cols and c != prior_shift]
if numeric_only:
    cat_cols = []
num_steps = [
    ("impute", SimpleImputer(strategy="median", add_indicator=add_indicator)),
    ("scale", StandardScaler()),
]
if poly:
    num_steps.append(("poly", PolynomialFeatures(2, include_bias=False)))
    num_steps.append(("rescale", StandardScaler()))
num_pipe = Pipeline(num_steps)
cat_pipe = Pipeline(
    [
        ("impute", SimpleImputer(strategy="most_frequent")),
        ("ohe", OneHotEncoder(handle_unknown="ignore")),
    ]
)
pre = ColumnTransformer([("num", num_pipe, num_cols), ("cat", cat_pipe, cat_cols)])
pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000, C=C))])
if fit_on_all:
    # the trap: scaler and imputers see the test rows too
    pre.fit(pd.concat([X, test_df[X.columns]]))
    pipe.named_steps["clf"].fit(pre.transform(X), y)
else:
    pipe.fit(X, y)
if prior_shift is not None:
    pipe = PriorShift(pipe, prior_shift, float(y.mean()))
proba = pipe.predict_proba(test_df[X.columns])[:, 1]
submit_answer({"y_pred_proba": proba, "pipeline": pipe})
"""

# Reads the leaked base rate from a column and moves every probability to it (a prior shift):
# the only way a constant column can be used, and what the global-mean trap does.
_PRIOR_SHIFT = """
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin


class PriorShift(ClassifierMixin, BaseEstimator):
    def __init__(self, model, column, train_rate):
        self.model, self.column, self.train_rate = model, column, train_rate
        self.classes_ = np.array([0, 1])

    def predict_proba(self, X):
        p = np.clip(self.model.predict_proba(X)[:, 1], 1e-9, 1 - 1e-9)
        rate = np.clip(X[self.column].to_numpy(dtype=float), 1e-9, 1 - 1e-9)
        q = expit(logit(p) + logit(rate) - logit(self.train_rate))
        return np.column_stack([1 - q, q])
"""


def _fit_and_submit(
    drop: str,
    c: float = 1.0,
    *,
    one_hot: str = "[]",
    numeric_only: bool = False,
    poly: bool = False,
    add_indicator: bool = False,
    fit_on_all: bool = False,
    prior_shift: str = "None",
    setup: str = "",
) -> str:
    head = _FIND_LEAKS if "find_leaks" in drop + one_hot + prior_shift + setup else ""
    head += _PRIOR_SHIFT if prior_shift != "None" else ""
    return (
        f"{head}{setup}\ndrop = {drop}\none_hot = {one_hot}\nC = {c!r}\n"
        f"numeric_only = {numeric_only}\npoly = {poly}\nadd_indicator = {add_indicator}\n"
        f"fit_on_all = {fit_on_all}\nprior_shift = {prior_shift}\n{_PIPELINE}"
    )


ALL_LEAKS = "list(find_leaks(train_df))"

_BOOSTED = """
from sklearn.ensemble import HistGradientBoostingClassifier

X = train_df.drop(columns=["target", *list(find_leaks(train_df))])
y = train_df["target"].astype(int)
pipe = HistGradientBoostingClassifier(
    categorical_features="from_dtype", learning_rate=0.1, max_iter=100, max_leaf_nodes=8,
    random_state=0,
)
pipe.fit(X, y)
proba = pipe.predict_proba(test_df[X.columns])[:, 1]
submit_answer({"y_pred_proba": proba, "pipeline": pipe})
"""


def _trap(column: str, why: str, **switches: object) -> str:
    """Drops every leak it finds except ``column``, which it uses (the rest is the baseline)."""
    setup = f"found = find_leaks(train_df)\nused = pick(found, {column!r}, {why!r})\n"
    drop = "[c for c in found if c not in used]"
    return _fit_and_submit(drop, setup=setup, **switches)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Policy:
    description: str
    turns: tuple[tuple[str, ...], ...]  # code for python_expression, per turn
    # For the self-check: "honest" (ranked by quality), "trap" (falls into one leak), "other".
    role: str = "other"
    leak: str | None = None  # the trap's leak kind ("preprocessing": not a column)
    rank: int = 0  # honest ladder position, low to high quality


def _policy(description: str, code: str, **kw: Any) -> Policy:
    return Policy(description, ((EXPLORE,), (code,)), **kw)


POLICIES: dict[str, Policy] = {
    "baseline": _policy(
        "drops the leaks it finds (find_leaks) and fits the seed's scaler + one-hot + logistic "
        "regression",
        _fit_and_submit(ALL_LEAKS),
        role="honest",
        rank=2,
    ),
    "leaky": _policy("keeps every column, leaks included", _fit_and_submit("[]")),
    "partial": _policy(
        "drops only the obvious leak (leak_future_signal) and keeps the subtler ones",
        _fit_and_submit('["leak_future_signal"]'),
    ),
    "oracle-like": _policy(
        "the seed family's best honest model: leaks dropped, weak regularisation",
        _fit_and_submit(ALL_LEAKS, c=100.0),
        role="honest",
    ),
    "numerics-only": _policy(
        "drops the leaks it finds and every categorical feature; logistic regression",
        _fit_and_submit(ALL_LEAKS, numeric_only=True),
        role="honest",
        rank=1,
    ),
    "boosted": _policy(
        "drops the leaks it finds; gradient-boosted trees (HistGradientBoosting, native "
        "categoricals), which find interactions and curvature on their own",
        _FIND_LEAKS + _BOOSTED,
        role="honest",
        rank=3,
    ),
    "tuned": _policy(
        "drops the leaks it finds; logistic regression on degree-2 polynomial numerics "
        "(interactions and squares) plus one-hot categoricals",
        _fit_and_submit(ALL_LEAKS, poly=True),
        role="honest",
        rank=4,
    ),
    "trap-future-signal": _policy(
        "the baseline, but keeps the future signal (the target itself) as a feature",
        _trap("leak_future_signal", "too good (binary)"),
        role="trap",
        leak="future_signal",
    ),
    "trap-global-mean": _policy(
        "the baseline, but shifts its probabilities to the leaked train+test base rate",
        _trap(
            "leak_global_target_mean",
            "constant",
            prior_shift="used[0] if used else None",
        ),
        role="trap",
        leak="global_target_mean",
    ),
    "trap-cat0-rate": _policy(
        "the baseline, but keeps the cat0 target rate computed over train+test",
        _trap("leak_cat0_rate_full", "target rate of a category"),
        role="trap",
        leak="cat0_rate_full",
    ),
    "trap-proxy": _policy(
        "the baseline, but keeps the post-outcome follow-up score",
        _trap("leak_followup_score", "too good"),
        role="trap",
        leak="noisy_proxy",
    ),
    "trap-missingness": _policy(
        "the baseline, but keeps the lab value with a missing-value indicator",
        _trap("leak_lab_result", "missingness tracks the target", add_indicator=True),
        role="trap",
        leak="label_missingness",
    ),
    "trap-target-encoding": _policy(
        "the baseline, but keeps the customer_id target rate (own label included)",
        _trap("leak_customer_id_rate", "target rate of an id"),
        role="trap",
        leak="id_target_encoding",
    ),
    "trap-entity": _policy(
        "the baseline, but one-hot encodes the entity id, memorising id -> label",
        _trap("leak_entity_id", "id", one_hot="used"),
        role="trap",
        leak="entity_overlap",
    ),
    "trap-preprocessing": _policy(
        "the baseline, but fits its imputers and scaler on train+test rows",
        _fit_and_submit(ALL_LEAKS, fit_on_all=True),
        role="trap",
        leak="preprocessing",
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
