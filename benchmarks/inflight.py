"""Memory per long call in flight, per lane, beside raw Celery; idle worker memory beside
the raw engines; and the starvation scenario of the README's "Why", through the router.

    .venv/bin/python benchmarks/inflight.py            # the full run (about 6 minutes)
    .venv/bin/python benchmarks/inflight.py --quick    # fewer calls, shorter holds

Every call waits on a local slow HTTP server (127.0.0.1, in this process) for ``--hold``
seconds. With N calls in flight (the server counts them), the benchmark sums the PSS of
the worker's whole process tree (/proc/*/smaps_rollup) and prints calls per GB and MB
per call, for: the I/O lane with ``async def`` tasks and with plain ``def`` tasks (one
process), RQ (one process per call), Celery's prefork lane (one process per call), and
raw Celery's ``--pool threads`` as the reference. Idle: each ``taskrouter worker``
beside the raw engine's own multi-process worker with the same number of processes
(``celery worker -c 2`` and ``rq worker-pool -n 2``). While the I/O lane holds its
calls, the enqueue-to-start median of a short task on another queue (a prefork worker)
is measured, and compared with the same with nothing in flight.

Everything runs on its own key prefix of the Redis at TASKROUTER_REDIS_URL (default
127.0.0.1:6379, database 9), deleted at the end; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is on sys.path, not the root
    sys.path.insert(0, str(ROOT))

from taskrouter.backends.store import delete_prefix  # noqa: E402
from taskrouter.services.processes import cli_command, isolated_env, stop  # noqa: E402
from tests.integration.slow_http import SlowServer  # noqa: E402

APP = "benchmarks.inflight_app"
POLICY = """\
version: 1
routing: {long_after: 1s, workflows: celery}
defaults: {timeout: 5m, keep_results: 1h}
profiles:
  io_calls: {expected_latency: 30s, kind: io, queue: bench-io, timeout: 5m}
  rq_calls: {expected_latency: 30s, queue: bench-rq, timeout: 5m}
  prefork_calls: {expected_latency: 30s, backend: celery, queue: bench-prefork, timeout: 5m}
  long_io: {expected_latency: 4s, kind: io, queue: bench-long, timeout: 1m}
  short: {expected_latency: 50ms, queue: bench-short, timeout: 30s}
"""
MB = 1024 * 1024


# -- process trees and their memory ------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def pss(pids: list[int]) -> float:
    """Summed PSS of ``pids``, in bytes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return float(total)


# -- the stack ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.redis_url = redis_url
        self.prefix = f"bench-inflight-{uuid.uuid4().hex[:8]}"
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        self.tmp = tmp
        self.env = isolated_env(redis_url, self.prefix, pythonpath=str(ROOT), policy=str(policy))
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("TASKROUTER_")})
        from taskrouter import _runtime
        from taskrouter.backends.runtime import Runtime

        self.runtime = Runtime.from_env()
        _runtime.install(self.runtime)
        self.server = SlowServer()
        self.rates: list[float] = []  # calls started per second, per hold

    @contextmanager
    def worker(self, args: list[str], *, raw: bool = False) -> Iterator[subprocess.Popen[bytes]]:
        """A worker process, ready when this yields, stopped (with its tree) after."""
        cmd = [sys.executable, "-m", APP, *args] if raw else cli_command(*args)
        with open(self.tmp / "workers.log", "ab") as log:
            proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=log)
        try:
            self._ready(proc, raw=raw)
            yield proc
        finally:
            stop(proc, timeout=30)

    def _ready(self, proc: subprocess.Popen[bytes], *, raw: bool) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.tmp / "workers.log").read_text(errors="replace")[-4000:]
                raise SystemExit(f"a worker exited at start: {proc.args}\n{tail}")
            if (raw and len(tree(proc.pid)) > 1) or (raw and "threads" in str(proc.args)):
                time.sleep(3)  # raw workers publish no heartbeat: give them time to connect
                return
            if not raw and self._beats(proc.pid):
                return
            time.sleep(0.2)
        raise SystemExit("a worker did not come up in 60 s")

    def _beats(self, pid: int) -> bool:
        from taskrouter.backends.heartbeats import WorkerRegistry

        return any(n.endswith(f":{pid}") for n in WorkerRegistry(self.runtime.store).alive())

    def hold(self, enqueue: Callable[[str], Any], n: int, seconds: float) -> float:
        """Put ``n`` calls in flight; returns when the server holds them all (or 240 s)."""
        group = uuid.uuid4().hex[:8]
        # Each call waits ``seconds`` from the moment all ``n`` are in flight.
        url = f"{self.server.url}/wait?s={seconds}&g={group}&n={n}"
        for i in range(n):
            enqueue(f"{url}&id={group}-{i}")
        started = time.monotonic()
        while self.server.group_in_flight[group] < n:
            if time.monotonic() - started > 240:
                got = self.server.group_in_flight[group]
                raise SystemExit(f"only {got} of {n} calls got in flight in 240 s")
            time.sleep(0.1)
        self.rates.append(n / (time.monotonic() - started))
        return time.monotonic()

    def short_latency(self, count: int) -> list[float]:
        """Enqueue-to-start of ``count`` short tasks, one after another (ms)."""
        from benchmarks import inflight_app as app

        client = self.runtime.store.client
        key = f"{self.prefix}:bench:stamps:{uuid.uuid4().hex}"
        out = []
        for _ in range(count):
            before = time.time()
            app.short.enqueue(key)
            started = float(client.blpop([key], 30)[1])
            out.append((started - before) * 1000)
        client.delete(key)
        return out

    def close(self) -> None:
        self.server.close()
        self.runtime.close()
        delete_prefix(self.redis_url, self.prefix)


