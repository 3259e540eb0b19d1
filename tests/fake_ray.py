"""An in-process stand-in for the few Ray calls ``leakbench.runner.cluster`` makes, so the
driver's dispatching (caps, a lost node's episodes played again, each index written once) is
tested where the ``ray`` extra is not installed. Actors are real objects in this process; each
call runs on a thread of its own "node". The tests that need Ray itself use a real cluster.

``install(monkeypatch, nodes={"a": 1, "b": 1})`` puts it in ``sys.modules``; ``kill_node(id)``
loses a node: its actor's pending and later calls raise ``ActorDiedError``.
"""

from __future__ import annotations

import sys
import threading
import types
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any


class RayError(Exception):
    pass


class RayTaskError(RayError):
    pass


class RayActorError(RayError):
    pass


class ActorDiedError(RayActorError):
    pass


class GetTimeoutError(RayError, TimeoutError):
    pass


class NodeAffinitySchedulingStrategy:
    def __init__(self, node_id: str, soft: bool) -> None:
        self.node_id, self.soft = node_id, soft


class _Ref:
    def __init__(self, future: Future, actor: _Actor) -> None:
        self.future, self.actor = future, actor


class _Actor:
    def __init__(self, fake: FakeRay, node_id: str, cls: type, args: tuple, threads: int) -> None:
        self.fake, self.node_id = fake, node_id
        self.dead = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"node-{node_id}")
        self.instance = self.pool.submit(cls, *args)  # constructed on the node, as Ray does

    def call(self, name: str, *args: Any) -> _Ref:
        def run() -> Any:
            if self.dead.is_set():
                raise ActorDiedError(f"the actor on node {self.node_id} died")
            try:
                result = getattr(self.instance.result(), name)(*args)
            except BaseException as exc:
                if self.dead.is_set():  # what failed was the node going away under the call
                    raise ActorDiedError(f"the actor on node {self.node_id} died") from exc
                raise RayTaskError(f"{type(exc).__name__}: {exc}") from exc
            if self.dead.is_set():  # died while the call ran: its result is lost
                raise ActorDiedError(f"the actor on node {self.node_id} died")
            return result

        return _Ref(self.pool.submit(run), self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return types.SimpleNamespace(remote=lambda *args: self.call(name, *args))


class _ActorClass:
    def __init__(self, fake: FakeRay, cls: type, threads: int) -> None:
        self.fake, self.cls, self.threads = fake, cls, threads
        self.node_id: str | None = None

    def options(self, *, num_cpus: int, scheduling_strategy: Any) -> _ActorClass:
        placed = _ActorClass(self.fake, self.cls, self.threads)
        placed.node_id = scheduling_strategy.node_id
        return placed

    def remote(self, *args: Any) -> _Actor:
        assert self.node_id is not None
        actor = _Actor(self.fake, self.node_id, self.cls, args, self.threads)
        self.fake.actors.append(actor)
        return actor


class FakeRay(types.ModuleType):
    def __init__(self, nodes: dict[str, int]) -> None:
        super().__init__("ray")
        self.cpus = dict(nodes)
        self.alive = set(nodes)
        self.actors: list[_Actor] = []
        self.initialized = False
        self.init_calls: list[dict[str, Any]] = []
        self.exceptions = types.SimpleNamespace(
            RayError=RayError,
            RayTaskError=RayTaskError,
            RayActorError=RayActorError,
            ActorDiedError=ActorDiedError,
            GetTimeoutError=GetTimeoutError,
        )

    # -- the API leakbench uses -------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address: str | None = None, **options: Any) -> None:
        self.init_calls.append({"address": address, **options})
        self.initialized = True

    def shutdown(self) -> None:
        self.initialized = False
        for actor in self.actors:
            self._end(actor)

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {"NodeID": n, "Alive": n in self.alive, "Resources": {"CPU": float(c)}}
            for n, c in self.cpus.items()
        ]

    def remote(self, *, max_concurrency: int, max_restarts: int) -> Any:
        return lambda cls: _ActorClass(self, cls, max_concurrency)

    def get(self, ref: _Ref, timeout: float | None = None) -> Any:
        try:
            return ref.future.result(timeout=timeout)
        except TimeoutError:
            raise GetTimeoutError("timed out") from None

    def wait(
        self, refs: list[_Ref], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[_Ref], list[_Ref]]:
        by_future = {ref.future: ref for ref in refs}
        done, _ = wait_futures(list(by_future), timeout=timeout, return_when="FIRST_COMPLETED")
        ready = [by_future[f] for f in done][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def kill(self, actor: _Actor) -> None:
        self._end(actor)

    # -- the test's side --------------------------------------------------------------------------

    def kill_node(self, node_id: str) -> None:
        """The node goes away with its actor, mid-call or not."""
        self.alive.discard(node_id)
        for actor in self.actors:
            if actor.node_id == node_id:
                self._end(actor)

    def _end(self, actor: _Actor) -> None:
        if actor.dead.is_set():
            return
        actor.dead.set()
        instance = actor.instance.result()
        if hasattr(instance, "close"):
            instance.close()  # its sandboxes go with it
        actor.pool.shutdown(wait=False)


def install(monkeypatch: Any, nodes: dict[str, int]) -> FakeRay:
    fake = FakeRay(nodes)
    strategies = types.ModuleType("ray.util.scheduling_strategies")
    strategies.NodeAffinitySchedulingStrategy = NodeAffinitySchedulingStrategy  # type: ignore[attr-defined]
    util = types.ModuleType("ray.util")
    util.scheduling_strategies = strategies  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.util", util)
    monkeypatch.setitem(sys.modules, "ray.util.scheduling_strategies", strategies)
    return fake
