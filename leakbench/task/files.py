"""An instance on disk: ``public/`` (what the agent sees), ``private/`` (the answers, the secret
instance key and, under a prior, the drawn process) and ``instance.json`` (seed, settings, column
roles, sha256 of the data files, oracle AUROC).

CSV with a column schema in ``instance.json``: readable by anything, byte-identical for the same
inputs, and exact (floats are written in shortest round-trip form and read back with pandas'
round-trip parser; categoricals get their declared categories back).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from leakbench import __version__
from leakbench.errors import UsageError
from leakbench.settings import FamilySettings, Settings, TaskSettings
from leakbench.store.files import sha256_file, write_atomic
from leakbench.task.generate import TARGET, Instance, make_instance
from leakbench.task.keys import KEY_FILE, PRIVATE_DIR_MODE, new_key, write_key

INSTANCE_SCHEMA_VERSION = 1
# Private files are readable by their owner only: sandbox workers run under other uids.
PRIVATE_MODE = 0o600
# pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs asking.
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


class ColumnInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Literal["numeric", "categorical", "target", "leak", "id"]
    dtype: str
    categories: list[int] | None = None
    leak_kind: str | None = None


class InstanceManifest(BaseModel):
    """``instance.json``: everything about an instance except its labels."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = INSTANCE_SCHEMA_VERSION
    leakbench_version: str = __version__
    seed: int
    preset: str
    settings_hash: str
    task: dict[str, Any]
    n_train: int
    n_test: int
    n_holdout: int
    columns: list[ColumnInfo]
    leak_columns: list[str]
    oracle_auroc: float
    holdout_oracle_auroc: float
    files: dict[str, str] = {}