# -- the measures ---------------------------------------------------------------------------------


def idle_rows(b: Bench) -> list[tuple[str, float, float]]:
    """(what, taskrouter's PSS, the raw engine's PSS) with the same number of processes."""
    pairs = [
        ("celery prefork, 2 pool processes", ["--backend", "celery"], ["raw-prefork", "2"]),
        ("rq, 2 workers", ["--backend", "rq"], ["raw-rq-pool", "2"]),
    ]
    rows = []
    for what, tr_args, raw_args in pairs:
        with b.worker(["worker", "--app", APP, *tr_args, "--concurrency", "2"]) as tr:
            time.sleep(3)
            ours = pss(tree(tr.pid))
            procs = len(tree(tr.pid))
        with b.worker(raw_args, raw=True) as raw:
            time.sleep(3)
            theirs = pss(tree(raw.pid))
            raw_procs = len(tree(raw.pid))
        rows.append((f"{what} ({procs} vs {raw_procs} processes)", ours, theirs))
    return rows


def inflight_row(
    b: Bench,
    what: str,
    args: list[str],
    enqueue: Callable[[str], Any],
    n: int,
    hold: float,
    *,
    raw: bool = False,
) -> tuple[str, int, float]:
    with b.worker(args, raw=raw) as proc:
        b.hold(enqueue, n, hold)
        time.sleep(1)  # let every thread and buffer of the calls settle
        measured = pss(tree(proc.pid))
    return what, n, measured


def lane_under_load(b: Bench, n: int, hold: float) -> dict[str, Any]:
    """Hold ``n`` async calls in one lane process, with a prefork worker on another queue:
    every call succeeds, and the short task's enqueue-to-start median meanwhile."""
    from benchmarks import inflight_app as app

    short = ["worker", "--app", APP, "--backend", "celery", "--queues", "bench-short"]
    lane = ["worker", "--app", APP, "--lane", "io", "--concurrency", str(n)]
    with b.worker([*short, "--concurrency", "1"]), b.worker(lane):
        quiet = b.short_latency(40)
        jobs: list[Any] = []
        b.hold(lambda url: jobs.append(app.io_async.enqueue(url)), n, hold)
        loaded = b.short_latency(40)
        failed: dict[str, int] = {}
        for job in jobs:
            try:
                job.wait(hold + 120)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"[:160]
                failed[why] = failed.get(why, 0) + 1
    return {
        "n": n,
        "failed": failed,
        "quiet_ms": statistics.median(quiet),
        "loaded_ms": statistics.median(loaded),
    }


