"""``taskrouter demo``: both engines' workers, a mixed workload routed by the policy,
and a summary per engine."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
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


# The demo's workers: (what to pass to `taskrouter worker`, the lane, processes or calls).
WORKERS = (
    ("--backend=celery", "prefork", 2),
    ("--backend=rq", "fork", 2),
    ("--lane=io", "io", 200),
)


def start_worker(
    which: str, lane: str, env: dict[str, str], concurrency: int, log_dir: Path
) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{lane}-worker.log", "wb")  # noqa: SIM115 - lives with the process
    args = ["worker", "--app", APP, which, "--concurrency", str(concurrency)]
    return spawn(args, env, log)


def wait_for_workers(
    runtime: Runtime,
    lanes: Iterable[str],
    deadline_s: float,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    registry = WorkerRegistry(runtime.store, runtime.settings.worker_alive_window)
    deadline = time.monotonic() + deadline_s
    missing = set(lanes)
    while missing:
        missing -= {w.lane for w in registry.live()}
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
    for i in range(size - 2 * slow - 2):  # then the slow ones, a transcode and a flaky
        jobs.append(app.add.enqueue(i, i) if i % 2 else app.render.enqueue(f"doc-{i}", 500))
    for i in range(slow):
        jobs.append(app.summarize.enqueue(f"report-{i}", 1.5 + (i % 3) * 0.5))
        jobs.append(app.ask.enqueue(f"question {i}", 2.0))
    jobs.append(app.transcode.enqueue("talk.mp4", 32))
    jobs.append(app.flaky.enqueue(marker))
    return jobs


def _spans(jobs: list[Job], start: str, end: str) -> list[float]:
    """Seconds from field ``start`` to field ``end`` of each job that has both."""
    out = []
    for j in jobs:
        first, last = getattr(j, start), getattr(j, end)
        if first and last:
            out.append((last - first) / 1000)
    return out


def _ms(values: list[float], q: float | None = None) -> str:
    if not values:
        return "-"
    value = statistics.median(values) if q is None else _percentile(values, q)
    return f"{value * 1000:.1f}"


def _lane_row(lane: str, mine: list[Job]) -> tuple[object, ...]:
    waits = _spans(mine, "queued_at", "started_at")
    runs = _spans(mine, "started_at", "finished_at")
    return (
        f"{mine[0].backend if mine else ''} {lane}",
        len(mine),
        sum(j.state == "succeeded" for j in mine),
        sum(j.state == "failed" for j in mine),
        sum(j.attempts > 1 for j in mine),
        _ms(waits),
        _ms(waits, 0.95),
        _ms(runs),
        _ms(runs, 0.95),
    )


def summarize(jobs: list[Job], lanes: Mapping[str, str]) -> str:
    """One row per lane; ``lanes``: profile -> lane."""
    rows = [
        _lane_row(lane, [j for j in jobs if lanes.get(j.profile) == lane])
        for lane in ("prefork", "io", "fork")
    ]
    header = (
        "engine lane",
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
            procs = [start_worker(w, lane, env, n, log_dir) for w, lane, n in WORKERS]
            wait_for_workers(runtime, [lane for _, lane, _ in WORKERS], 60, procs)
            click.echo(
                "workers: celery prefork (2 processes), rq (2 forking workers), "
                "io lane (1 process, 200 calls in flight)"
            )
            started = time.monotonic()
            jobs = workload(size, str(Path(tmp) / "flaky-marker"))
            click.echo(f"enqueued {len(jobs)} jobs; waiting...")
            _wait_all(jobs, timeout=180)
            elapsed = time.monotonic() - started
            click.echo(f"\nall {len(jobs)} jobs finished in {elapsed:.1f} s\n")
            lanes = {p: ps.lane for p, ps in runtime.derived.profiles.items()}
            click.echo(_routing_table(jobs, lanes))
            click.echo("")
            click.echo(summarize(jobs, lanes))
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


def _routing_table(jobs: list[Job], lanes: Mapping[str, str]) -> str:
    seen: dict[tuple[str, str, str, str], int] = {}
    for j in jobs:
        key = (j.task.rsplit(".", 1)[-1], j.profile, j.backend, lanes.get(j.profile, ""))
        seen[key] = seen.get(key, 0) + 1
    lines = [f"{'task':10} {'profile':12} {'engine':7} {'lane':8} jobs"]
    lines += [f"{t:10} {p:12} {b:7} {ln:8} {n}" for (t, p, b, ln), n in sorted(seen.items())]
    return "\n".join(lines)
