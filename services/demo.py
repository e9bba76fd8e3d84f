"""``taskrouter demo``: both engines' workers, a mixed workload routed by the policy,
and a summary per engine."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import click

from taskrouter import _runtime
from taskrouter.backends.heartbeats import WorkerRegistry
from taskrouter.backends.runtime import Runtime
from taskrouter.backends.store import delete_prefix
from taskrouter.job import Job
from taskrouter.settings import Settings

from .embedded import resolve_redis
from .processes import cli_env, spawn, stop

APP = "taskrouter.examples.demo_app"
DEMO_PREFIX = "taskrouter-demo"  # each run adds a suffix of its own (unique keys)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_worker(
    engine: str, env: dict[str, str], concurrency: int, log_dir: Path
) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{engine}-worker.log", "wb")  # noqa: SIM115 - lives with the process
    args = ["worker", "--app", APP, "--backend", engine, "--concurrency", str(concurrency)]
    return spawn(args, env, log)


def wait_for_workers(
    runtime: Runtime,
    engines: Iterable[str],
    deadline_s: float,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    registry = WorkerRegistry(runtime.store, runtime.settings.worker_alive_window)
    deadline = time.monotonic() + deadline_s
    missing = set(engines)
    while missing:
        missing = {e for e in missing if not registry.alive(e)}
        if not missing:
            return
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker exited during start-up; see its log")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {', '.join(sorted(missing))} worker came up in {deadline_s:g} s")
        time.sleep(0.1)


def workload(size: int, marker: str) -> list[Job]:
    from taskrouter.examples import demo_app as app

    jobs: list[Job] = []
    slow = max(2, size // 8)
    for i in range(size - 2 * slow - 1):
        jobs.append(app.add.enqueue(i, i) if i % 2 else app.render.enqueue(f"doc-{i}", 500))
    for i in range(slow):
        jobs.append(app.summarize.enqueue(f"report-{i}", 1.5 + (i % 3) * 0.5))
        jobs.append(app.ask.enqueue(f"question {i}", 2.0))
    jobs.append(app.flaky.enqueue(marker))
    return jobs


def summarize(jobs: list[Job]) -> str:
    rows = []
    for engine in ("celery", "rq"):
        mine = [j for j in jobs if j.backend == engine]
        waits = [(j.started_at - j.queued_at) / 1000 for j in mine if j.started_at and j.queued_at]
        runs = [
            (j.finished_at - j.started_at) / 1000 for j in mine if j.finished_at and j.started_at
        ]
        rows.append(
            (
                engine,
                len(mine),
                sum(j.state == "succeeded" for j in mine),
                sum(j.state == "failed" for j in mine),
                sum(j.attempts > 1 for j in mine),
                f"{statistics.median(waits) * 1000:.1f}" if waits else "-",
                f"{_percentile(waits, 0.95) * 1000:.1f}" if waits else "-",
                f"{statistics.median(runs) * 1000:.1f}" if runs else "-",
                f"{_percentile(runs, 0.95) * 1000:.1f}" if runs else "-",
            )
        )
    header = (
        "engine",
        "jobs",
        "succeeded",
        "failed",
        "retried",
        "wait p50 ms",
        "wait p95 ms",
        "run p50 ms",
        "run p95 ms",
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    return "\n".join(lines)


def run_demo(*, force_embedded: bool = False, size: int | None = None) -> int:
    size = size or 60
    env_url = os.environ.get("TASKROUTER_REDIS_URL")
    url, server = resolve_redis(env_url, force_embedded=force_embedded)
    where = f"embedded server (pid {server.pid})" if server else url
    click.echo(f"redis: {where}")
    procs: list[subprocess.Popen[bytes]] = []
    # Keys under a prefix of this run alone, deleted at the end: on a shared Redis the
    # demo leaves nothing behind (unless the caller chose the prefix).
    own_prefix = not os.environ.get("TASKROUTER_KEY_PREFIX")
    prefix = os.environ.get("TASKROUTER_KEY_PREFIX") or f"{DEMO_PREFIX}-{uuid.uuid4().hex[:8]}"
    runtime: Runtime | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="taskrouter-demo-") as tmp:
            env = cli_env(
                url,
                TASKROUTER_KEY_PREFIX=prefix,
                TASKROUTER_POLICY=os.environ.get(
                    "TASKROUTER_POLICY", str(Path("policies.yaml").resolve())
                ),
            )
            for name in ("TASKROUTER_REDIS_URL", "TASKROUTER_KEY_PREFIX", "TASKROUTER_POLICY"):
                os.environ[name] = env[name]  # this process enqueues on the same stack
            runtime = Runtime.from_env(Settings.from_env())
            _runtime.install(runtime)
            log_dir = Path(tmp)
            procs = [start_worker("celery", env, 2, log_dir), start_worker("rq", env, 2, log_dir)]
            wait_for_workers(runtime, ("celery", "rq"), 60, procs)
            click.echo("workers: celery (2 processes), rq (2 forking workers)")
            started = time.monotonic()
            jobs = workload(size, str(Path(tmp) / "flaky-marker"))
            click.echo(f"enqueued {len(jobs)} jobs; waiting...")
            _wait_all(jobs, timeout=180)
            elapsed = time.monotonic() - started
            click.echo(f"\nall {len(jobs)} jobs finished in {elapsed:.1f} s\n")
            click.echo(_routing_table(jobs))
            click.echo("")
            click.echo(summarize(jobs))
            bad = [j for j in jobs if j.state != "succeeded"]
            for j in bad:
                click.echo(f"job {j.id} ({j.task}) {j.state}: {j.error}")
            return 1 if bad else 0
    finally:
        for proc in procs:
            stop(proc)
        if runtime is not None:
            runtime.close()
        if own_prefix and server is None:
            deleted = delete_prefix(url, prefix)
            click.echo(f"deleted the demo's {deleted} keys ({prefix}:*)")
        if server is not None:
            server.stop()
            click.echo("embedded server stopped")


def _wait_all(jobs: list[Job], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(jobs)
    while pending:
        pending = [j for j in pending if not j.refresh().finished]
        if pending and time.monotonic() > deadline:
            states: dict[str, int] = {}
            for j in pending:
                states[j.state] = states.get(j.state, 0) + 1
            raise SystemExit(f"{len(pending)} jobs unfinished after {timeout:g} s: {states}")
        if pending:
            time.sleep(0.2)


def _routing_table(jobs: list[Job]) -> str:
    seen: dict[tuple[str, str, str], int] = {}
    for j in jobs:
        key = (j.task.rsplit(".", 1)[-1], j.profile, j.backend)
        seen[key] = seen.get(key, 0) + 1
    lines = [f"{'task':10} {'profile':12} {'engine':7} jobs"]
    lines += [f"{t:10} {p:12} {b:7} {n}" for (t, p, b), n in sorted(seen.items())]
    return "\n".join(lines)
