"""What taskrouter costs over the raw engine APIs, on a real Redis (issue 2).

    .venv/bin/python benchmarks/overhead.py [--redis-url redis://127.0.0.1:6379/12]

For each engine, through taskrouter and through the raw engine API:

- enqueue/s: the client's rate for ``--enqueues`` (2,000) no-op tasks, sent one after
  another onto a queue no worker consumes (so that no worker competes with the client
  for the CPU; the client does the same work either way). Run ``--reps`` times per path,
  interleaved with the other path; the median rep is shown.
- enqueue-to-start: the median, over ``--latency-jobs`` (300) sequential no-op tasks, of
  the time the task's first statement reads minus the time read just before the enqueue
  call (``benchmarks/bench_app.py``: the task pushes its start time to a list the
  benchmark BLPOPs). Raw and taskrouter tasks alternate, one at a time, each sent to an
  idle worker (a pause after each lets the worker finish the previous job).

Raw Celery is a plain Celery app with the broker, kombu key prefix and every setting
taskrouter's app has (JSON only, acks_late, prefetch multiplier, visibility timeout),
tasks sent with ``send_task``; raw RQ is ``Queue(...).enqueue`` of a plain function with
``JSONSerializer`` and the stock forking ``Worker``. Each engine gets one worker process
per path (concurrency 1), started here and stopped at the end; every key lives under a
key prefix of this run, deleted at the end (SCAN MATCH prefix*).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is on sys.path, not the root
    sys.path.insert(0, str(ROOT))

# Short tasks (Celery, prefetch multiplier 4) and forced-RQ ones, with a retry backoff
# like the default policy's "interactive" profile so that the record is a full one.
POLICY = """\
version: 1
routing:
  long_after: 30s
  workflows: celery
defaults:
  timeout: 30s
  retries: {max: 2, backoff: [1s, 5s]}
  keep_results: 10m
profiles:
  bench_rate_celery: {expected_latency: 100ms}
  bench_lat_celery: {expected_latency: 100ms}
  bench_rate_rq: {expected_latency: 100ms, backend: rq}
  bench_lat_rq: {expected_latency: 100ms, backend: rq}
