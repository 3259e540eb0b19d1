"""`leakbench run` with local policies: outcomes, the results directory, interruption, resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leakbench.settings import TaskSettings
from leakbench.store.runs import RunDir
from leakbench.task.generate import make_instance
from leakbench.task.keys import read_key


def _run_dir(results: Path) -> Path:
    (path,) = [p for p in results.iterdir() if p.is_dir()]
    return path


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def test_baseline_20_runs_without_key_or_network(cli, tmp_path, monkeypatch):
    writes = []
    original = RunDir.write_manifest

    def counted(self, **changes):
        writes.append(changes.get("status"))
        original(self, **changes)

    monkeypatch.setattr(RunDir, "write_manifest", counted)
    results = tmp_path / "results"
    start = time.monotonic()
    result = cli("--results-dir", results, "run", "--model", "local/baseline", "--runs", "20")
    elapsed = time.monotonic() - start
    assert result.exit_code == 0, result.output
    run = _run_dir(results)
    assert result.stdout.strip().splitlines()[-1] == run.name  # the run id comes last
    lines = _lines(run)
    assert sorted(r["index"] for r in lines) == list(range(20))
    assert sorted(r["seed"] for r in lines) == list(range(20))
    assert {r["outcome"] for r in lines} <= {"passed", "failed"}
    assert all(not r["leaks_detected"] for r in lines)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["done"] == 20
    # Progress is rewritten at most once a second, not after each of the 20 episodes.
    assert "running" in writes and writes[-1] == "completed"
    assert len(writes) <= 3 + elapsed, (len(writes), elapsed)
    assert manifest["counts"]["passed"] == sum(r["passed"] for r in lines)
    assert (run / "settings.toml").is_file()
    episode = run / "episodes" / "0007"
    for name in ("instance.json", "transcript.jsonl", "grade.json", "submission/probabilities.csv"):
        assert (episode / name).is_file(), name
    assert (episode / "submission" / "pipeline.pkl").stat().st_size > 0
    instance = json.loads((episode / "instance.json").read_text())
    assert instance["seed"] == 7 and "oracle_auroc" in instance
    assert "target" not in json.dumps(instance["files"])  # no labels, no label files
    grade = json.loads((episode / "grade.json").read_text())
    record = next(r for r in lines if r["index"] == 7)
    assert grade["score"] == record["score"] == grade["metrics"][record["metric"]]
    events = [json.loads(line)["type"] for line in (episode / "transcript.jsonl").open()]
    assert events[0] == "begin" and events.count("turn") == 2 and "tool_result" in events


@pytest.mark.parametrize(
    ("policy", "outcome", "reason"),
    [
        ("leaky", "failed", "uses leak column leak_future_signal"),
        ("partial", "failed", "uses leak column leak_cat0_rate_full"),
        ("no-submit", "no_submission", "ended its turn without submitting"),
        ("invalid", "invalid", "NaN or infinite"),
    ],
)
def test_policies_end_as_their_outcome_with_the_reason(cli, tmp_path, policy, outcome, reason):
    results = tmp_path / "results"
    result = cli(
        "--results-dir", results, "run", "--model", f"local/{policy}", "--runs", "4", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary[outcome] == 4 and summary["passed"] == 0
    for line in _lines(_run_dir(results)):
        assert line["outcome"] == outcome
        assert any(reason in r for r in line["reasons"]), line["reasons"]


def test_leaky_never_passes_under_seed_either(cli, tmp_path):
    results = tmp_path / "results"
    args = ["--results-dir", results, "run", "--preset", "seed", "--model", "local/leaky"]
    result = cli(*args, "--runs", "6", "--json")
    assert result.exit_code == 0, result.output
    for line in _lines(_run_dir(results)):
        assert line["outcome"] == "failed"
        assert any("Bayes ceiling" in r for r in line["reasons"])
        assert "leak_future_signal" in line["leaks_detected"]


def test_bad_model_names_are_usage_errors(cli, tmp_path):
    result = cli("run", "--model", "local/baseline2")
    assert result.exit_code == 2
    assert "unknown local policy 'baseline2'" in result.stderr and "local/baseline" in result.stderr
    result = cli("run", "--model", "gemini/flash")
    assert result.exit_code == 2 and "unknown provider 'gemini'" in result.stderr
    assert "known: anthropic, openai, local" in result.stderr


def test_missing_api_key_fails_before_any_episode(cli, tmp_path):
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--model", "claude-haiku-4-5", "--runs", "2")
    assert result.exit_code == 1
    assert "ANTHROPIC_API_KEY" in result.stderr and result.stderr.count("\n") == 1
    assert not results.exists()


@contextlib.contextmanager
def _spawn(results: Path, runs: int, *extra: str) -> Iterator[subprocess.Popen]:
    """`leakbench run` in a session of its own; killed on the way out if it still runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    # Ctrl-C handled as in a terminal even when this suite was started in the background by a
    # non-interactive shell, which hands its children SIGINT ignored (Python then keeps it so).
    start = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'leakbench'; runpy.run_module('leakbench', run_name='__main__')"
    )
    cmd = [sys.executable, "-c", start, "-q", "--results-dir", str(results), "run"]
    cmd += ["--model", "local/baseline", "--runs", str(runs), "-j", "2", *extra]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        yield proc
    finally:
        # A failed test must not leave a run going; not yet reaped, its group id is still its own.
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _scratch_folders_of(pid: int) -> list[Path]:
    """The sandbox scratch folders of harness ``pid``. Other harnesses on the machine have theirs
    in the same temporary folder, and may remove them while we look."""
    found = []
    for owner in Path(tempfile.gettempdir()).glob("leakbench-sandbox-*/owner.lock"):
        with contextlib.suppress(OSError):
            if owner.read_text() == str(pid):
                found.append(owner.parent)
    return found


