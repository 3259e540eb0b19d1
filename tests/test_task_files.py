from __future__ import annotations

import hashlib
import json
import stat

import numpy as np
import pandas as pd
import pytest

from leakbench.errors import UsageError
from leakbench.settings import SettingsSources, resolve
from leakbench.task.files import generate_instances, read_instance
from leakbench.task.generate import make_instance

SEED = resolve(SettingsSources(preset="seed", environ={}))


def _digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_inputs_give_byte_identical_files(tmp_path):
    generate_instances(SEED.with_overrides({"task.seed": 42}), tmp_path / "a")
    generate_instances(SEED.with_overrides({"task.seed": 42}), tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_public_and_private_hold_exactly_what_they_should(tmp_path):
    ((folder, _),) = generate_instances(SEED, tmp_path / "i")
    assert sorted(p.name for p in (folder / "public").iterdir()) == ["test.csv", "train.csv"]
    assert sorted(p.name for p in (folder / "private").iterdir()) == [
        "holdout.csv",
        "holdout_answers.csv",
        "test_answers.csv",
    ]
    test_header = (folder / "public/test.csv").read_text().split("\n", 1)[0].split(",")
    assert "target" not in test_header
    train_header = (folder / "public/train.csv").read_text().split("\n", 1)[0].split(",")
    assert "target" in train_header
    for path in (folder / "private").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads((folder / "instance.json").read_text())
    assert data["seed"] == 0 and data["preset"] == "seed"
    assert set(data["files"]) == {
        "public/train.csv",
        "public/test.csv",
        "private/test_answers.csv",
        "private/holdout.csv",
        "private/holdout_answers.csv",
    }
    assert data["oracle_auroc"] == pytest.approx(make_instance(SEED.task, 0).oracle_auroc)
    roles = {c["name"]: c["role"] for c in data["columns"]}
    assert roles["leak_future_signal"] == "leak" and roles["cat0"] == "categorical"


def test_files_round_trip_exactly_with_dtypes(tmp_path):
    ((folder, _),) = generate_instances(SEED.with_overrides({"task.seed": 9}), tmp_path / "i")
    back, orig = read_instance(folder), make_instance(SEED.task, 9)
    for name in ("train", "test", "holdout"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(orig, name), check_exact=True)
    for name in ("y_test", "oracle_test", "y_holdout", "oracle_holdout"):
        assert np.array_equal(getattr(back, name), getattr(orig, name))


def test_tampered_file_and_non_empty_folder_are_refused(tmp_path):
    ((folder, _),) = generate_instances(SEED, tmp_path / "i")
    with pytest.raises(UsageError, match="not empty"):
        generate_instances(SEED, folder)
    generate_instances(SEED, folder, force=True)
    with open(folder / "private/test_answers.csv", "a") as handle:
        handle.write("1,0.5\n")
    with pytest.raises(UsageError, match=r"test_answers\.csv was changed"):
        read_instance(folder)


def test_count_writes_one_folder_per_seed(tmp_path):
    written = generate_instances(SEED.with_overrides({"task.seed": 5}), tmp_path / "m", count=3)
    assert [f.name for f, _ in written] == ["seed-5", "seed-6", "seed-7"]
    assert [m.seed for _, m in written] == [5, 6, 7]
