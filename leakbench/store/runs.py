"""Run directories (SPEC §8): the manifest, the saved settings and the episodes log.

```
results/<UTC-time>_<model>_<short-id>/
  manifest.json     schema_version, version, argv, model, preset, status, counts, timings
  settings.toml     the resolved settings
  private/          instance.key, the run's secret instance key (0600 in a 0700 folder)
  episodes/<nnnn>/  instance.json, transcript.jsonl, submission/, grade.json
  episodes.jsonl    one line per finished episode, appended and flushed as each one ends
```
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leakbench import __version__
from leakbench.errors import LeakbenchError, UsageError
from leakbench.settings import Settings, load_settings_file
from leakbench.store.files import append_jsonl, read_jsonl, write_atomic
from leakbench.task.keys import new_key, read_key, write_key

RUN_SCHEMA_VERSION = 1
Outcome = Literal["passed", "failed", "invalid", "no_submission", "error"]
OUTCOMES: tuple[str, ...] = ("passed", "failed", "invalid", "no_submission", "error")
RunStatus = Literal["running", "completed", "completed_with_errors", "interrupted"]
WRITER_LOCK = "writer.lock"


class RunBusy(LeakbenchError):
    """Another leakbench (a run, a resume, a re-grade) is writing this run folder."""


class StoreError(LeakbenchError):
    """The results folder cannot be written (full disk, I/O error, permissions)."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RunManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = RUN_SCHEMA_VERSION
    leakbench_version: str = __version__
    run_id: str
    argv: list[str]
    model: str
    preset: str
    status: RunStatus
    isolation: str = "unknown"
    executor: str = "local"  # run.executor of the last session: local or ray
    # Episodes played again, over every session, because the Ray node playing them was lost.
    episodes_rerun: int = 0
    runs: int
    base_seed: int
    counts: dict[str, int] = Field(default_factory=dict)
    created_at: str
    updated_at: str
    wall_s: float = 0.0  # time spent running episodes, summed over every session of the run
    command_wall_s: float = 0.0  # whole commands (start-up included), summed over sessions
    usage: dict[str, float] = Field(default_factory=dict)  # every episode ever run, dropped too
    # What episodes that ended in error spent before resume dropped them to run them again.
    usage_of_dropped: dict[str, float] = Field(default_factory=dict)
    # Instances from public seeds (task.public_seeds) anyone can regenerate: not tamper-proof.
    # A manifest without the field comes from before instance keys, when every run was so.
    public_seeds: bool = True


