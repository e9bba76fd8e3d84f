"""A burst of jobs on both engines, then wait for their records to expire: Redis must
come back to where it started (issue 15, item 2).

    .venv/bin/python benchmarks/soak.py [--jobs 20000] [--keep 2s] [--fail-every 10]

Starts a Redis server of its own (its own port, no persistence), a Celery worker and an
RQ worker pool (concurrency 2 each) on ``benchmarks/soak_app.py`` with a copy of
``benchmarks/soak_policy.yaml`` whose ``keep_results`` is ``--keep``, and measures Redis'
``used_memory`` and key count once the workers are up (the baseline). It submits
``--jobs`` jobs, half to each engine (one in ``--fail-every`` fails, on both engines;
every other pair has an idempotency key), waits for every job to end (the peak), then waits past
``keep_results``, runs ``taskrouter janitor --once`` twice and measures again. At each
point it compares the listing (GET /jobs, paged to the end, and each state's count) with
the job records in Redis. The keys left over are shown by pattern. The last line is
PASS when memory and key count are within 5 % (or 1 MB of memory) of the baseline, no
key pattern grew (in keys, or in entries of a one-of-a-kind key such as an index or an
RQ registry) and the listing matched the records at every point, else FAIL. Every
process it starts is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import re
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
from typing import Any

from taskrouter.services.processes import RedisServer, stop_all
from taskrouter.settings import RUNTIME_SKETCH_SIZE
from taskrouter.states import STATES

ROOT = Path(__file__).resolve().parents[1]
POLICY = Path(__file__).with_name("soak_policy.yaml")
APP = "benchmarks.soak_app"
TOLERANCE = 0.05
TOLERANCE_BYTES = 1024 * 1024


class Server(RedisServer):
    """A Redis of this run (no persistence); ``maxmemory`` with noeviction when given."""

    def __init__(self, maxmemory: str | None = None, policy: str = "noeviction") -> None:
        args = ["--save", "", "--appendonly", "no"]
        if maxmemory:
            args += ["--maxmemory", maxmemory, "--maxmemory-policy", policy]
        super().__init__(tempfile.mkdtemp(prefix="taskrouter-redis-"), *args)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        super().stop(sig, timeout)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Point:
    """Redis at one moment: memory, keys, records and what the listing shows."""

    name: str
    used_memory: int
    dataset: int
    keys: int
    records: int
    listed: int
    by_state: dict[str, int]
    problems: list[str] = field(default_factory=list)
    patterns: Counter[str] = field(default_factory=Counter)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        return not self.problems

    def line(self) -> str:
        mark = (
            ""
            if self.consistent
            else "  (listing does not match: " + "; ".join(self.problems) + ")"
        )
        return (
            f"{self.name:<9} used_memory {self.used_memory / 1e6:8.2f} MB "
            f"(dataset {self.dataset / 1e6:6.2f} MB)  keys {self.keys:7d}  "
            f"records {self.records:6d}  listed {self.listed:6d} {self.by_state}{mark}"
        )


_ID = re.compile(r"(?<![0-9a-z])[0-9a-f]{28}(-\d+)?(?![0-9a-z])|(?<=:)[0-9a-f-]{36}$")


def pattern(key: str) -> str:
    """A key with its job ids (and native ids, Celery task ids) as ``*``."""
    return _ID.sub("*", key)


def measure(name: str, runtime: Any, prefix: str) -> Point:
    """Redis now. The listing is read between two scans of the records, so that records
    expiring meanwhile do not count as a mismatch: it must show every record of the
    second scan and nothing that was not a record in the first."""
    from taskrouter.backends.queries import JobFilter, list_jobs

    store = runtime.store
    client = store.client
    before = _records(client, prefix)
    listed = _listed(list_jobs, store, None)
    by_state = {s: _listed(list_jobs, store, JobFilter(state=s)) for s in STATES}
    after = _records(client, prefix)
    keys = list(client.scan_iter(count=2000))
    memory = client.info("memory")
    problems = []
    if not set(after) <= listed <= set(before):
        problems.append(
            f"listed {len(listed)} jobs: {len(set(after) - listed)} records missing, "
            f"{len(listed - set(before))} not records"
        )
    for state, ids in by_state.items():
        now = {i for i, s in after.items() if s == state}
        then = {i for i, s in before.items() if s == state}
        if not (now <= ids <= then | set(after)):
            problems.append(f"state {state}: listed {len(ids)}, records {len(now)}-{len(then)}")
    point = Point(
        name=name,
        used_memory=int(memory["used_memory"]),
        dataset=int(memory["used_memory_dataset"]),
        keys=len(keys),
        records=len(after),
        listed=len(listed),
        by_state={s: len(ids) for s, ids in by_state.items() if ids},
        problems=problems,
        patterns=Counter(pattern(k) for k in keys),
    )
    # The size of each collection that is one of its kind (indexes, registries, queues;
    # not hashes, whose fields come and go with a worker's state).
    for key in keys:
        if point.patterns[pattern(key)] == 1:
            size = _size(client, key)
            if size is not None:
                point.sizes[pattern(key)] = size
    return point


def _records(client: Any, prefix: str) -> dict[str, str]:
    """{job id: state} of every job record."""
    keys = list(client.scan_iter(match=f"{prefix}:job:*", count=2000))
    states: dict[str, str] = {}
    for i in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for k in keys[i : i + 500]:
            pipe.hget(k, "state")
        for k, state in zip(keys[i : i + 500], pipe.execute(), strict=True):
            if state:
                states[k.rsplit(":", 1)[1]] = state
    return states


def _size(client: Any, key: str) -> int | None:
    kind = client.type(key)
    size = {"zset": client.zcard, "list": client.llen, "set": client.scard}
    return int(size[kind](key)) if kind in size else None


def _listed(list_jobs: Any, store: Any, filters: Any) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        page = list_jobs(store, filters, limit=500, cursor=cursor)
        ids.update(j.id for j in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return ids


@dataclass
class Outcome:
    points: list[Point] = field(default_factory=list)
    peak_memory: int = 0
    peak_keys: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Point:
        return self.points[0]

    @property
    def after(self) -> Point:
        return self.points[-1]

    @property
    def memory_back(self) -> bool:
        grew = self.after.used_memory - self.baseline.used_memory
        return grew <= max(TOLERANCE * self.baseline.used_memory, TOLERANCE_BYTES)

    @property
    def keys_back(self) -> bool:
        return self.after.keys - self.baseline.keys <= TOLERANCE * self.baseline.keys

    @property
    def passed(self) -> bool:
        consistent = all(p.consistent for p in self.points)
        back = self.memory_back and self.keys_back and not self.leftover()
        return consistent and back and not self.problems

    def leftover(self) -> list[str]:
        """Key patterns that grew since the baseline: more keys, or a bigger one."""
        before, after = self.baseline, self.after
        grown = after.patterns - before.patterns
        bigger = {p for p, n in after.sizes.items() if n > before.sizes.get(p, 0)}
        lines = []
        for p in sorted(set(grown) | bigger):
            size = f" ({after.sizes[p]} entries, {before.sizes.get(p, 0)} before)"
            lines.append(f"  {after.patterns[p]:6d} {p}" + (size if p in bigger else ""))
        return lines

    def lines(self) -> list[str]:
        timing = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        left = self.leftover()
        return [
            f"jobs: {dict(self.states)}; {timing}",
            *(p.line() for p in self.points),
            f"peak      used_memory {self.peak_memory / 1e6:8.2f} MB  keys {self.peak_keys:7d}"
            " (sampled every 0.5 s)",
            *(["grown since the baseline, by key pattern:", *left] if left else []),
            *self.problems,
            "PASS" if self.passed else "FAIL",
        ]


def worker_env(url: str, prefix: str, policy: Path) -> dict[str, str]:
    from taskrouter.services.processes import isolated_env

    return isolated_env(
        url,
        prefix,
        pythonpath=str(ROOT),
        policy=str(policy),
        lease_ttl="2s",
        janitor_interval="250ms",
    )


def write_policy(directory: Path, keep: str) -> Path:
    text = POLICY.read_text().replace("keep_results: 2s", f"keep_results: {keep}")
    path = directory / "soak_policy.yaml"
    path.write_text(text)
    return path


def run(
    jobs: int,
    workdir: Path,
    *,
    keep: str = "2s",
    fail_every: int = 10,
    url: str | None = None,
    prefix: str | None = None,
    drain_seconds: float = 600.0,
) -> Outcome:
    """One soak. ``url``: a Redis to use instead of a private one (its other keys count in
    the figures); ``prefix`` must match RQ_KEY_PREFIX if the caller set it (tests)."""
    from taskrouter import _runtime
    from taskrouter.backends.heartbeats import WorkerRegistry
    from taskrouter.backends.runtime import Runtime
    from taskrouter.durations import parse_duration
    from taskrouter.services.processes import cli_command
    from taskrouter.settings import Settings

    from . import soak_app

    prefix = prefix or f"trs-{uuid.uuid4().hex[:8]}"
    server = None if url else Server()
    url = url or server.url  # type: ignore[union-attr]
    env = worker_env(url, prefix, write_policy(workdir, keep))
    runtime = Runtime.from_env(Settings.from_env(env))
    previous = _runtime.install(runtime)
    outcome = Outcome()
    procs: list[subprocess.Popen[bytes]] = []
    sampling = threading.Event()
    try:
        if server:
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
        # The baseline is a stack that has run jobs before (RQ's queue set, the counters,
        # the scripts in Redis' cache, each profile's run time sketch, which is capped):
        # enough jobs of each engine to fill the sketches, expired and swept.
        warm = 2 * RUNTIME_SKETCH_SIZE
        for i in range(warm):
            (soak_app.soak_celery if i % 2 else soak_app.soak_rq).enqueue(i, _fails(i, 4))
        _drain(runtime, warm, 120)
        time.sleep(parse_duration(keep) + 0.5)
        janitor_pass(env)
        outcome.points.append(measure("before", runtime, prefix))
        outcome.peak_memory = outcome.baseline.used_memory

        def sample() -> None:
            client = runtime.store.client
            while not sampling.wait(0.5):
                used = int(client.info("memory")["used_memory"])
                outcome.peak_memory = max(outcome.peak_memory, used)
                outcome.peak_keys = max(outcome.peak_keys, int(client.dbsize()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        ended_before = ended(runtime)
        for i in range(jobs):
            fn = soak_app.soak_celery if i % 2 else soak_app.soak_rq
            fail = _fails(i, fail_every)
            call = fn.using(idempotency_key=f"soak-{i}") if i % 4 < 2 else fn
            call.enqueue(i, fail)
        outcome.seconds["submit"] = time.monotonic() - started
        outcome.states = _drain(runtime, warm + jobs, drain_seconds) - ended_before
        outcome.seconds["run"] = time.monotonic() - started
        expected = Counter(_expected(i, fail_every) for i in range(jobs))
        if outcome.states != expected:
            outcome.problems.append(f"jobs ended {dict(outcome.states)}, not {dict(expected)}")
        outcome.points.append(measure("finished", runtime, prefix))
        # Past keep_results every record has expired; then two janitor passes.
        time.sleep(parse_duration(keep) + 1.0)
        janitor_pass(env)
        janitor_pass(env)
        time.sleep(1.0)  # the workers' own janitor ticks (250 ms) and heartbeats settle
        outcome.seconds["total"] = time.monotonic() - started
        outcome.points.append(measure("after", runtime, prefix))
    finally:
        sampling.set()
        stop_all(procs)
        _runtime.install(previous)
        runtime.close()
        if server:
            server.stop()
    return outcome


def ended(runtime: Any) -> Counter[str]:
    """Jobs ended so far, by final state (the lifetime counters behind /metrics: records
    of 2 s expire faster than a poll of 20,000 jobs goes round)."""
    counts: Counter[str] = Counter()
    for name, n in runtime.store.client.hgetall(runtime.store.keys.counters()).items():
        event = name.split("|", 1)[0]
        if event in ("succeeded", "failed", "canceled"):
            counts[event] += int(n)
    return counts


def _drain(runtime: Any, jobs: int, seconds: float) -> Counter[str]:
    """Wait for ``jobs`` jobs to end; returns how they ended."""
    deadline = time.monotonic() + seconds
    while sum((counts := ended(runtime)).values()) < jobs and time.monotonic() < deadline:
        time.sleep(0.2)
    return counts


def janitor_pass(env: dict[str, str]) -> None:
    """``taskrouter janitor --once``, as an operator (or a cron job) runs it."""
    from taskrouter.services.processes import cli_command

    janitor = cli_command("janitor", "--app", APP, "--once")
    subprocess.run(janitor, env=env, cwd=ROOT, check=True, capture_output=True)


def _fails(i: int, every: int) -> bool:
    """Whether job i fails: a pair of jobs (one per engine) in every ``every`` pairs."""
    return every > 0 and (i // 2) % every == every - 1


def _expected(i: int, fail_every: int) -> str:
    return "failed" if _fails(i, fail_every) else "succeeded"


def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--keep", default="2s", help="keep_results of the soak's profiles")
    parser.add_argument("--fail-every", type=int, default=10, help="0: no job fails")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="taskrouter-soak-")
    try:
        outcome = run(args.jobs, Path(tmp), keep=args.keep, fail_every=args.fail_every)
    finally:
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.keep_logs:
        print(f"logs in {tmp}")
    print("\n".join(outcome.lines()), flush=True)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
