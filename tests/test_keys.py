"""Secret instance keys: storage, streams, and that prompts reveal nothing of an instance."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from leakbench.env.prompts import build_prompts
from leakbench.errors import LeakbenchError, UsageError
from leakbench.settings import SettingsSources, resolve
from leakbench.task.keys import InstanceStreams, new_key, read_key, write_key


def test_new_keys_are_256_bit_and_fresh():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 32 for k in keys)


def test_key_file_is_owner_only_in_an_owner_only_folder(tmp_path):
    folder = tmp_path / "private"
    folder.mkdir(mode=0o755)
    key = new_key()
    path = write_key(folder, key)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key(folder) == key
    assert [p.name for p in folder.iterdir()] == ["instance.key"]  # no temp file left


def test_missing_or_broken_key_is_a_clear_error(tmp_path):
    with pytest.raises(LeakbenchError, match="instance key not found"):
        read_key(tmp_path)
    (tmp_path / "instance.key").write_text("not hex\n")
    with pytest.raises(UsageError, match="not an instance key"):
        read_key(tmp_path)
    (tmp_path / "instance.key").write_text("ab" * 16 + "\n")  # 16 bytes: too short
    with pytest.raises(UsageError, match="not an instance key"):
        read_key(tmp_path)


def test_public_streams_are_the_original_seeding():
    streams = InstanceStreams(None, 42)
    assert streams.features is streams.noise is streams.holdout  # one stream, drawn in order
    assert np.array_equal(streams.features.random(3), np.random.default_rng(42).random(3))
    assert streams.leak(2).random() == np.random.default_rng([42, 1, 2]).random()
    assert streams.process().random() == np.random.default_rng([42, 2]).random()
    assert streams.names().random() == np.random.default_rng([42, 3]).random()


def test_keyed_streams_depend_on_every_bit_of_key_seed_and_name():
    key = bytes(32)
    flipped = bytes([1]) + bytes(31)

    def first(k: bytes, seed: int, pick) -> float:
        return float(pick(InstanceStreams(k, seed)).random())

    streams = [
        lambda s: s.features,
        lambda s: s.noise,
        lambda s: s.holdout,
        lambda s: s.process(),
        lambda s: s.names(),
        lambda s: s.leak(0),
        lambda s: s.leak(1),
    ]
    values = [first(key, 7, pick) for pick in streams]
    assert len(set(values)) == len(values)  # independent streams
    assert values == [first(key, 7, pick) for pick in streams]  # deterministic
    assert all(first(flipped, 7, p) != v for p, v in zip(streams, values, strict=True))
    assert all(first(key, 8, p) != v for p, v in zip(streams, values, strict=True))
    public = InstanceStreams(None, 7)
    assert first(key, 7, streams[0]) != float(public.features.random())


@pytest.mark.parametrize("preset", ["default", "disguised"])
def test_prompts_are_the_same_under_any_key(preset):
    # build_prompts probes an instance under a throwaway key: nothing of it may show.
    settings = resolve(SettingsSources(preset=preset, environ={}))
    system, task = build_prompts(settings)
    assert (system, task) == build_prompts(settings)
    assert "num_12" in task if preset == "disguised" else "leak_future_signal" in task