def starvation(b: Bench) -> dict[str, float]:
    """The README's scenario through the router: 40 long calls of 4 s (an I/O profile),
    then 20 short tasks of 50 ms, one every 0.2 s."""
    from benchmarks import inflight_app as app

    short = ["worker", "--app", APP, "--backend", "celery", "--queues", "bench-short"]
    lane = ["worker", "--app", APP, "--lane", "io", "--queues", "bench-long"]
    client = b.runtime.store.client
    key = f"{b.prefix}:bench:starve:{uuid.uuid4().hex}"
    with b.worker([*short, "--concurrency", "2"]), b.worker(lane):
        began = time.time()
        longs = [app.long_io.enqueue(f"{b.server.url}/wait?s=4&id=l{i}") for i in range(40)]
        waits = []
        for _ in range(20):
            before = time.time()
            app.short.enqueue(key)
            waits.append(float(client.blpop([key], 30)[1]) - before)
            time.sleep(max(0.0, 0.2 - (time.time() - before)))
        for job in longs:
            job.wait(120)
        makespan = time.time() - began
    waits.sort()
    return {"p95": waits[int(0.95 * (len(waits) - 1))], "makespan": makespan}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter holds")
    opts = parser.parse_args()
    hold = 10.0 if opts.quick else 30.0
    n_async, n_sync, n_proc, n_raw = (400, 200, 8, 100) if opts.quick else (2000, 1000, 16, 200)
    url = os.environ.get("TASKROUTER_REDIS_URL", "redis://127.0.0.1:6379/9")
    with tempfile.TemporaryDirectory(prefix="bench-inflight-") as tmp:
        b = Bench(url, Path(tmp))
        try:
            return report(b, hold, n_async, n_sync, n_proc, n_raw)
        finally:
            b.close()


def report(b: Bench, hold: float, n_async: int, n_sync: int, n_proc: int, n_raw: int) -> int:
    from benchmarks import inflight_app as app

    print(f"hold {hold:g} s per call; Redis {b.redis_url}, key prefix {b.prefix}\n")
    print("idle worker PSS, taskrouter beside the raw engine's worker:")
    for what, ours, theirs in idle_rows(b):
        diff = (ours - theirs) / MB
        print(f"  {what:45} {ours / MB:7.1f} MB vs {theirs / MB:7.1f} MB  ({diff:+.1f} MB)")
    raw_app = app.raw_app()
    rows = [
        inflight_row(
            b,
            "I/O lane, async def (1 process)",
            ["worker", "--app", APP, "--lane", "io", "--concurrency", str(n_async)],
            lambda u: app.io_async.enqueue(u),
            n_async,
            hold,
        ),
        inflight_row(
            b,
            "I/O lane, def (1 process)",
            ["worker", "--app", APP, "--lane", "io", "--concurrency", str(n_sync)],
            lambda u: app.io_sync.enqueue(u),
            n_sync,
            hold,
        ),
        inflight_row(
            b,
            f"RQ ({n_proc} workers)",
            ["worker", "--app", APP, "--backend", "rq", "--concurrency", str(n_proc)],
            lambda u: app.rq_call.enqueue(u),
            n_proc,
            hold,
        ),
        inflight_row(
            b,
            f"Celery prefork ({n_proc} processes)",
            [
                "worker",
                "--app",
                APP,
                "--backend",
                "celery",
                "--queues",
                "bench-prefork",
                "--concurrency",
                str(n_proc),
            ],
            lambda u: app.prefork_call.enqueue(u),
            n_proc,
            hold,
        ),
        inflight_row(
            b,
            f"raw Celery --pool threads -c {n_raw}",
            ["raw-threads", str(n_raw)],
            lambda u: raw_app.send_task(app.RAW_CALL, args=(u,), queue="raw-inflight"),
            n_raw,
            hold,
            raw=True,
        ),
    ]
    print(f"\ncalls in flight ({hold:g} s each), summed PSS of the worker's process tree:")
    print(f"  {'worker':42} {'calls':>6} {'PSS MB':>8} {'calls/GB':>9} {'MB/call':>8}")
    for what, n, measured in rows:
        per_gb = n / (measured / (1024 * MB))
        print(f"  {what:42} {n:6d} {measured / MB:8.1f} {per_gb:9.0f} {measured / MB / n:8.3f}")
    rate = statistics.median(b.rates)
    print(f"  (calls started per second while filling, median of the rows: {rate:.0f})")
    load = lane_under_load(b, n_async, hold)
    print(
        f"\none lane process holding {load['n']} async calls: "
        f"{sum(load['failed'].values())} failed {load['failed'] or ''}; "
        f"short task enqueue-to-start median {load['quiet_ms']:.2f} ms quiet, "
        f"{load['loaded_ms']:.2f} ms meanwhile"
    )
    starve = starvation(b)
    print(
        f"starvation scenario (40 x 4 s I/O calls, then 20 short tasks every 0.2 s): "
        f"short p95 {starve['p95'] * 1000:.1f} ms, makespan {starve['makespan']:.1f} s"
    )
    return 0 if not load["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
