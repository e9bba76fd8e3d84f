"""Running the policy's schedules (``schedules:``): one of the janitor's duties.

Every process that runs the duties (each janitor, each worker's main process) runs the
schedules whose task it has registered, and any number of them may: on each pass a
process computes the tick due (``router.schedule.decide``), creates its job with the
idempotency key ``schedule:<name>:<tick ms>`` in the one Lua script that creates every
job, and records the tick as taken (periodic_mark.lua). Two processes that take the same
tick get the same job (the key's holder), so a tick makes one job however many
janitors run; a process that dies between the two writes leaves the tick to the next
pass, whose create finds the job already made.

A periodic job is an ordinary job of the task's profile: it is created ``scheduled``,
due at its tick plus a random share of the schedule's jitter, and the engine's workers
send it when it is due (a janitor loads no engine), as they send any delayed job. Its
record also holds ``schedule``, ``tick`` and ``catch_up`` (1 when it stands for ticks
that no janitor took, see ``decide``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskrouter.errors import BackendUnavailable, TaskrouterError
from taskrouter.job import iso
from taskrouter.registry import CallOptions, registered
from taskrouter.schedule import Decision, Schedule, decide

from .errors import engine_errors
from .runtime import Runtime
from .store import JobStore

log = logging.getLogger("taskrouter.schedules")


def idempotency_key(schedule: Schedule, tick: int) -> str:
    """The idempotency key of a schedule's job for ``tick`` (ms)."""
    return f"schedule:{schedule.name}:{tick}"


class Periodic:
    """The schedules this process runs, and one pass over them (``run``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        tasks = registered()
        schedules = runtime.derived.policy.schedules
        self.schedules = [s for s in schedules.values() if s.task in tasks]
        if skipped := sorted(s.name for s in schedules.values() if s.task not in tasks):
            log.warning(
                "schedules %s are left to other janitors and workers: their tasks are not "
                "registered in this process (give it --app MODULE)",
                ", ".join(skipped),
            )
        if self.schedules:
            log.info("running schedules: %s", ", ".join(s.name for s in self.schedules))
        # name -> the next tick after the last one this process saw taken: nothing to
        # read from Redis until then.
        self._next: dict[str, int] = {}

    def run(self) -> list[tuple[str, Decision, str]]:
        """One pass: take each due tick. Returns (schedule, decision, job id or "")."""
        store = self.runtime.store
        done = []
        for schedule in self.schedules:
            now = store.clock()
            if now < self._next.get(schedule.name, 0):
                continue
            try:
                last = _last_tick(store, schedule.name)
                decision = decide(schedule, last, now)
                if decision is not None:
                    job_id = self._enqueue(schedule, decision) if decision.run else ""
                    store.run("periodic_mark", schedule.name, decision.tick, job_id, store.clock())
                    done.append((schedule.name, decision, job_id))
                    self._log(schedule, decision, job_id)
                    last = decision.tick
            except BackendUnavailable:
                raise
            except TaskrouterError as exc:  # this schedule's; the others and the duties go on
                log.error("schedule %s: %s (tried again at its next tick)", schedule.name, exc)
                self._next[schedule.name] = schedule.next_after(now)
                continue
            self._next[schedule.name] = schedule.next_after(last if last is not None else now)
        return done

    def _enqueue(self, schedule: Schedule, decision: Decision) -> str:
        runtime = self.runtime
        task = registered()[schedule.task]
        due = decision.tick + random.uniform(0, schedule.jitter * 1000)
        # Always through the schedule (a delayed job), never sent from here: a janitor
        # loads no engine, and one path for every process is one path to trust.
        delay = max((due - runtime.store.clock()) / 1000, 0.001)
        options = CallOptions(idempotency_key=idempotency_key(schedule, decision.tick), delay=delay)
        planned = runtime.plan(task, schedule.args, schedule.kwargs, options)
        extra = [
            "schedule",
            schedule.name,
            "tick",
            decision.tick,
            "catch_up",
            int(decision.catch_up),
        ]
        return runtime.store.create([*planned.create, *extra])

    @staticmethod
    def _log(schedule: Schedule, decision: Decision, job_id: str) -> None:
        at = iso(decision.tick)
        if not decision.run:
            log.info("schedule %s: tick %s passed without a job (missed: skip)", schedule.name, at)
        elif decision.catch_up:
            log.info("schedule %s: tick %s, catch-up job %s", schedule.name, at, job_id)
        else:
            log.debug("schedule %s: tick %s, job %s", schedule.name, at, job_id)


def _last_tick(store: JobStore, name: str) -> int | None:
    with engine_errors():
        raw = store.client.hget(store.keys.periodic(name), "last_tick")
    return int(raw) if raw else None


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """One schedule as ``taskrouter schedules`` and ``GET /schedules`` show it."""

    schedule: Schedule
    next_run: int  # ms
    last_tick: int | None  # the last tick taken, with or without a job
    last_run: int | None  # when the last job was made
    last_job: str | None
    last_job_state: str | None  # None: no job yet, or its record expired

    def to_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "name": s.name,
            "task": s.task,
            "when": str(s.when),
            "cron": getattr(s.when, "expression", None),
            "timezone": getattr(s.when, "timezone", None),
            "every": getattr(s.when, "seconds", None),
            "jitter": s.jitter,
            "missed": s.missed,
            "next_run": iso(self.next_run),
            "last_tick": iso(self.last_tick),
            "last_run": iso(self.last_run),
            "last_job": self.last_job,
            "last_job_state": self.last_job_state,
        }


def statuses(store: JobStore, schedules: Mapping[str, Schedule]) -> list[ScheduleStatus]:
    """Every schedule in policy order, with its state in Redis (two round trips)."""
    names = list(schedules)
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(store.keys.periodic(name), "last_tick", "last_run", "last_job")
        states = pipe.execute()
        pipe = store.client.pipeline(transaction=False)
        for _, _, job in states:
            pipe.hget(store.keys.job(job or "-"), "state")
        job_states = pipe.execute()
    now = store.clock()
    out = []
    for name, (last_tick, last_run, job), job_state in zip(names, states, job_states, strict=True):
        schedule = schedules[name]
        try:
            upcoming = schedule.next_after(max(now, int(last_tick or 0)))
        except (ValueError, OverflowError) as exc:  # a cron with no tick left (Feb 30)
            raise TaskrouterError(f"schedule {name}: no next tick ({exc})") from None
        out.append(
            ScheduleStatus(
                schedule=schedule,
                next_run=upcoming,
                last_tick=int(last_tick) if last_tick else None,
                last_run=int(last_run) if last_run else None,
                last_job=job or None,
                last_job_state=job_state if job else None,
            )
        )
    return out