class EpisodeRecord(BaseModel):
    """One line of ``episodes.jsonl``: everything a report needs about one episode."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = RUN_SCHEMA_VERSION
    index: int
    seed: int
    model: str
    preset: str
    outcome: Outcome
    passed: bool
    metric: str
    score: float | None = None
    threshold: float
    lower_is_better: bool = False
    metrics: dict[str, float | None] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)
    leaks_detected: list[str] = Field(default_factory=list)
    gates_passed: bool = False  # every check but the score threshold passed (see Grade)
    failed_checks: list[str] = Field(default_factory=list)  # codes, see grading.grade
    steps: int = 0
    tool_calls: int = 0
    submit_attempts: int = 0
    restarts: int = 0
    usage: dict[str, float] = Field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None
    started_at: str
    finished_at: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "model"


class RunDir:
    """One run directory. Appends are serialised by a lock; every other file is atomic."""

    def __init__(self, path: Path, manifest: RunManifest) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._lock = threading.Lock()
        self._writing = 0  # depth of writing() held by this object (it nests)

    # -- creating and opening ---------------------------------------------------------------

    @classmethod
    def create(
        cls, results_dir: Path, settings: Settings, argv: list[str], *, key: bytes | None = None
    ) -> RunDir:
        """A new run folder. Its instances come from ``key``, or from a fresh secret key stored
        in ``private/instance.key``; from no key at all with ``task.public_seeds``."""
        now = datetime.now(UTC)
        model = settings.agent.model
        run_id = f"{now:%Y%m%dT%H%M%SZ}_{_slug(model)}_{secrets.token_hex(3)}"
        path = Path(results_dir) / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise StoreError(
                f"cannot make a run folder in {results_dir}: {exc.strerror or exc}",
                hint="choose another folder with --results-dir",
            ) from None
        public = settings.task.public_seeds
        if public and key is not None:
            raise ValueError("a task.public_seeds run has no instance key")
        if not public:
            write_key(path / "private", key or new_key())
        stamp = utc_now()
        manifest = RunManifest(
            run_id=run_id,
            argv=argv,
            model=model,
            preset=settings.task.preset,
            status="running",
            runs=settings.run.runs,
            base_seed=settings.task.seed,
            created_at=stamp,
            updated_at=stamp,
            public_seeds=public,
        )
        run = cls(path, manifest)
        write_atomic(path / "settings.toml", settings.to_toml())
        run.write_manifest()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        return cls(path, read_manifest(path))

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def settings(self) -> Settings:
        settings = load_settings_file(self.path / "settings.toml")
        if self.manifest.public_seeds and not settings.task.public_seeds:
            # made before instance keys: its instances came from the public streams
            settings = settings.with_overrides({"task.public_seeds": True})
        return settings

    def instance_key(self) -> bytes | None:
        """The run's secret instance key (None for a run on public seeds), for whatever
        regenerates its instances: resume, reports."""
        if self.manifest.public_seeds:
            return None
        return read_key(self.path / "private")

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, purpose: str) -> Iterator[None]:
        """Hold the run's writer lock (an ``flock``, so it is released if this process dies):
        a second run, resume or re-grade of the same folder gets a one-line refusal. Nests:
        within a ``writing`` block of this object another one just goes on."""
        if self._writing:
            self._writing += 1
            try:
                yield
            finally:
                self._writing -= 1
            return
        lock = self.path / WRITER_LOCK
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise StoreError(f"run {self.run_id}: cannot write to {self.path}: {exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StoreError(f"run {self.run_id}: cannot lock {lock}: {exc}") from None
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                raise RunBusy(
                    f"run {self.run_id} is being written by another leakbench"
                    + (f" ({holder})" if holder else ""),
                    hint="wait for it to end, or stop it first",
                ) from None
            note = f"{purpose}, pid {os.getpid()} on {socket.gethostname()}, since {utc_now()}"
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, note.encode(), 0)
            self._writing = 1
            try:
                yield
            finally:
                self._writing = 0
        finally:
            os.close(fd)

    def write_manifest(self, **changes: Any) -> None:
        with self._lock:
            self.manifest = self.manifest.model_copy(update={**changes, "updated_at": utc_now()})
            write_atomic(
                self.path / "manifest.json", self.manifest.model_dump_json(indent=2) + "\n"
            )

    def episode_dir(self, index: int) -> Path:
        return self.path / "episodes" / f"{index:04d}"

    def fresh_episode_dir(self, index: int) -> Path:
        """An empty folder for episode ``index`` (what an interrupted attempt left is removed)."""
        folder = self.episode_dir(index)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def append(self, record: EpisodeRecord) -> None:
        with self._lock:
            append_jsonl(self.path / "episodes.jsonl", record.model_dump(mode="json"))

    def rewrite_records(self, records: list[EpisodeRecord]) -> None:
        """Replace ``episodes.jsonl`` atomically (resume drops error lines it will run again)."""
        with self._lock:
            text = "".join(r.model_dump_json() + "\n" for r in records)
            write_atomic(self.path / "episodes.jsonl", text)

    # -- reading -------------------------------------------------------------------------------

    def records(self) -> list[EpisodeRecord]:
        """The finished episodes, one per index (the last line wins), in index order."""
        by_index: dict[int, EpisodeRecord] = {}
        for raw in read_jsonl(self.path / "episodes.jsonl"):
            try:
                record = EpisodeRecord.model_validate(raw)
            except ValidationError:
                continue
            by_index[record.index] = record
        return [by_index[i] for i in sorted(by_index)]


def read_manifest(path: Path) -> RunManifest:
    file = Path(path) / "manifest.json"
    if not file.is_file():
        raise UsageError(f"{path}: not a run directory (no manifest.json)")
    try:
        raw = file.read_text(encoding="utf-8")
        manifest = RunManifest.model_validate_json(raw)
    except ValidationError as exc:
        version = _schema_version(raw)
        if version is not None and version != RUN_SCHEMA_VERSION:
            raise UsageError(
                f"{file}: run schema version {version} is not supported by leakbench "
                f"{__version__} (it reads version {RUN_SCHEMA_VERSION})"
            ) from None
        raise UsageError(f"{file}: not a valid run manifest: {exc.errors()[0]['msg']}") from None
    if manifest.schema_version != RUN_SCHEMA_VERSION:
        raise UsageError(
            f"{file}: run schema version {manifest.schema_version} is not supported by "
            f"leakbench {__version__} (it reads version {RUN_SCHEMA_VERSION})"
        )
    return manifest


def _schema_version(raw: str) -> int | None:
    try:
        value = json.loads(raw).get("schema_version")
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def summarize(records: list[EpisodeRecord]) -> dict[str, int]:
    counts = Counter(r.outcome for r in records)
    return {"done": len(records), **{o: counts.get(o, 0) for o in OUTCOMES}}


def total_usage(records: list[EpisodeRecord], *more: dict[str, float]) -> dict[str, float]:
    """Tokens and cost summed over ``records`` (and any further usage dicts)."""
    totals: Counter[str] = Counter()
    for usage in [*(r.usage for r in records), *more]:
        totals.update(usage)
    return dict(totals)


def find_run(results_dir: Path, run: str) -> Path:
    """A run folder from an id, a unique id prefix, or a path."""
    as_path = Path(run)
    if (as_path / "manifest.json").is_file():
        return as_path
    candidate = Path(results_dir) / run
    if (candidate / "manifest.json").is_file():
        return candidate
    matches = sorted(
        p for p in Path(results_dir).glob(f"{run}*") if (p / "manifest.json").is_file()
    )
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"run '{run}' is ambiguous: {', '.join(p.name for p in matches[:5])}")
    raise UsageError(f"no run '{run}' in {results_dir}", hint="list runs with `leakbench report`")


def list_runs(results_dir: Path) -> list[Path]:
    folder = Path(results_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file())
