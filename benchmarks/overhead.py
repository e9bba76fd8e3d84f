"""What taskrouter costs over the raw engine APIs, on a real Redis (issue 2).

    .venv/bin/python benchmarks/overhead.py [--redis-url redis://127.0.0.1:6379/12]

For each engine, through taskrouter and through the raw engine API:

- enqueue/s: the client's rate for ``--enqueues`` (2,000) no-op tasks sent one after
  another onto a queue no worker consumes (no worker competes with the client for the
  CPU; the client does the same work either way). The two paths alternate in blocks of
  ``--block`` (100) enqueues, so that both see the same machine; ``--reps`` (5) reps,
  the median shown. tr / raw is the median of the reps' own ratios.
- enqueue-to-start: the median, over ``--latency-jobs`` (300) sequential no-op tasks per
  path, of the time the task's first statement reads minus the time read just before
  the enqueue call (``benchmarks/bench_app.py``: the task pushes its start time to a list
  that the benchmark BLPOPs), so raw and taskrouter are measured the same way, and what
  taskrouter runs before the function (its claim) counts. Raw and taskrouter tasks
  alternate one at a time, each to an idle worker (a pause after each lets the worker
  finish the previous job). ``--trace`` splits Celery's at task_prerun.

Raw Celery is a plain Celery app with the broker, kombu key prefix and every setting of
taskrouter's app (JSON only, acks_late, prefetch multiplier, visibility timeout, ignored
results, and task events as taskrouter's worker sends them by default: ``--no-events``
turns them off on both), its no-op task sent with ``apply_async``; raw RQ is
``Queue(...).enqueue`` of a
plain function with ``JSONSerializer`` and the stock forking ``Worker``. Each engine gets
one worker process per path, concurrency 1, logging at INFO like taskrouter's, started
here and stopped at the end. Every key lives under a key prefix of this run, deleted at
the end (SCAN MATCH prefix*). The run gives up after ``--time-limit`` seconds.
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

from taskrouter.services.processes import cli_command, isolated_env, stop_all

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
    pickups: list[float] = field(default_factory=list)  # --trace: enqueue to task_prerun
    calls: list[float] = field(default_factory=list)  # --trace: the enqueue call itself

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
        self.env = isolated_env(
            args.redis_url, self.prefix, pythonpath=str(ROOT), policy=str(policy)
        )
        self.env["RQ_KEY_PREFIX"] = f"{self.prefix}-rq"  # what taskrouter sets for this prefix
        if args.trace:
            self.env["BENCH_TRACE"] = "1"
        self.env["BENCH_EVENTS"] = "1" if args.events else "0"
        # This process talks to the same Redis with the same prefixes. RQ reads
        # RQ_KEY_PREFIX at import, so set everything before importing anything.
        for k in [k for k in os.environ if k.startswith(("TASKROUTER_", "RQ_"))]:
            del os.environ[k]
        os.environ.update(
            {k: v for k, v in self.env.items() if k.startswith(("TASKROUTER_", "RQ_"))}
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deadline = Deadline(args.time_limit)

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        import redis

        from benchmarks import bench_app
        from taskrouter import _runtime
        from taskrouter.backends.runtime import Runtime

        self.app = bench_app
        self.runtime = Runtime.from_env()
        _runtime.install(self.runtime)
        self.redis = redis.Redis.from_url(self.args.redis_url)
        self.redis.ping()

        from rq import Queue
        from rq.serializers import JSONSerializer

        self.raw_celery = bench_app.raw_celery_app(self.runtime.celery_app)
        raw_conn = redis.Redis.from_url(self.args.redis_url)
        self.raw_rq_rate = Queue(
            bench_app.RAW_RATE_RQ, connection=raw_conn, serializer=JSONSerializer
        )
        self.raw_rq_lat = Queue(
            bench_app.RAW_LAT_RQ, connection=raw_conn, serializer=JSONSerializer
        )

    def start_workers(self) -> None:
        a = self.app
        cli = cli_command("worker", "--app", "benchmarks.bench_app")
        raw = [sys.executable, "-m", "benchmarks.bench_app"]
        commands = {
            "taskrouter-celery": [*cli, "--backend", "celery", "--queues", a.LAT_CELERY,
                                  "--concurrency", "1",
                                  "--events" if self.args.events else "--no-events"],
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
        stop_all(self.procs.values())

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
            send, queue = self.raw_celery.tasks[a.RAW_NOOP].apply_async, a.RAW_RATE_CELERY
            return lambda i: send((i,), queue=queue)
        enqueue, fn = self.raw_rq_rate.enqueue, a.raw_noop
        return lambda i: enqueue(fn, i)

    def starters(self, engine: str, path: str) -> Callable[[str], Any]:
        a = self.app
        if path == "taskrouter":
            return (a.stamp_celery if engine == "celery" else a.stamp_rq).enqueue
        if engine == "celery":
            send, queue = self.raw_celery.tasks[a.RAW_STAMP].apply_async, a.RAW_LAT_CELERY
            return lambda key: send((key,), queue=queue)
        enqueue, fn = self.raw_rq_lat.enqueue, a.raw_stamp
        return lambda key: enqueue(fn, key)

    def measure_rates(self, engine: str, n: int, block: int) -> dict[str, float]:
        """Enqueues per second of each path for ``n`` enqueues, sent in blocks of
        ``block`` that alternate between the paths, so that both see the same machine
        (other processes come and go over seconds; blocks take a tenth of one)."""
        calls = {path: self.enqueuers(engine, path) for path in PATHS}
        for enqueue in calls.values():
            for i in range(50):  # warm: connections, caches, first-call imports
                enqueue(i)
        spent = dict.fromkeys(PATHS, 0.0)
        for b in range(n // block):
            for path in PATHS if b % 2 == 0 else PATHS[::-1]:
                enqueue = calls[path]
                t0 = time.perf_counter()
                for i in range(block):
                    enqueue(i)
                spent[path] += time.perf_counter() - t0
        return {path: (n // block) * block / spent[path] for path in PATHS}

    def one_start(
        self, engine: str, path: str, key: str, timeout: float = 15.0, into: Result | None = None
    ) -> float:
        start = self.starters(engine, path)
        t0 = time.time()
        start(key)
        t1 = time.time()
        got = self.redis.blpop([key], timeout=timeout)
        if got is None:
            name = f"{path}-{engine}"
            proc = self.procs[name]
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            raise SystemExit(
                f"{name}: no task start within {timeout:g} s (worker {state}):\n"
                + self.worker_log(name)
            )
        started, *prerun = got[1].decode().split(",")
        if prerun and into is not None:
            into.pickups.append(float(prerun[0]) - t0)
            into.calls.append(t1 - t0)
        return float(started) - t0

    def wait_ready(self) -> None:
        """Each worker runs a task (the first may wait for the worker to boot)."""
        for engine in ENGINES:
            for path in PATHS:
                self.one_start(engine, path, f"{self.prefix}:stamp:ready", timeout=90)

    def run(self, results: dict[tuple[str, str], Result]) -> None:
        args = self.args
        # Enqueue rate: per rep, raw and taskrouter alternate in blocks.
        for _ in range(args.reps):
            for engine in ENGINES:
                self.deadline.check("the enqueue-rate phase")
                rates = self.measure_rates(engine, args.enqueues, args.block)
                for path, rate in rates.items():
                    results[engine, path].rates.append(rate)
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
                    r = results[engine, path]
                    r.latencies.append(self.one_start(engine, path, key, into=r))
                    time.sleep(gap)


def _rep_ratios(results: dict[tuple[str, str], Result], engine: str) -> list[float]:
    tr, raw = results[engine, "taskrouter"].rates, results[engine, "raw"].rates
    return [t / r for t, r in zip(tr, raw, strict=True)]


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
        # Each rep's two rates come from the same seconds: their ratio is the steadier.
        ratio = statistics.median(_rep_ratios(results, engine))
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
    rep_ratios = "; ".join(
        e + " " + " ".join(f"{x:.0%}" for x in _rep_ratios(results, e)) for e in ENGINES
    )
    lines.append(
        f"enqueue/s: median of {args.reps} reps of {args.enqueues:,} enqueues per path, raw "
        f"and taskrouter alternating in blocks of {args.block} (reps' tr / raw: {rep_ratios})."
        f" start: median of {args.latency_jobs} sequential tasks per path, raw and "
        "taskrouter alternating."
    )
    lines += verdicts
    for engine in ENGINES:
        for path in PATHS:
            r = results[engine, path]
            if r.pickups:
                pickup = statistics.median(r.pickups) * 1000
                lines.append(
                    f"trace {engine} {path}: enqueue call "
                    f"{statistics.median(r.calls) * 1000:.2f} ms; enqueue to task_prerun "
                    f"{pickup:.2f} ms, "
                    f"task_prerun to function body {r.latency_ms - pickup:.2f} ms (medians)"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    p.add_argument("--enqueues", type=int, default=2000, help="tasks per enqueue-rate rep")
    p.add_argument("--reps", type=int, default=5, help="enqueue-rate reps per path")
    p.add_argument("--block", type=int, default=100, help="enqueues per alternating block")
    p.add_argument("--latency-jobs", type=int, default=300, help="sequential tasks per path")
    p.add_argument(
        "--celery-gap", type=float, default=0.02, help="pause after each celery task (s)"
    )
    p.add_argument("--rq-gap", type=float, default=0.06, help="pause after each rq task (s)")
    p.add_argument("--time-limit", type=float, default=600, help="give up after this many s")
    p.add_argument("--keep-logs", action="store_true", help="print where worker logs are kept")
    p.add_argument("--trace", action="store_true", help="celery: split the latency at task_prerun")
    p.add_argument(
        "--events",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Celery task events on both Celery workers (taskrouter's default: on)",
    )
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
    load_before = os.getloadavg()[0]
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
        f"({deleted} keys deleted); redis {args.redis_url}; {os.cpu_count()} CPUs, "
        f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(other processes on the machine add noise)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
