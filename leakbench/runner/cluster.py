"""A run's episodes on the nodes of a Ray cluster (``run.executor = "ray"``, SPEC §12).

Each node with a CPU gets one long-lived actor, ``NodeEpisodes``, which owns that node's sandbox
pool (one zygote per node) and plays episodes exactly as a local run does (``Episode``), in a
private scratch folder. It hands each finished episode back whole: its record and its files.
The driver is the run's only writer: ``RayEpisodes`` writes each episode's files atomically,
then appends its record, so a cluster run's folder is a local run's folder (resume, re-grade,
``report`` and ``view`` read it unchanged) and killing the driver loses or repeats nothing.

A node that dies mid-episode takes that episode with it; the driver runs it again on another
node. An index is written once: the driver counts what it writes, never what the nodes report.

Secrets cross the boundary in memory only: the instance key and the model API's variables are
the arguments of one actor call (``NodeEpisodes.start``), held in the actor's process. The
sandbox zygote on each node starts from an environment built from nothing (``sandbox.pool``),
as it does locally.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from leakbench import __version__
from leakbench.errors import LeakbenchError
from leakbench.settings import Settings
from leakbench.store.files import owned_temp_folder, sweep_abandoned, write_atomic
from leakbench.store.runs import EpisodeRecord, RunDir

INSTALL_HINT = 'install the extra on the driver and on every node: pip install "leakbench[ray]"'
SCRATCH_PREFIX = "leakbench-node-"
# How long the driver waits for every node's actor to launch its sandbox pool and say so.
READY_TIMEOUT_S = 180.0
# How long the driver waits for the cluster's address to answer at all.
PROBE_TIMEOUT_S = 10.0
# The longest the dispatcher waits for a result before it looks at the run's cancel flag again.
POLL_S = 0.2


def import_ray() -> Any:
    """The ``ray`` module, or a ``LeakbenchError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LeakbenchError(
            'run.executor = "ray" needs Ray, which is not installed', hint=INSTALL_HINT
        ) from None
    return ray


class NodeEpisodes:
    """The actor on one node: its sandbox pool and the episodes played there.

    Made through ``ray.remote`` by ``RayEpisodes``; a plain class, so it is testable without Ray.
    The constructor launches the node's sandbox zygote; ``start`` takes the secrets (the
    instance key and the model API client's variables from ``agents.client_environment``) as
    arguments of an actor call (unlike constructor arguments, not kept in Ray's actor table),
    and sets the variables in this process's environment only: the sandbox never inherits it.
    """

    def __init__(self, settings: Settings, prompts: tuple[str, str], node_cpus: int) -> None:
        from leakbench.sandbox import SandboxPool

        self.settings, self.prompts, self.node_cpus = settings, prompts, node_cpus
        self.pool = SandboxPool()
        self.pool.launch()  # the zygote imports its stack while the driver sends the secrets
        self.env: Any = None
        # Episodes are played in this actor's own folder (0700). A killed actor (its node lost,
        # its driver killed) cannot remove its folder: the next actor on the machine does.
        sweep_abandoned(SCRATCH_PREFIX)
        folder, self._owner = owned_temp_folder(SCRATCH_PREFIX)
        self.scratch = Path(folder)

    def start(self, instance_key: bytes | None, secrets: dict[str, str]) -> dict[str, Any]:
        """Wait for the sandbox, make the model API client; what the driver checks before
        sending episodes: version, isolation, host."""
        from leakbench.agents import api_client, make_agent
        from leakbench.runner.episode import EpisodeEnv

        settings = self.settings
        os.environ.update(secrets)
        self.pool.start()
        client = api_client(settings)
        model = settings.agent.model
        self.env = EpisodeEnv(
            settings=settings,
            pool=self.pool,
            make_agent=lambda: make_agent(model, settings, client),
            prompts=self.prompts,
            sandbox_slots=threading.Semaphore(
                settings.run.sandbox_concurrency or max(1, self.node_cpus)
            ),
            instance_key=instance_key,
        )
        return {
            "version": __version__,
            "isolation": self.pool.isolation,
            "isolation_note": self.pool.isolation_note,
            "host": socket.gethostname(),
        }

    def run_episode(self, index: int) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Play episode ``index``: its record (as JSON data) and its files by relative path."""
        from leakbench.runner.episode import Episode

        folder = Path(tempfile.mkdtemp(prefix=f"ep{index}-", dir=self.scratch))
        try:
            record = Episode(self.env, index, folder).run()
            files = {
                path.relative_to(folder).as_posix(): path.read_bytes()
                for path in sorted(folder.rglob("*"))
                if path.is_file()
            }
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return record.model_dump(mode="json"), files

    def close(self) -> None:
        self.pool.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._owner >= 0:
            os.close(self._owner)
            self._owner = -1


@dataclass
class _Node:
    node_id: str
    cpus: int
    actor: Any
    host: str = ""
    in_flight: int = 0
    alive: bool = True

    @property
    def label(self) -> str:
        """How messages and the per-node counts name it: host and the start of its Ray id."""
        return f"{self.host}:{self.node_id[:8]}" if self.host else self.node_id[:8]


@dataclass
class ClusterStats:
    """Where a run's episodes went: per node (host:node-id prefix), and how many ran again."""

    episodes: collections.Counter[str] = field(default_factory=collections.Counter)
    rerun: int = 0  # episodes run again because their node was lost before returning them
    nodes_lost: int = 0


