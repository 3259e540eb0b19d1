"""Submissions and the submitted pipeline: submit_answer inside the sandbox, predict_proba,
fingerprint, pickled bytes and load_pipeline (issue 3, part 4)."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest

from leakbench.grading.fingerprint import check_fingerprint
from leakbench.sandbox import SandboxError, SandboxLimits, SandboxPool, SubmitReply, SubmitRequest

# Generous: fits and the submission-time refit must not race a busy machine. HANG is for the
# call whose point is that its timeout stops it (its pipeline sleeps a minute).
LIMITS = SandboxLimits(call_timeout_s=60.0, memory_mb=1024)
HANG = dataclasses.replace(LIMITS, call_timeout_s=5.0)
NUM = [f"num_{i}" for i in range(5)]

PIPELINE = """
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
num = [c for c in train_df.columns if c.startswith('num_')] + EXTRA
pre = ColumnTransformer([
    ('num', Pipeline([('impute', SimpleImputer(strategy='median')),
                      ('scale', StandardScaler())]), num),
    ('cat', OneHotEncoder(handle_unknown='ignore'), ['cat0']),
])
pipe = Pipeline([('pre', pre), ('model', LogisticRegression(max_iter=1000))])
X = train_df.drop(columns='target')
"""


def make_frames(n: int = 1000, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """train (with target), test and holdout features; leak_future_signal equals the target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in NUM})
    frame["cat0"] = pd.Categorical(rng.integers(0, 4, n))
    frame["target"] = (frame["num_0"] - 0.5 * frame["num_1"] + rng.normal(size=n) > 0).astype(int)
    frame["leak_future_signal"] = frame["target"].astype(float)
    train = frame.iloc[:600].reset_index(drop=True)
    test = frame.iloc[600:800].drop(columns="target").reset_index(drop=True)
    holdout = frame.iloc[800:].drop(columns="target").reset_index(drop=True)
    return train, test, holdout


class Recorder:
    """An on_submit callback like the harness's: first valid submission counts."""

    def __init__(self) -> None:
        self.requests: list[SubmitRequest] = []
        self.accepted = False

    def __call__(self, request: SubmitRequest) -> SubmitReply:
        self.requests.append(request)
        if self.accepted:
            return SubmitReply(False, "a submission was already accepted")
        if request.proba is None:
            return SubmitReply(False, f"invalid: {request.problem}")
        if request.shape is None or len(request.shape) != 1:
            return SubmitReply(False, f"invalid: not 1-D (shape {request.shape})")
        self.accepted = True
        return SubmitReply(True, "submission accepted")


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(grace_s=1.0) as p:
        yield p


@pytest.fixture(scope="module")
def frames():
    return make_frames()


@pytest.fixture
def session(pool, frames):
    train, test, _ = frames
    with pool.open(train, test, LIMITS) as s:
        yield s


def submit_pipeline(session, extra: str = "[]", fit: str = "pipe.fit(X, train_df['target'])"):
    code = PIPELINE.replace("EXTRA", extra) + fit + "\n"
    code += "p = pipe.predict_proba(test_df)[:, 1]\n"
    code += "submit_answer({'y_pred_proba': p, 'pipeline': pipe})"
    recorder = Recorder()
    result = session.execute(code, on_submit=recorder)
    assert result.ok, result.output
    return result, recorder


def test_submit_round_trip_and_predict(session, frames):
    _, test, holdout = frames
    result, recorder = submit_pipeline(session)
    assert result.output == "submission accepted\n"  # printed once, not echoed again
    (request,) = recorder.requests
    assert request.key == "y_pred_proba" and request.shape == [200] and request.has_pipeline
    assert all(0 <= p <= 1 for p in request.proba)
    assert session.has_pipeline()
    # The pipeline reproduces the submitted numbers (the grader's consistency check).
    np.testing.assert_allclose(session.predict_proba(test), request.proba, rtol=1e-12)
    assert session.predict_proba(holdout).shape == (len(holdout),)


def test_submitted_pipeline_is_frozen(session, frames):
    _, test, _ = frames
    _, recorder = submit_pipeline(session)
    before = session.predict_proba(test)
    # Refitting the live object afterwards must not change THE submitted pipeline.
    assert session.execute("pipe.fit(X.iloc[:50], train_df['target'].iloc[:50]); 0").ok
    np.testing.assert_allclose(session.predict_proba(test), before)
    second = session.execute("submit_answer({'proba': [0.5] * 200})", on_submit=recorder)
    assert "already accepted" in second.output


def test_submit_without_callback_is_refused(session):
    result = session.execute("r = submit_answer({'y_pred_proba': [0.5] * 200})\nr")
    assert result.output == "submissions are not accepted here\n"
    assert not session.has_pipeline()


@pytest.mark.parametrize(
    ("payload", "problem", "shape"),
    [
        ("{'pred_proba': [0.1, 0.2], 'y_pred': 'no'}", None, [2]),
        ("{'probas': np.ones((200, 2)) / 2}", None, [200, 2]),
        ("{'y_pred_proba': ['a', 'b']}", "values are not numeric", [2]),
        ("{'y_pred_proba': [[0.1], [0.2, 0.3]]}", "not an array", None),
        ("{'predictions': [0.5]}", "no probability key; expected one of y_pred_proba", None),
        ("[0.5, 0.5]", "expected a dict", None),
    ],
)
def test_payloads_are_described_precisely(session, payload, problem, shape):
    recorder = Recorder()
    result = session.execute(f"submit_answer({payload})", on_submit=recorder)
    (request,) = recorder.requests
    assert request.shape == shape
    if problem is None:
        assert request.proba is not None and request.problem is None
    else:
        assert request.proba is None and problem in request.problem
        assert problem in result.output
    if shape == [200, 2]:
        assert "not 1-D" in result.output


