"""Worker heartbeats: who is alive, per engine and lane, with what processes.

Each ``taskrouter worker`` beats once per tick from its main process: the Celery worker
(one Celery node, whose pool processes it lists) or the RQ worker pool (whose RQ worker
processes it lists). A sorted set scores every worker by its last beat; a hash beside it
holds the details the API and the dashboard show.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from taskrouter.settings import LEASE_TTL

from .errors import engine_errors
from .store import JobStore


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One ``taskrouter worker``, as its heartbeat describes it."""

    engine: str  # "celery" or "rq"
    name: str  # "<engine>@<host>:<pid>" of its main process
    lane: str = ""  # "prefork", "fork" or "io"
    host: str = ""
    pid: int = 0
    queues: tuple[str, ...] = ()
    concurrency: int = 0
    # The processes that run jobs: {"pid": ..., "name": ...} (the engine's own names).
    processes: tuple[Mapping[str, Any], ...] = ()
    started_at: int = 0  # ms
    beat_at: int = 0  # ms
    node: str = ""  # the name the engine's own tools show (a Celery node name)
    stats: Mapping[str, int] = field(default_factory=dict)  # jobs run, by outcome

    @property
    def member(self) -> str:
        return f"{self.engine}|{self.name}"


def worker_name(engine: str) -> str:
    return f"{engine}@{socket.gethostname()}:{os.getpid()}"


class WorkerRegistry:
    """``window``: seconds without a beat after which a worker is dead
    (``Settings.worker_alive_window``)."""

    def __init__(self, store: JobStore, window: float = LEASE_TTL) -> None:
        self.store = store
        self.window_ms = int(window * 1000)

    def beat(self, info: WorkerInfo) -> None:
        keys, now = self.store.keys, self.store.clock()
        details = {**asdict(info), "beat_at": now}
        ttl_ms = self.window_ms * 4
        with engine_errors():
            pipe = self.store.client.pipeline(transaction=False)
            pipe.zadd(keys.workers, {info.member: now})
            pipe.set(keys.worker(info.member), json.dumps(details), px=ttl_ms)
            pipe.execute()

    def leave(self, info: WorkerInfo) -> None:
        keys = self.store.keys
        with engine_errors():
            pipe = self.store.client.pipeline(transaction=False)
            pipe.zrem(keys.workers, info.member)
            pipe.delete(keys.worker(info.member))
            pipe.execute()

    def alive(self, engine: str | None = None, within_ms: int | None = None) -> list[str]:
        """Names of workers (of one engine, or all as "engine|name") seen lately."""
        window = self.window_ms if within_ms is None else within_ms
        with engine_errors():
            members = self.store.client.zrange(
                self.store.keys.workers, self.store.clock() - window, "+inf", byscore=True
            )
        if engine is None:
            return list(members)
        return [m.split("|", 1)[1] for m in members if m.startswith(engine + "|")]

    def live(self) -> list[WorkerInfo]:
        """Every live worker with its details (one round trip for the details)."""
        members = self.alive()
        if not members:
            return []
        keys = self.store.keys
        with engine_errors():
            raw = self.store.client.mget([keys.worker(m) for m in members])
        out = []
        for member, text in zip(members, raw, strict=True):
            engine, _, name = member.partition("|")
            details: dict[str, Any] = json.loads(text) if text else {}
            details.update(engine=engine, name=name)
            details.setdefault("lane", "fork" if engine == "rq" else "prefork")
            details["queues"] = tuple(details.get("queues", ()))
            details["processes"] = tuple(details.get("processes", ()))
            out.append(WorkerInfo(**details))
        return out

    def lapsed(self, engine: str) -> list[tuple[str, int]]:
        """(name, last beat ms) of workers of ``engine`` that stopped beating."""
        cutoff = self.store.clock() - self.window_ms
        with engine_errors():
            rows = self.store.client.zrange(
                self.store.keys.workers, "-inf", f"({cutoff}", byscore=True, withscores=True
            )
        return [(m.split("|", 1)[1], int(score)) for m, score in rows if m.startswith(engine + "|")]

    def forget(self, engine: str, name: str) -> bool:
        """Remove a dead worker's entry; True for the one caller that removed it."""
        member = f"{engine}|{name}"
        with engine_errors():
            self.store.client.delete(self.store.keys.worker(member))
            return bool(self.store.client.zrem(self.store.keys.workers, member))


def counted(info: WorkerInfo) -> int:
    """How many workers ``info`` is, as the engine's own tools count them: ``celery
    inspect`` counts a Celery worker (node) once, whatever its pool; ``rq info`` counts
    every RQ worker process of a pool."""
    return max(1, len(info.processes)) if info.engine == "rq" else 1


def describe(info: WorkerInfo) -> str:
    """One worker as /readyz and the CLI show it."""
    n = len(info.processes)
    if info.engine == "rq":
        return f"{counted(info)} rq workers in pool {info.name}"
    plural = "es" if n != 1 else ""
    return f"celery worker {info.node or info.name} ({info.lane} lane, {n} process{plural})"
