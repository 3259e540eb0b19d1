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
from leakbench.task.keys import new_key, read_key

SEED = resolve(SettingsSources(preset="seed", environ={}))
PUBLIC = SEED.with_overrides({"task.public_seeds": True})
DEFAULT = resolve(SettingsSources(preset="default", environ={}))


def _digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_inputs_give_byte_identical_files(tmp_path):
    key = new_key()
    for name in ("a", "b"):
        generate_instances(DEFAULT.with_overrides({"task.seed": 42}), tmp_path / name, key=key)
        generate_instances(PUBLIC.with_overrides({"task.seed": 42}), tmp_path / f"public-{name}")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "public-a") == _digests(tmp_path / "public-b")
    assert not (tmp_path / "public-a/private/instance.key").exists()  # no key to keep


def test_each_generate_call_draws_its_own_key(tmp_path):
    for name in ("a", "b"):
        generate_instances(DEFAULT.with_overrides({"task.seed": 42}), tmp_path / name)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a["private/instance.key"] != b["private/instance.key"]
    assert a["public/train.csv"] != b["public/train.csv"]
    assert read_key(tmp_path / "a/private") != read_key(tmp_path / "b/private")


def test_public_and_private_hold_exactly_what_they_should(tmp_path):
    ((folder, _),) = generate_instances(SEED, tmp_path / "i")
    assert sorted(p.name for p in (folder / "public").iterdir()) == ["test.csv", "train.csv"]
    assert sorted(p.name for p in (folder / "private").iterdir()) == [
        "holdout.csv",
        "holdout_answers.csv",
        "instance.key",
        "test_answers.csv",
    ]
    assert stat.S_IMODE((folder / "private").stat().st_mode) == 0o700
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
    key = read_key(folder / "private")
    assert key.hex() not in (folder / "instance.json").read_text()
    assert data["oracle_auroc"] == pytest.approx(make_instance(SEED.task, 0, key=key).oracle_auroc)
    roles = {c["name"]: c["role"] for c in data["columns"]}
    assert roles["leak_future_signal"] == "leak" and roles["cat0"] == "categorical"


def test_files_round_trip_exactly_with_dtypes(tmp_path):
    ((folder, _),) = generate_instances(SEED.with_overrides({"task.seed": 9}), tmp_path / "i")
    back = read_instance(folder)
    orig = make_instance(SEED.task, 9, key=read_key(folder / "private"))
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
    keys = {read_key(folder / "private") for folder, _ in written}
    assert len(keys) == 1  # one key per generate call


def test_drawn_process_is_kept_private_and_read_back(tmp_path):
    ((folder, manifest),) = generate_instances(DEFAULT, tmp_path / "d")
    process = json.loads((folder / "private/process.json").read_text())
    assert stat.S_IMODE((folder / "private/process.json").stat().st_mode) == 0o600
    weights = process["family"]["num_weights"]
    assert sorted(abs(w) for w in weights) == [0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    # instance.json (which sits in an episode folder) has the prior, not the draw
    family = json.loads((folder / "instance.json").read_text())["task"]["family"]
    assert set(family) == {"cat_levels", "noise_sd", "prior"}
    assert family["prior"]["num_weights"] == [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
    assert set(manifest.files) == {
        "public/train.csv",
        "public/test.csv",
        "private/test_answers.csv",
        "private/holdout.csv",
        "private/holdout_answers.csv",
    }
    back = read_instance(folder)
    key = read_key(folder / "private")
    assert back.process == make_instance(DEFAULT.task, 0, key=key).process
    assert back.process.prior is None and back.process.num_weights == weights