def test_leak_audit_sees_only_the_leaky_pipeline(pool, frames):
    train, test, holdout = frames
    rng = np.random.default_rng(7)
    shuffled = holdout.copy()
    shuffled["leak_future_signal"] = rng.permutation(shuffled["leak_future_signal"].to_numpy())
    changes = {}
    for name, extra in (("leaky", "['leak_future_signal']"), ("clean", "[]")):
        with pool.open(train, test, LIMITS) as session:
            submit_pipeline(session, extra=extra)
            base = session.predict_proba(holdout)
            changes[name] = float(np.max(np.abs(session.predict_proba(shuffled) - base)))
    assert changes["leaky"] > 0.2
    assert changes["clean"] == 0.0


def test_fingerprint_flags_scaler_fit_on_train_and_test(pool, frames):
    train, test, _ = frames
    with pool.open(train, test, LIMITS) as honest:
        submit_pipeline(honest)
        fingerprint = honest.fingerprint()
    paths = {e["path"]: e for e in fingerprint["estimators"]}
    assert paths["pre/num/scale"]["features"] == NUM
    assert check_fingerprint(fingerprint, train, test) == []

    leaky_fit = (
        "both = pd.concat([X, test_df])\n"
        "pipe.fit(X, train_df['target'])\n"
        "pipe.named_steps['pre'].named_transformers_['num'].named_steps['scale'].fit(both[num])"
    )
    with pool.open(train, test, LIMITS) as cheat:
        submit_pipeline(cheat, fit=leaky_fit)
        reasons = check_fingerprint(cheat.fingerprint(), train, test)
    assert len(reasons) == 1
    assert reasons[0].startswith(
        "StandardScaler (pre/num/scale) was fit on train+test rows: mean of num_0 matches "
        "train+test, not train"
    )


def test_pipeline_bytes_and_load_pipeline(pool, session, frames):
    train, test, _ = frames
    submit_pipeline(session)
    data = session.pipeline_bytes()
    assert isinstance(data, bytes) and len(data) > 100
    expected = session.predict_proba(test)
    with pool.open(train, test, LIMITS) as grader:
        assert not grader.has_pipeline()
        grader.load_pipeline(data)
        assert grader.has_pipeline()
        np.testing.assert_allclose(grader.predict_proba(test), expected)
        with pytest.raises(SandboxError, match="cannot unpickle"):
            grader.load_pipeline(b"not a pickle")
        with pytest.raises(SandboxError, match="no predict_proba"):
            grader.load_pipeline(pickle.dumps({"a": 1}))
        # A malicious pickle runs only inside the worker: it kills the worker, not the harness.
        with pytest.raises(SandboxError):
            grader.load_pipeline(b"cos\n_exit\n(I0\ntR.")
        assert grader.execute("1").restarted


def test_no_pipeline(session):
    assert session.pipeline_bytes() is None
    assert session.pipeline_problem == "no pipeline was submitted"
    with pytest.raises(SandboxError, match="no pipeline"):
        session.predict_proba(pd.DataFrame())


SLOW_PIPELINE = (
    "import time\n"
    "from sklearn.base import BaseEstimator\n"
    "class Slow(BaseEstimator):\n"
    "    def predict_proba(self, X):\n"
    "        time.sleep(60)\n"
    "submit_answer({'proba': [0.5] * 200, 'pipeline': Slow()})"
)


def test_hanging_predict_times_out_and_pipeline_survives_restart(pool, frames):
    train, test, _ = frames
    # Without the submission check, which would run (and time out on) predict_proba itself.
    unchecked = dataclasses.replace(LIMITS, check_refit=False)
    with pool.open(train, test, unchecked) as session:
        _hang_and_restore(session, test, SLOW_PIPELINE)


def test_a_pipeline_whose_predict_hangs_is_stopped_at_submission(pool, frames):
    train, test, _ = frames
    recorder = Recorder()
    with pool.open(train, test, HANG) as session:
        result = session.execute(SLOW_PIPELINE, on_submit=recorder)
    assert result.timed_out and not recorder.requests


def _hang_and_restore(session, test, code):
    assert session.execute(code, on_submit=Recorder()).ok
    assert session.pipeline_bytes() is not None
    with pytest.raises(SandboxError, match="within 1 s"):
        session.predict_proba(test, timeout_s=1.0)
    # Its class lived in the lost namespace, but cloudpickle carried it by value: it comes back.
    result = session.execute("1")
    assert result.restarted and "pipeline was restored" in result.output
    assert session.has_pipeline()


def test_unpicklable_pipeline_stays_usable_in_its_worker(session, frames):
    _, test, _ = frames
    code = PIPELINE.replace("EXTRA", "[]") + (
        "import threading\n"
        "pipe.lock = threading.Lock()  # nothing can pickle a lock\n"
        "pipe.fit(X, train_df['target'])\n"
        "submit_answer({'y_pred_proba': pipe.predict_proba(test_df)[:, 1], 'pipeline': pipe})"
    )
    assert session.execute(code, on_submit=Recorder()).ok
    assert session.pipeline_bytes() is None
    assert "cannot be pickled" in session.pipeline_problem
    assert session.predict_proba(test).shape == (200,)


def test_failing_callback_does_not_wedge_the_session(session):
    def broken(request: SubmitRequest) -> SubmitReply:
        raise RuntimeError("grader bug")

    with pytest.raises(RuntimeError, match="grader bug"):
        session.execute("submit_answer({'proba': [0.5]})", on_submit=broken)
    result = session.execute("1 + 1")
    assert result.restarted and result.output.endswith("2\n")