def _wait_for_lines(results: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [p for p in results.glob("*") if (p / "episodes.jsonl").exists()]
        if runs and len((runs[0] / "episodes.jsonl").read_text().splitlines()) >= n:
            return runs[0]
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def _assert_complete(run: Path, runs: int) -> None:
    lines = (run / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == runs
    records = [json.loads(line) for line in lines]
    assert sorted(r["seed"] for r in records) == list(range(runs))
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_kill_9_then_resume_gives_exactly_runs_episodes(cli, tmp_path):
    results = tmp_path / "results"
    with _spawn(results, 24) as proc:
        run = _wait_for_lines(results, 4, proc)
        scratch = _scratch_folders_of(proc.pid)
        assert len(scratch) == 1
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    # a crash mid-append leaves a truncated last line: resume must cope
    with open(run / "episodes.jsonl", "a") as handle:
        handle.write('{"schema_version": 1, "index": 2')
    result = cli("--results-dir", results, "run", "--resume", run.name)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in (run / "episodes.jsonl").read_text().splitlines() if ln.endswith("}")]
    assert len([json.loads(ln) for ln in lines if '"finished_at"' in ln]) == 24
    records = RunDir.open(run).records()
    assert sorted(r.seed for r in records) == list(range(24))
    assert len({r.index for r in records}) == 24
    assert not scratch[0].exists()  # the next pool swept the dead harness's scratch folders


@pytest.mark.slow
def test_ctrl_c_keeps_finished_episodes_and_resume_completes(cli, tmp_path):
    results = tmp_path / "results"
    with _spawn(results, 24) as proc:
        run = _wait_for_lines(results, 3, proc)
        os.killpg(proc.pid, signal.SIGINT)
        # the episodes under way wind down first, each on a busy machine
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err.decode()
    assert f"leakbench run --resume {run.name}" in err.decode()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    kept = len((run / "episodes.jsonl").read_text().splitlines())
    assert kept >= 3
    result = cli("--results-dir", results, "run", "--resume", run.name, "--concurrency", "3")
    assert result.exit_code == 0, result.output
    _assert_complete(run, 24)


def test_resume_refuses_other_settings_and_reruns_errors(cli, tmp_path):
    results = tmp_path / "results"
    assert cli("--results-dir", results, "run", "--runs", "3").exit_code == 0
    run = _run_dir(results)
    result = cli("--results-dir", results, "run", "--resume", run.name, "--preset", "seed")
    assert result.exit_code == 2 and "was made with other settings" in result.stderr
    assert "grading.metric" in result.stderr
    # an episode that ended in an infrastructure error is run again, its old line dropped
    lines = (run / "episodes.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    broken.update(outcome="error", passed=False, error="model API: overloaded")
    lines[1] = json.dumps(broken)
    (run / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("--results-dir", results, "run", "--resume", run.name)
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["outcome"] != "error" for r in records)
    assert "resuming: 2 of 3" in result.stderr


def test_regrade_run_with_a_new_threshold(cli, tmp_path):
    results = tmp_path / "results"
    for policy in ("baseline", "leaky"):
        args = ["--results-dir", results, "run", "--preset", "seed", "--runs", "3"]
        assert cli(*args, "--model", f"local/{policy}").exit_code == 0
    baseline, leaky = sorted(results.iterdir(), key=lambda p: "leaky" in p.name)
    result = cli("--results-dir", results, "grade", baseline.name, leaky.name, "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    assert "passed 3 of 3" in result.stdout and "passed 0 of 3" in result.stdout
    for line in _lines(leaky):  # a lower bar never lets a leak through
        assert line["threshold"] == 0.5 and "leak_future_signal" in line["leaks_detected"]
    grade = json.loads((baseline / "episodes/0001/grade.json").read_text())
    assert grade["passed"] and grade["threshold"] == 0.5
    assert "threshold = 0.5" in (baseline / "settings.toml").read_text()
    assert json.loads((baseline / "manifest.json").read_text())["counts"]["passed"] == 3
    result = cli("--results-dir", results, "grade", baseline.name, "--threshold", "0.999", "--json")
    assert json.loads(result.stdout)[0]["passed"] == 0
    assert all("< threshold 0.9990" in line["reasons"][-1] for line in _lines(baseline))
    # resume still accepts the run: its saved settings follow the re-grade
    assert cli("--results-dir", results, "run", "--resume", baseline.name).exit_code == 0


TAMPER = """
# Fit on every numeric column, leaks included, then patch this worker's sklearn so that it
# answers the grader with the leaky predictions on the public test and honestly elsewhere.
import sklearn.pipeline
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression

def model(columns):
    select = ColumnTransformer([("keep", "passthrough", columns)])
    return sklearn.pipeline.Pipeline([("select", select), ("clf", LogisticRegression())])

numeric = [c for c in test_df.columns if c not in ("cat0", "cat1")]
pipe = model(numeric).fit(train_df, train_df["target"])
honest = model([c for c in numeric if not c.startswith("leak_")]).fit(train_df, train_df["target"])
proba = pipe.predict_proba(test_df)[:, 1]
real = sklearn.pipeline.Pipeline.predict_proba
def fake(self, X):
    if self is pipe and len(X) == len(test_df):
        return np.column_stack([1 - proba, proba])
    return real(honest, X)
sklearn.pipeline.Pipeline.predict_proba = fake
submit_answer({"y_pred_proba": proba, "pipeline": pipe})
"""


def test_grader_runs_the_pipeline_in_a_fresh_worker(cli, tmp_path, monkeypatch):
    from leakbench.agents import local

    tamper = local.Policy("patches the worker to hide its leak", ((TAMPER,),))
    monkeypatch.setitem(local.POLICIES, "tamper", tamper)
    results = tmp_path / "results"
    # the seed preset: TAMPER's plain LogisticRegression cannot take default's NaN leak column
    args = ["--results-dir", results, "run", "--preset", "seed"]
    # Without the submission-time refit (a courtesy the agent's own worker does, which this
    # tampering would trip): what is tested is the grader's fresh worker.
    courtesy_off = {"LEAKBENCH_GRADING__REFIT_CHECK": "false"}
    result = cli(*args, "--model", "local/tamper", "--runs", "1", env=courtesy_off)
    assert result.exit_code == 0, result.output
    (line,) = _lines(_run_dir(results))
    assert line["outcome"] == "failed", line
    assert "leak_future_signal" in line["leaks_detected"]


def test_unpicklable_pipeline_is_refused_at_submission_so_the_agent_can_fix_it(
    cli, tmp_path, monkeypatch
):
    from leakbench.agents import local

    fit = local.POLICIES["baseline"].turns[1][0]
    locked = fit.replace(
        'submit_answer({"y_pred_proba": proba, "pipeline": pipe})',
        "import threading\npipe.lock = threading.Lock()\n"
        'submit_answer({"y_pred_proba": proba, "pipeline": pipe})',
    )
    fixed = 'del pipe.lock\nsubmit_answer({"y_pred_proba": proba, "pipeline": pipe})'
    policy = local.Policy("submits an unpicklable pipeline, then fixes it", ((locked,), (fixed,)))
    monkeypatch.setitem(local.POLICIES, "locked", policy)
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--model", "local/locked", "--runs", "1")
    assert result.exit_code == 0, result.output
    (line,) = _lines(_run_dir(results))
    assert line["outcome"] in ("passed", "failed") and line["submit_attempts"] == 2
    assert line["metrics"]["holdout_regret"] is not None  # graded in a fresh worker
    transcript = (_run_dir(results) / "episodes/0000/transcript.jsonl").read_text()
    assert "the pipeline cannot be pickled" in transcript


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_instance_key_stays_private_and_resume_reuses_it(cli, tmp_path):
    results = tmp_path / "results"
    result = cli("--results-dir", results, "run", "--model", "local/baseline", "--runs", "2")
    assert result.exit_code == 0, result.output
    run = _run_dir(results)
    key_file = run / "private" / "instance.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    key = read_key(run / "private")
    decimal = str(int.from_bytes(key, "big"))
    forms = [key.hex().encode(), key.hex().upper().encode(), decimal.encode(), key]
    files = [p for p in run.rglob("*") if p.is_file() and p != key_file]
    assert {"manifest.json", "settings.toml", "transcript.jsonl", "instance.json"} <= {
        p.name for p in files
    }
    for path in files:
        data = path.read_bytes()
        assert not any(form in data for form in forms), path
    for text in (result.stdout, result.stderr):
        assert key.hex() not in text and decimal not in text
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["public_seeds"] is False
    # the episodes' instances come from the key: regenerated with it, they match
    instance = json.loads((run / "episodes/0001/instance.json").read_text())
    regenerated = make_instance(RunDir.open(run).settings().task, 1, key=key)
    assert instance["oracle_auroc"] == regenerated.oracle_auroc

    # resume: episode 1 ended in an error and runs again, from the same key
    before = {i: _sha256(run / f"episodes/000{i}/instance.json") for i in (0, 1)}
    lines = (run / "episodes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        if record["index"] == 1:
            record.update(outcome="error", passed=False, error="model API: overloaded")
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    refused = cli("--results-dir", results, "run", "--resume", run.name, "--public-seeds")
    assert refused.exit_code == 2 and "task.public_seeds" in refused.stderr
    result = cli("--results-dir", results, "run", "--resume", run.name)
    assert result.exit_code == 0, result.output
    assert "resuming: 1 of 2" in result.stderr
    assert {i: _sha256(run / f"episodes/000{i}/instance.json") for i in (0, 1)} == before
    assert read_key(run / "private") == key
    # a new run draws a new key, so its instance 1 differs
    assert cli("--results-dir", results, "run", "--runs", "2").exit_code == 0
    (other,) = [p for p in results.iterdir() if p != run]
    assert read_key(other / "private") != key
    assert _sha256(other / "episodes/0001/instance.json") != before[1]


def test_public_seeds_reproduce_the_original_and_are_marked(cli, tmp_path):
    results = tmp_path / "results"
    args = ["--results-dir", results, "run", "--preset", "seed", "--runs", "2"]
    result = cli(*args, "--model", "local/baseline", "--public-seeds")
    assert result.exit_code == 0, result.output
    assert "not tamper-proof" in result.stderr
    run = _run_dir(results)
    assert not (run / "private").exists()  # no key to keep
    assert json.loads((run / "manifest.json").read_text())["public_seeds"] is True
    assert RunDir.open(run).instance_key() is None
    instance = json.loads((run / "episodes/0001/instance.json").read_text())
    original = make_instance(TaskSettings(public_seeds=True), 1, key=None)
    assert instance["oracle_auroc"] == original.oracle_auroc
    # report: the run is marked in the table and in the data formats
    assert cli(*args[:-1], "1", "--model", "local/baseline").exit_code == 0
    rows = json.loads(cli("--results-dir", results, "report", "--json").stdout)
    (row,) = rows
    assert row["runs"] == 2 and row["public_seed_runs"] == 1 and row["tamper_proof"] is False
    table = cli("--results-dir", results, "report").stdout
    assert "public seeds in 1 of 2 runs: NOT tamper-proof" in table
    episodes = json.loads(cli("--results-dir", results, "report", "--episodes", "--json").stdout)
    assert sorted(e["tamper_proof"] for e in episodes) == [False, False, True]
    csv = cli("--results-dir", results, "report", "--format", "csv").stdout
    assert "public_seed_runs,tamper_proof" in csv.splitlines()[0]
