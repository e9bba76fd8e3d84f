"""Restart Redis again and again under a stream of jobs; every job must end succeeded,
run exactly once (issue 17, item 2).

    .venv/bin/python benchmarks/redis_restarts.py [--jobs 2000] [--restarts 8] [--runs 1]

Starts a Redis server of its own (its own port and directory, ``appendonly yes``,
``appendfsync always``), a Celery worker and an RQ worker pool (concurrency 2 each) on
``benchmarks/restart_app.py`` and ``benchmarks/restart_policy.yaml`` (no retries), then
submits ``--jobs`` jobs, half to each engine, with idempotency keys (a submit that fails
while Redis is down is tried again with the same key, as a client should). While it
submits, it stops Redis ``--restarts`` times, alternately with SIGKILL and SIGTERM,
keeps it down a moment and starts it again on the same files. Then it waits for every
job to end and checks that each one succeeded at its first attempt and that its task ran
exactly once (each run appends a line to a file of its own, outside Redis). The last line
is PASS or FAIL. Every process it starts is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # taskrouter is imported once RQ_KEY_PREFIX is set (main)
    from taskrouter.services.processes import RedisServer

ROOT = Path(__file__).resolve().parents[1]
POLICY = Path(__file__).with_name("restart_policy.yaml")
APP = "benchmarks.restart_app"


def aof_server(directory: Path) -> RedisServer:
    """A Redis of this run: every write in the AOF before it is answered."""
    from taskrouter.services.processes import RedisServer

    return RedisServer(directory, "--appendonly", "yes", "--appendfsync", "always", "--save", "")


@dataclass
class Outcome:
    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    executions: Counter[int] = field(default_factory=Counter)  # runs per job -> jobs
    restarts: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # one line per job that broke the rule
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.bad and self.states["succeeded"] == self.jobs

    def lines(self) -> list[str]:
        runs = ", ".join(f"{n}x: {c}" for n, c in sorted(self.executions.items()))
        return [
            f"jobs {self.jobs} in {self.seconds:.1f} s; Redis restarts: {' '.join(self.restarts)}",
            f"states: {dict(self.states)}",
            f"executions per job: {runs}",
            *self.bad[:20],
            "PASS" if self.passed else "FAIL",
        ]


def worker_env(url: str, prefix: str, lease: str, janitor: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTER_", "RQ_"))}
    env.update(
        TASKROUTER_REDIS_URL=url,
        TASKROUTER_KEY_PREFIX=prefix,
        TASKROUTER_POLICY=str(POLICY),
        TASKROUTER_LEASE_TTL=lease,
        TASKROUTER_JANITOR_INTERVAL=janitor,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def run(
    jobs: int,
    restarts: int,
    workdir: Path,
    *,
    prefix: str | None = None,
    lease: str = "2s",
    janitor: str = "250ms",
    submit_seconds: float = 20.0,
    drain_seconds: float = 120.0,
    seed: int | None = None,
) -> Outcome:
    """One scenario; ``prefix`` must match RQ_KEY_PREFIX if the caller set it (tests)."""
    from taskrouter import _runtime
    from taskrouter.backends.heartbeats import WorkerRegistry
    from taskrouter.backends.runtime import Runtime
    from taskrouter.services.processes import cli_command, stop_all
    from taskrouter.settings import Settings

    from . import restart_app

    rng = random.Random(seed)
    prefix = prefix or f"trr-{uuid.uuid4().hex[:8]}"
    server = aof_server(workdir)
    env = worker_env(server.url, prefix, lease, janitor)
    marks = workdir / "marks"
    marks.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    # Built before the server starts: a runtime that cannot be built leaves no server.
    runtime = Runtime.from_env(Settings.from_env(env))
    previous = _runtime.install(runtime)
    outcome = Outcome(jobs=jobs)
    started = time.monotonic()
    try:
        server.start()
        for engine in ("celery", "rq"):
            log = open(workdir / f"{engine}.log", "ab")  # noqa: SIM115 - lives with the process
            args = ["worker", "--app", APP, "--backend", engine, "--concurrency", "2"]
            procs.append(
                subprocess.Popen(
                    cli_command(*args), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
                )
            )
        registry = WorkerRegistry(runtime.store)
        _until(lambda: registry.alive("celery") and registry.alive("rq"), 60, "the workers")
        handles: dict[str, Any] = {}
        done_submitting = threading.Event()

        def submit() -> None:
            for i in range(jobs):
                key = f"job-{i}"
                fn = restart_app.mark_celery if i % 2 else restart_app.mark_rq
                seconds = rng.choice((0.0, 0.0, 0.01, 0.05))
                handles[key] = _patient_enqueue(fn, key, str(marks / key), seconds)
                time.sleep(submit_seconds / jobs)
            done_submitting.set()

        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        pause = submit_seconds / (restarts + 1)
        for n in range(restarts):
            time.sleep(pause * rng.uniform(0.6, 1.2))
            sig = signal.SIGKILL if n % 2 == 0 else signal.SIGTERM
            server.stop(sig)
            outcome.restarts.append(sig.name)
            time.sleep(rng.uniform(0.2, 1.5))
            server.start()
        submitter.join(submit_seconds * 4 + 120)
        if not done_submitting.is_set():
            outcome.bad.append("the submitter did not finish")
        deadline = time.monotonic() + drain_seconds
        pending = dict(handles)
        while pending and time.monotonic() < deadline:
            for key, job in list(pending.items()):
                try:
                    if job.refresh().finished:
                        del pending[key]
                except Exception:  # Redis may still be loading its AOF
                    pass
            time.sleep(0.2)
        for key, job in handles.items():
            path = marks / key
            runs = len(path.read_text().splitlines()) if path.exists() else 0
            outcome.executions[runs] += 1
            outcome.states[job.state] += 1
            if job.state != "succeeded" or runs != 1 or job.attempts != 1:
                outcome.bad.append(
                    f"{key} {job.id} {job.backend}: {job.state}, attempts {job.attempts}, "
                    f"ran {runs}x, error {job.error}; {_engine_side(runtime, job.id)}"
                )
    finally:
        outcome.seconds = time.monotonic() - started
        stop_all(procs)
        _runtime.install(previous)
        runtime.close()
        server.stop()
    return outcome


def _engine_side(runtime: Any, job_id: str) -> str:
    """Where a job that broke the rule is, for the report: its record's dispatch fields
    and the engine keys of its current dispatch."""
    from taskrouter.backends.base import native_id

    store = runtime.store
    dispatch, sent, queue = store.fields(job_id, "dispatch", "sent", "queue")
    nid = native_id(job_id, dispatch or 1)
    client = store.client
    rq = runtime.settings.rq_key_prefix or "rq"
    return (
        f"dispatch {dispatch} sent {sent} rq status {client.hget(f'{rq}:job:{nid}', 'status')} "
        f"in rq queue {client.lpos(f'{rq}:queue:{queue}', nid)} "
        f"dispatching {client.zscore(store.keys.dispatching('rq'), job_id)}; celery queue "
        f"holds {client.llen((runtime.settings.celery_key_prefix or '') + (queue or ''))}, "
        f"unacked {client.hlen((runtime.settings.celery_key_prefix or '') + 'unacked')}"
    )


def _patient_enqueue(fn: Any, key: str, path: str, seconds: float) -> Any:
    from taskrouter.errors import TaskrouterError

    deadline = time.monotonic() + 120
    while True:
        try:
            return fn.using(idempotency_key=key).enqueue(path, seconds)
        except TaskrouterError:  # Redis is down: the same key again, as a client would
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1, help="run the scenario this many times")
    parser.add_argument("--submit-seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    args = parser.parse_args(argv)
    failed = 0
    prefix = f"trr-{uuid.uuid4().hex[:8]}"  # RQ reads its prefix once per process
    for n in range(args.runs):
        tmp = tempfile.mkdtemp(prefix="taskrouter-restarts-")
        try:
            outcome = run(
                args.jobs,
                args.restarts,
                Path(tmp),
                prefix=prefix,
                submit_seconds=args.submit_seconds,
                seed=None if args.seed is None else args.seed + n,
            )
        finally:
            if not args.keep_logs:
                shutil.rmtree(tmp, ignore_errors=True)
        print(f"run {n + 1}/{args.runs}" + (f" (logs in {tmp})" if args.keep_logs else ""))
        print("\n".join(outcome.lines()), flush=True)
        failed += not outcome.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