class ProcessRecord(BaseModel):
    """``private/process.json``: the data-generating process an instance drew from its prior."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = INSTANCE_SCHEMA_VERSION
    seed: int
    family: FamilySettings


PROCESS_FILE = "private/process.json"


def column_schema(instance: Instance) -> list[ColumnInfo]:
    """Every column's role, in ``train_df``'s order. Leak columns keep their kind even under
    disguised naming: ``instance.json`` lives in the episode folder, never in the sandbox."""
    family = instance.task.family
    levels = dict(zip(family.categorical_columns(), family.cat_levels, strict=True))
    columns = []
    for name in instance.train.columns:
        dtype = str(instance.train[name].dtype)
        if name in instance.leak_kinds:
            info = ColumnInfo(
                name=name, role="leak", dtype=dtype, leak_kind=instance.leak_kinds[name]
            )
        elif name in instance.id_columns:
            info = ColumnInfo(name=name, role="id", dtype=dtype)
        elif name in levels:
            info = ColumnInfo(
                name=name,
                role="categorical",
                dtype="category",
                categories=list(range(levels[name])),
            )
        elif name == TARGET:
            info = ColumnInfo(name=name, role="target", dtype="int64")
        else:
            info = ColumnInfo(name=name, role="numeric", dtype="float64")
        columns.append(info)
    return columns


def manifest_for(instance: Instance, settings_hash: str) -> InstanceManifest:
    return InstanceManifest(
        seed=instance.seed,
        preset=instance.task.preset,
        settings_hash=settings_hash,
        task=instance.task.model_dump(mode="json"),
        n_train=len(instance.train),
        n_test=len(instance.test),
        n_holdout=len(instance.holdout),
        columns=column_schema(instance),
        leak_columns=list(instance.leak_columns),
        oracle_auroc=instance.oracle_auroc,
        holdout_oracle_auroc=instance.holdout_oracle_auroc,
    )


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _answers(y: np.ndarray, oracle: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({TARGET: y.astype(np.int64), "oracle_proba": oracle})


def write_instance(
    instance: Instance, folder: Path, settings_hash: str, *, key: bytes | None = None
) -> InstanceManifest:
    """Write the instance's files and its ``instance.json`` (last, so it marks a complete write).

    ``key`` (the instance key it was made with) goes to ``private/instance.key``. The key and
    the drawn process are not listed in ``instance.json``'s digests: a digest of a secret with
    few possible values (a process) could be searched.
    """
    folder = Path(folder)
    (folder / "private").mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    (folder / "private").chmod(PRIVATE_DIR_MODE)
    contents = {
        "public/train.csv": _csv(instance.train),
        "public/test.csv": _csv(instance.test),
        "private/test_answers.csv": _csv(_answers(instance.y_test, instance.oracle_test)),
        "private/holdout.csv": _csv(instance.holdout),
        "private/holdout_answers.csv": _csv(_answers(instance.y_holdout, instance.oracle_holdout)),
    }
    manifest = manifest_for(instance, settings_hash)
    for rel, text in contents.items():
        mode = PRIVATE_MODE if rel.startswith("private/") else 0o644
        write_atomic(folder / rel, text, mode=mode)
        manifest.files[rel] = sha256_file(folder / rel)
    if key is not None:
        write_key(folder / "private", key)
    else:  # a --force rewrite must not leave an earlier instance's key behind
        (folder / "private" / KEY_FILE).unlink(missing_ok=True)
    if instance.task.family.prior is not None and instance.process is not None:
        record = ProcessRecord(seed=instance.seed, family=instance.process)
        write_atomic(
            folder / PROCESS_FILE, record.model_dump_json(indent=2) + "\n", mode=PRIVATE_MODE
        )
    else:
        (folder / PROCESS_FILE).unlink(missing_ok=True)
    write_atomic(folder / "instance.json", manifest.model_dump_json(indent=2) + "\n")
    return manifest


def read_manifest(folder: Path) -> InstanceManifest:
    path = Path(folder) / "instance.json"
    if not path.is_file():
        raise UsageError(
            f"{folder}: not an instance folder (no instance.json)",
            hint="make one with `leakbench generate --out DIR`",
        )
    try:
        manifest = InstanceManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise UsageError(
            f"{path}: not a valid instance manifest: {exc.errors()[0]['msg']}"
        ) from None
    if manifest.schema_version != INSTANCE_SCHEMA_VERSION:
        raise UsageError(
            f"{path}: instance schema version {manifest.schema_version} is not supported "
            f"(this leakbench reads version {INSTANCE_SCHEMA_VERSION})"
        )
    return manifest


def _read_frame(path: Path, columns: list[ColumnInfo]) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8")
    header = text.split("\n", 1)[0].split(",")
    known = {c.name: c for c in columns}
    dtypes = {
        name: ("int64" if known[name].dtype == "category" else known[name].dtype)
        for name in header
        if name in known
    }
    frame = pd.read_csv(io.StringIO(text), dtype=dtypes, **_EXACT_FLOATS)
    for name in frame.columns:
        info = known.get(name)
        if info is not None and info.categories is not None:
            frame[name] = pd.Categorical(frame[name], categories=np.asarray(info.categories))
    return frame


def read_instance(folder: Path, *, verify: bool = True) -> Instance:
    """Load an instance folder, checking every file against its recorded sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if verify:
        for rel, digest in manifest.files.items():
            path = folder / rel
            if not path.is_file():
                raise UsageError(f"{folder}: missing file {rel}")
            if sha256_file(path) != digest:
                raise UsageError(f"{folder}: {rel} was changed after it was generated (sha256)")
    task = TaskSettings.model_validate(manifest.task)
    cols = manifest.columns
    test_answers = _read_frame(folder / "private/test_answers.csv", cols)
    holdout_answers = _read_frame(folder / "private/holdout_answers.csv", cols)
    process = task.family if task.family.prior is None else _read_process(folder)
    return Instance(
        seed=manifest.seed,
        task=task,
        train=_read_frame(folder / "public/train.csv", cols),
        test=_read_frame(folder / "public/test.csv", cols),
        y_test=test_answers[TARGET].to_numpy(),
        oracle_test=test_answers["oracle_proba"].to_numpy(),
        holdout=_read_frame(folder / "private/holdout.csv", cols),
        y_holdout=holdout_answers[TARGET].to_numpy(),
        oracle_holdout=holdout_answers["oracle_proba"].to_numpy(),
        leak_columns=list(manifest.leak_columns),
        leak_kinds={c.name: c.leak_kind for c in cols if c.role == "leak" and c.leak_kind},
        id_columns=[c.name for c in cols if c.role == "id"],
        process=process,
    )


def _read_process(folder: Path) -> FamilySettings | None:
    path = folder / PROCESS_FILE
    if not path.is_file():
        return None
    try:
        return ProcessRecord.model_validate_json(path.read_text(encoding="utf-8")).family
    except ValidationError as exc:
        raise UsageError(f"{path}: not a valid process record: {exc.errors()[0]['msg']}") from None


def generate_instances(
    settings: Settings,
    out: Path,
    *,
    count: int = 1,
    force: bool = False,
    key: bytes | None = None,
) -> list[tuple[Path, InstanceManifest]]:
    """Generate ``count`` instances from ``settings.task.seed`` on and write them under ``out``.

    They share one instance key: ``key``, or a fresh one (none with ``task.public_seeds``),
    stored in each instance's ``private/instance.key``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"{out}: folder is not empty", hint="pick another --out or add --force")
    task = settings.task
    if key is None and not task.public_seeds:
        key = new_key()
    settings_hash = settings.task_hash()
    written = []
    for i in range(count):
        seed = task.seed + i
        folder = out if count == 1 else out / f"seed-{seed}"
        instance = make_instance(task, seed, key=key)
        written.append((folder, write_instance(instance, folder, settings_hash, key=key)))
    return written