class RayEpisodes:
    """A run's episodes on a Ray cluster (an ``EpisodeSource`` of ``runner.run``).

    ``join`` joins (or starts) the cluster; ``start_nodes`` launches one actor per node with a
    CPU; ``play`` dispatches episodes to them from a thread of the driver; ``close`` ends the
    actors and, if this object joined Ray, leaves it.
    """

    kind = "ray"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ray = import_ray()
        self.isolation = "unknown"
        self.isolation_note: str | None = None
        self.notes: list[str] = []  # what the user should hear (nodes left out, a mixed cluster)
        self.stats = ClusterStats()
        self._nodes: dict[str, _Node] = {}
        self._owns_ray = False
        self._actor_class: Any = None
        self._actor_args: tuple[Any, ...] = ()
        self._secrets: tuple[bytes | None, dict[str, str]] = (None, {})
        self._thread: threading.Thread | None = None

    @property
    def episodes_rerun(self) -> int:
        return self.stats.rerun

    @property
    def node_count(self) -> int:
        """Nodes playing episodes now."""
        return sum(node.alive for node in self._nodes.values())

    # -- start and stop --------------------------------------------------------------------------

    def join(self) -> None:
        """Join the cluster (``run.ray_address``, else ``RAY_ADDRESS``, else a Ray started here);
        a ``LeakbenchError`` saying which address failed. Already joined: that Ray is used."""
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.settings.run.ray_address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address is None:
            options["include_dashboard"] = False  # only a Ray started here takes this
        # ray.init installs a SIGTERM handler of its own (sys.exit); the caller's, such as the
        # command line's (SIGTERM -> interrupted run, exit 143), is put back.
        main = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            if address is not None:
                _probe(_bootstrap_address(address))  # Ray waits forever on a silent address
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LeakbenchError(
                f"cannot join the Ray cluster at {address or 'a new local Ray'}: "
                f"{_first_line(exc)}",
                hint="check run.ray_address (--ray-address) or RAY_ADDRESS; `ray status` on the "
                "head node shows whether the cluster is up",
            ) from None
        finally:
            if on_sigterm is not None:
                signal.signal(signal.SIGTERM, on_sigterm)
        self._owns_ray = True

    def start_nodes(
        self, prompts: tuple[str, str], instance_key: bytes | None, secrets: dict[str, str]
    ) -> None:
        """Start one actor per node; returns once every actor is ready (or has failed: a node
        whose actor cannot start is left out, and said so)."""
        self.join()
        settings = self.settings
        concurrency = settings.run.node_concurrency or settings.run.concurrency
        # A threaded actor: episodes wait on models and sandboxes, not on the actor's CPU. Two
        # more threads answer start() and close() while episodes run.
        self._actor_class = self.ray.remote(max_concurrency=concurrency + 2, max_restarts=0)(
            NodeEpisodes
        )
        self._actor_args = (settings, prompts)
        self._secrets = (instance_key, secrets)
        self._add_new_nodes()
        if not self.node_count:
            raise LeakbenchError(
                "no Ray node could run episodes: " + ("; ".join(self.notes) or "none has a CPU"),
                hint="every node needs leakbench (the driver's version) with the ray extra, "
                "and a CPU for Ray",
            )

    def _add_new_nodes(self) -> None:
        """Launch an actor on every live node with a CPU that has none (alive) yet; wait for
        them, all at once."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        fresh: list[tuple[_Node, Any]] = []
        for info in ray.nodes():
            node_id, cpus = info["NodeID"], int(info.get("Resources", {}).get("CPU", 0))
            known = self._nodes.get(node_id)
            if not info.get("Alive") or cpus < 1 or (known is not None and known.alive):
                continue
            actor = self._actor_class.options(
                num_cpus=1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(*self._actor_args, cpus)
            node = self._nodes[node_id] = _Node(node_id, cpus, actor)
            fresh.append((node, actor.start.remote(*self._secrets)))
        deadline = time.monotonic() + READY_TIMEOUT_S
        isolations = {self.isolation} - {"unknown"}
        for node, started in fresh:
            try:
                info = ray.get(started, timeout=max(1.0, deadline - time.monotonic()))
            except Exception as exc:  # a node that cannot start: left out, said so
                node.alive = False
                why = _ray_error(exc)
                if isinstance(exc, ray.exceptions.GetTimeoutError):
                    why = (
                        f"its actor was not ready within {READY_TIMEOUT_S:.0f} s (no free CPU for "
                        "it, as when another run's actors hold them all?)"
                    )
                self.notes.append(f"node {node.label} left out: {why}")
                with contextlib.suppress(Exception):
                    ray.kill(node.actor)
                continue
            if info["version"] != __version__:
                node.alive = False
                self.notes.append(
                    f"node {info['host']} left out: it has leakbench {info['version']}, "
                    f"the driver {__version__}"
                )
                ray.kill(node.actor)
                continue
            node.host = info["host"]
            isolations.add(info["isolation"])
            if info["isolation_note"]:
                self.isolation_note = info["isolation_note"]
        # The run states the weakest isolation any of its episodes had.
        for level in ("reduced", "full"):
            if level in isolations:
                self.isolation = level
                break

    def close(self) -> None:
        """Stop dispatching, end every actor (their sandboxes go with them) and leave Ray if
        this joined it. Once this returns nothing more is written to the run."""
        ray = self.ray
        if self._thread is not None:
            self._thread.join(timeout=30)  # it stops within POLL_S once the run is cancelled
        closing = [n.actor.close.remote() for n in self._nodes.values() if n.alive]
        with contextlib.suppress(Exception):
            ray.wait(closing, num_returns=len(closing), timeout=10)
        for node in self._nodes.values():
            with contextlib.suppress(Exception):
                ray.kill(node.actor)
        self._nodes.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False

    # -- episodes --------------------------------------------------------------------------------

    def play(
        self,
        run: RunDir,
        todo: list[int],
        finished: queue.Queue[EpisodeRecord | BaseException],
        cancel: threading.Event,
    ) -> None:
        self._thread = threading.Thread(
            target=self._dispatch,
            args=(run, collections.deque(todo), finished, cancel),
            name="ray-dispatch",
            daemon=True,
        )
        self._thread.start()

    def _dispatch(
        self,
        run: RunDir,
        waiting: collections.deque[int],
        finished: queue.Queue[EpisodeRecord | BaseException],
        cancel: threading.Event,
    ) -> None:
        """Keep every node busy up to the caps; write each episode that comes back. An index is
        in flight once at a time and goes back to ``waiting`` only when its result is lost, so
        each is written once. A fault goes to ``finished``: the dispatcher is never lost
        silently."""
        try:
            in_flight: dict[Any, tuple[int, _Node]] = {}
            while (waiting or in_flight) and not cancel.is_set():
                self._fill(waiting, in_flight)
                if not in_flight:  # every node is lost
                    self._replace_lost_nodes(len(waiting), run)
                    continue
                ready, _ = self.ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    index, node = in_flight.pop(ref)
                    node.in_flight -= 1
                    episode = self._take(ref, node)
                    if episode is None:
                        waiting.appendleft(index)  # its node is lost: play it elsewhere
                    elif not cancel.is_set():
                        data, files = episode
                        record = EpisodeRecord.model_validate(data)
                        _write_episode(run, index, files)
                        run.append(record)  # the commit point: done once its line is written
                        self.stats.episodes[node.label] += 1
                        finished.put(record)
        except BaseException as exc:
            if not cancel.is_set():
                finished.put(exc)

    def _fill(
        self, waiting: collections.deque[int], in_flight: dict[Any, tuple[int, _Node]]
    ) -> None:
        """Send waiting episodes to the least busy live nodes, up to the caps."""
        total_cap = self.settings.run.concurrency
        node_cap = self.settings.run.node_concurrency or total_cap
        while waiting and len(in_flight) < total_cap:
            node = self._pick(node_cap)
            if node is None:
                return
            index = waiting.popleft()
            node.in_flight += 1
            in_flight[node.actor.run_episode.remote(index)] = (index, node)

    def _replace_lost_nodes(self, not_run: int, run: RunDir) -> None:
        """Every node is lost: start actors on any that joined, else stop the run (resume
        plays the rest)."""
        self._add_new_nodes()
        if not self.node_count:
            raise LeakbenchError(
                f"every Ray node was lost; {not_run} episodes not run",
                hint=f"when nodes are back: leakbench run --resume {run.run_id}",
            )

    def _take(self, ref: Any, node: _Node) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """An episode's result, or None when its node (or the result) is lost."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError:
            raise  # a fault of the harness on the node, not of the node: say it
        except ray.exceptions.RayError as exc:
            if node.alive:
                node.alive = False
                self.stats.nodes_lost += 1
                self.notes.append(f"node {node.label} lost: {_ray_error(exc)}")
            self.stats.rerun += 1
            return None

    def _pick(self, node_cap: int) -> _Node | None:
        """The live node with the fewest episodes in flight per CPU, below ``node_cap``."""
        live = [n for n in self._nodes.values() if n.alive and n.in_flight < node_cap]
        return min(live, key=lambda n: (n.in_flight / n.cpus, -n.cpus), default=None)


def _write_episode(run: RunDir, index: int, files: dict[str, bytes]) -> None:
    """Write an episode's files into its fresh folder; names that would leave it are refused."""
    folder = run.fresh_episode_dir(index)
    for name, data in files.items():
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise LeakbenchError(f"episode {index}: a node sent a file named {name!r}")
        target = folder.joinpath(*parts)
        write_atomic(target, data)


def _bootstrap_address(address: str) -> str:
    """HOST:PORT for ``address``; ``auto`` is looked up as Ray does (the cluster ``ray start``
    recorded on this machine, which may be stale), with Ray's own helper."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without the helper: leave the lookup to ray.init
        return address
    return canonicalize_bootstrap_address(address) or address


def _probe(address: str) -> None:
    """A ``ConnectionError`` unless something answers on ``address``'s port (HOST:PORT or
    ray://HOST:PORT; ``auto`` and other forms are Ray's to resolve)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _ray_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"