"""

ENGINES = ("celery", "rq")
PATHS = ("raw", "taskrouter")


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)  # enqueues per second, one per rep
    latencies: list[float] = field(default_factory=list)  # seconds, one per job

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def latency_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    def latency_quantile_ms(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise SystemExit(f"benchmark time limit ({self.seconds:g} s) reached during {what}")


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.prefix = f"trbench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        policy = workdir / "policy.yaml"
        policy.write_text(POLICY)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTER_", "RQ_"))
        }
        self.env.update(
            TASKROUTER_REDIS_URL=args.redis_url,
            TASKROUTER_KEY_PREFIX=self.prefix,
            TASKROUTER_POLICY=str(policy),
            RQ_KEY_PREFIX=f"{self.prefix}-rq",  # what taskrouter sets for this key prefix
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        # This process talks to the same Redis with the same prefixes. RQ reads
        # RQ_KEY_PREFIX at import, so set everything before importing anything.
        for k in [k for k in os.environ if k.startswith(("TASKROUTER_", "RQ_"))]:
            del os.environ[k]
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("TASKROUTER_", "RQ_"))})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deadline = Deadline(args.time_limit)

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        import redis

        from backends.runtime import Runtime
        from benchmarks import bench_app
        from router import _runtime

        self.app = bench_app
        self.runtime = Runtime.from_env()
        _runtime.install(self.runtime)
        self.redis = redis.Redis.from_url(self.args.redis_url)
        self.redis.ping()

        from rq import Queue
        from rq.serializers import JSONSerializer

        self.raw_celery = bench_app.raw_celery_app()
        raw_conn = redis.Redis.from_url(self.args.redis_url)
        self.raw_rq_rate = Queue(bench_app.RAW_RATE_RQ, connection=raw_conn, serializer=JSONSerializer)
        self.raw_rq_lat = Queue(bench_app.RAW_LAT_RQ, connection=raw_conn, serializer=JSONSerializer)

    def start_workers(self) -> None:
        a = self.app
        cli = [sys.executable, "-m", "services.cli", "worker", "--app", "benchmarks.bench_app"]
        raw = [sys.executable, "-m", "benchmarks.bench_app"]
        commands = {
            "taskrouter-celery": [*cli, "--backend", "celery", "--queues", a.LAT_CELERY,
                                  "--concurrency", "1"],
            "taskrouter-rq": [*cli, "--backend", "rq", "--queues", a.LAT_RQ, "--concurrency", "1"],
            "raw-celery": [*raw, "raw-celery", a.RAW_LAT_CELERY],
            "raw-rq": [*raw, "raw-rq", a.RAW_LAT_RQ],
        }  # fmt: skip
        for name, cmd in commands.items():
            log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
            self.procs[name] = subprocess.Popen(
                cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def stop_workers(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> int:
        deleted = 0
        for pattern in (f"{self.prefix}:*", f"{self.prefix}-rq:*", f"{self.prefix}-celery:*"):
            batch = list(self.redis.scan_iter(match=pattern, count=1000))
            for i in range(0, len(batch), 500):
                deleted += self.redis.delete(*batch[i : i + 500])
        return deleted

    def worker_log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- the two measurements ---------------------------------------------------------------

    def enqueuers(self, engine: str, path: str) -> Callable[[int], Any]:
        a = self.app
        if path == "taskrouter":
            return (a.noop_celery if engine == "celery" else a.noop_rq).enqueue
        if engine == "celery":
            send, queue = self.raw_celery.send_task, a.RAW_RATE_CELERY
            return lambda i: send(a.RAW_NOOP, args=(i,), queue=queue)
        enqueue, fn = self.raw_rq_rate.enqueue, a.raw_noop
        return lambda i: enqueue(fn, i)

    def starters(self, engine: str, path: str) -> Callable[[str], Any]:
        a = self.app
        if path == "taskrouter":
            return (a.stamp_celery if engine == "celery" else a.stamp_rq).enqueue
        if engine == "celery":
            send, queue = self.raw_celery.send_task, a.RAW_LAT_CELERY
            return lambda key: send(a.RAW_STAMP, args=(key,), queue=queue)
        enqueue, fn = self.raw_rq_lat.enqueue, a.raw_stamp
        return lambda key: enqueue(fn, key)

    def measure_rate(self, engine: str, path: str, n: int) -> float:
        enqueue = self.enqueuers(engine, path)
        for i in range(50):  # warm: connections, caches, first-call imports
            enqueue(i)
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(i)
        return n / (time.perf_counter() - t0)

    def one_start(self, engine: str, path: str, key: str, timeout: float = 15.0) -> float:
        start = self.starters(engine, path)
        t0 = time.time()
        start(key)
        got = self.redis.blpop([key], timeout=timeout)
        if got is None:
            name = f"{path}-{engine}"
            proc = self.procs[name]
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            raise SystemExit(
                f"{name}: no task start within {timeout:g} s (worker {state}):\n"
                + self.worker_log(name)
            )
        return float(got[1]) - t0

    def wait_ready(self) -> None:
        """Each worker runs a task (the first may wait for the worker to boot)."""
        for engine in ENGINES:
            for path in PATHS:
                self.one_start(engine, path, f"{self.prefix}:stamp:ready", timeout=90)

    def run(self, results: dict[tuple[str, str], Result]) -> None:
        args = self.args
        # Enqueue rate: reps interleaved, alternating which path goes first.
        for rep in range(args.reps):
            for engine in ENGINES:
                order = PATHS if rep % 2 == 0 else PATHS[::-1]
                for path in order:
                    self.deadline.check("the enqueue-rate phase")
                    results[engine, path].rates.append(
                        self.measure_rate(engine, path, args.enqueues)
                    )
        # Warm the latency paths (the first tasks of a process import and connect).
        for engine in ENGINES:
            for path in PATHS:
                for _ in range(10):
                    self.one_start(engine, path, f"{self.prefix}:stamp:warm")
                    time.sleep(args.gap[engine])
        # Enqueue-to-start: raw and taskrouter alternate, each to an idle worker.
        for engine in ENGINES:
            gap = args.gap[engine]
            for i in range(args.latency_jobs):
                self.deadline.check("the latency phase")
                order = PATHS if i % 2 == 0 else PATHS[::-1]
                for path in order:
                    key = f"{self.prefix}:stamp:{engine}:{path}"
                    results[engine, path].latencies.append(self.one_start(engine, path, key))
                    time.sleep(gap)


def report(results: dict[tuple[str, str], Result], args: argparse.Namespace) -> str:
    lines = []
    head = (
        f"{'engine':<7} {'path':<11} {'enqueue/s':>10} {'reps min-max':>14}  "
        f"{'median start ms':>15} {'p25-p75 ms':>12}"
    )
    lines += [head, "-" * len(head)]
    for engine in ENGINES:
        for path in PATHS:
            r = results[engine, path]
            spread = f"{min(r.rates):,.0f}-{max(r.rates):,.0f}" if r.rates else "-"
            quart = f"{r.latency_quantile_ms(0.25):.2f}-{r.latency_quantile_ms(0.75):.2f}"
            lines.append(
                f"{engine:<7} {path:<11} {r.rate:>10,.0f} {spread:>14}  "
                f"{r.latency_ms:>15.2f} {quart:>12}"
            )
    lines.append("-" * len(head))
    verdicts = []
    for engine in ENGINES:
        raw, tr = results[engine, "raw"], results[engine, "taskrouter"]
        ratio = tr.rate / raw.rate
        extra = tr.latency_ms - raw.latency_ms
        lines.append(
            f"{engine:<7} {'tr / raw':<11} {ratio:>10.1%} {'':>14}  "
            f"{extra:>+12.2f} ms {tr.latency_ms / raw.latency_ms:>10.2f}x"
        )
        ok_rate, ok_lat = ratio >= 0.9, extra <= 0.3
        verdicts.append(
            f"{engine}: enqueue rate {ratio:.1%} of raw (target >= 90%: "
            f"{'met' if ok_rate else 'MISSED'}), median start {extra:+.2f} ms over raw "
            f"(target <= +0.30 ms: {'met' if ok_lat else 'MISSED'})"
        )
    lines.append("")
    lines.append(
        f"enqueue/s: median of {args.reps} reps of {args.enqueues:,} enqueues per path; "
        f"start: median of {args.latency_jobs} sequential tasks per path "
        "(raw and taskrouter alternating)"
    )
    lines += verdicts
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    p.add_argument("--enqueues", type=int, default=2000, help="tasks per enqueue-rate rep")
    p.add_argument("--reps", type=int, default=5, help="enqueue-rate reps per path")
    p.add_argument("--latency-jobs", type=int, default=300, help="sequential tasks per path")
    p.add_argument("--celery-gap", type=float, default=0.02, help="pause after each celery task (s)")
    p.add_argument("--rq-gap", type=float, default=0.06, help="pause after each rq task (s)")
    p.add_argument("--time-limit", type=float, default=600, help="give up after this many s")
    p.add_argument("--keep-logs", action="store_true", help="print where worker logs are kept")
    args = p.parse_args(argv)
    args.gap = {"celery": args.celery_gap, "rq": args.rq_gap}
    return args


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="trbench-"))
        print(f"worker logs in {path}", file=sys.stderr)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="trbench-") as tmp:
            yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {(e, p): Result() for e in ENGINES for p in PATHS}
    with workdir(args.keep_logs) as tmp:
        bench = Bench(args, tmp)
        bench.setup()
        started = time.monotonic()
        try:
            bench.start_workers()
            bench.wait_ready()
            bench.run(results)
        finally:
            bench.stop_workers()
            deleted = bench.cleanup()
            bench.runtime.close()
    print(report(results, args))
    print(
        f"\n{time.monotonic() - started:.0f} s; key prefix {bench.prefix} "
        f"({deleted} keys deleted); redis {args.redis_url}; {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
