"""The command line as a user meets it: exit codes, stdout vs stderr, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from leakbench.settings import TaskSettings
from leakbench.task.generate import make_instance
from leakbench.task.keys import read_key

COMMANDS = ["generate", "run", "grade", "calibrate", "report", "selfcheck", "settings"]


def test_help_of_app_and_every_command(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
        sub = cli(command, "--help")
        assert sub.exit_code == 0, command
        assert "Example: leakbench" in sub.stdout, command


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.*")}


def test_generate_twice_is_identical_and_refuses_non_empty(cli, tmp_path):
    for name in ("a", "b"):
        args = ["generate", "--preset", "seed", "--seed", "42", "--public-seeds"]
        result = cli(*args, "--out", tmp_path / name)
        assert result.exit_code == 0, result.stderr
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and len(a) == 6 and "private/instance.key" not in a
    # the original project's instance 42, number for number
    assert a["public/train.csv"].split(b"\n")[1].startswith(b"0.30471707975443135,")
    result = cli("generate", "--preset", "seed", "--out", tmp_path / "a")
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: {tmp_path / 'a'}: folder is not empty (pick another --out or add --force)"
    )
    assert "Traceback" not in result.output


@pytest.fixture
def instance_dir(cli, tmp_path):
    out = tmp_path / "inst"
    assert cli("generate", "--preset", "seed", "--seed", "3", "--out", out).exit_code == 0
    return out


def test_generate_draws_a_secret_key_per_call(cli, tmp_path):
    for name in ("a", "b"):
        result = cli("generate", "--seed", "42", "--out", tmp_path / name)
        assert result.exit_code == 0, result.stderr
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == {
        "public/train.csv",
        "public/test.csv",
        "private/test_answers.csv",
        "private/holdout.csv",
        "private/holdout_answers.csv",
        "private/instance.key",
        "private/process.json",
        "instance.json",
    }
    assert a["private/instance.key"] != b["private/instance.key"]
    assert a["public/train.csv"] != b["public/train.csv"]
    key = read_key(tmp_path / "a/private")
    for rel, data in a.items():
        if rel != "private/instance.key":
            assert key.hex().encode() not in data, rel
            assert str(int.from_bytes(key, "big")).encode() not in data, rel


def test_grade_predictions_json_and_table(cli, tmp_path, instance_dir):
    inst = make_instance(TaskSettings(), 3, key=read_key(instance_dir / "private"))
    path = tmp_path / "p.csv"
    pd.DataFrame({"y_pred_proba": inst.oracle_test}).to_csv(path, index=False)
    result = cli("grade", "--instance", instance_dir, "--predictions", path, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["metrics"]["auroc"] == pytest.approx(inst.oracle_auroc, abs=1e-12)
    assert data["metrics"]["regret"] == pytest.approx(0.0, abs=1e-12)
    assert data["metric"] == "auroc" and data["threshold"] == 0.9471
    npy = tmp_path / "p.npy"
    np.save(npy, inst.oracle_test)
    result = cli("grade", "--instance", instance_dir, "--predictions", npy, "--threshold", "0.5")
    # seed requires a pipeline (the original submit_answer did): predictions alone fail ...
    assert result.exit_code == 0 and "verdict: FAILED" in result.stdout
    assert "a fitted pipeline is required" in result.stdout
    # ... unless the settings say a pipeline is not required.
    lax = {"LEAKBENCH_GRADING__REQUIRE_PIPELINE": "false"}
    result = cli(
        "grade", "--instance", instance_dir, "--predictions", npy, "--threshold", "0.5", env=lax
    )
    assert result.exit_code == 0 and "verdict: PASSED" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("p\n" + "0.5\n" * 199, "expected 200 probabilities"),
        ("p\n" + "0.5\n" * 199 + "nan\n", "NaN or infinite"),
        ("p\n" + "0.5\n" * 199 + "2\n", "must lie in [0, 1]"),
        ("p\n" + "0.5\n" * 199 + "abc\n", "'abc' on data row 200 is not a number"),
        ("0.5\n" * 201, "the first row '0.5' holds a number, not a column name"),
        ("a,b\n" + "0.5,0.5\n" * 200, "expected one probability column, got 2 columns"),
    ],
)
def test_grade_rejects_each_bad_file_with_exit_2(cli, tmp_path, instance_dir, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = cli("grade", "--instance", instance_dir, "--predictions", path)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_grade_rejects_bad_npy_and_2d(cli, tmp_path, instance_dir):
    path = tmp_path / "two.npy"
    np.save(path, np.full((200, 2), 0.5))
    result = cli("grade", "--instance", instance_dir, "--predictions", path)
    assert result.exit_code == 2 and "must be 1-D" in result.stderr
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not numpy")
    result = cli("grade", "--instance", instance_dir, "--predictions", path)
    assert result.exit_code == 2 and "not a readable .npy" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grading\n", "not valid TOML"),
        (
            "[grading]\nthreshhold = 1\n",
            "grading.threshhold: unknown key (did you mean 'threshold'?)",
        ),
        ("[run]\nruns = 'many'\n", "run.runs: Input should be a valid integer"),
    ],
)
def test_bad_config_is_one_line_exit_2(cli, tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    result = cli("--config", path, "settings")
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_settings_prints_resolved_toml(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKBENCH_RUN__CONCURRENCY", "3")
    result = cli("settings", "--preset", "seed")
    assert result.exit_code == 0
    assert 'preset = "seed"' in result.stdout and "threshold = 0.9471" in result.stdout
    assert "concurrency = 3" in result.stdout
    missing = cli("--config", tmp_path / "missing.toml", "settings")
    assert missing.exit_code == 2 and "config file not found" in missing.stderr


def test_cli_start_up_does_not_import_the_scientific_stack():
    # `leakbench --help` and bad-usage errors stay fast: commands import sklearn (and the
    # sandbox, the agents) only when they run.
    stack = "{'sklearn', 'anthropic', 'openai'}"
    code = f"import sys, leakbench.cli; print(sorted({stack} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
