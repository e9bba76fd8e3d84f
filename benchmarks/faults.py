"""Kill worker processes at random under a mixed load; count what ran, what ended, how fast
deaths were seen (issue 5).

    .venv/bin/python benchmarks/faults.py [--jobs 500] [--max-seconds 600] [--kill-every 3]

Starts, on ``benchmarks/fault_app.py`` and ``benchmarks/fault_policy.yaml``, the workers
as they are deployed: 2 ``taskrouter worker --backend celery`` (concurrency 2: the main
process and its prefork children), 1 ``taskrouter worker --backend rq`` (concurrency 3:
the pool's main process and its RQ workers, each forking a work-horse per job) and 1
``taskrouter worker --lane io`` (one process). Each main process also runs the
janitor's duties; no other process does. Then it submits ``--jobs`` jobs evenly over
``--submit-seconds``: about 1/2 short ones on Celery (sleep 0-200 ms), 1/3 long-ish ones
on RQ (sleep 0.5-3 s), 1/6 waiting calls in the I/O lane (``async def``, await 0.2-2 s),
all with ``retries: {max: 2}``. While it submits, every ``--kill-every`` seconds it draws
a kind of kill at random and SIGKILLs a process of that kind as soon as one runs a job (a
draw that finds none before the next is reported as not made). The record's ``worker``
names the process that claimed the job and the one running it ("...:<pid>/<pid>"):

- ``rq-horse``: the RQ work-horse running a job (the pid after "/"); its RQ worker forks
  a new one for the next job;
- ``rq-worker``: the RQ worker running a job (the pid before "/"): its horse lives on as
  an orphan and must finish the job, which must not run again; the pool starts a new RQ
  worker;
- ``rq-pool``: a whole ``taskrouter worker --backend rq`` (the pool's main process, named
  in no record) one of whose RQ workers runs a job: each of its RQ workers stops when the
  pool dies, after the job its horse runs, which must not run again;
- ``celery-child``: the Celery pool child running a job (the pid after "/"); the main
  process forks a new one;
- ``celery-worker``: a whole ``taskrouter worker --backend celery`` running a job (the pid
  before "/", its main process): its children exit with it; the messages it reserved come
  back through another worker's duties once its heartbeat lapses;
- ``io-worker``: the ``taskrouter worker --lane io`` process running a job: the lane
  acknowledges a message when its job starts, so only the lease brings those jobs back.

A replacement for a whole worker is started at once (a deployment's supervisor would).
Then it waits up to ``--drain-seconds`` for every job to finish, and prints a short report:
jobs submitted / succeeded / failed per error type, executions per job (each task
increments a Redis counter named by its argument, so runs are counted apart from
taskrouter's records), stuck jobs, and the detection delay of each death (the WorkerLost
history entry's ``finished_at`` minus the time of the SIGKILL), overall and per kind. The
jobs "running in a killed process" are those whose record named a process of the killed
tree right after the kill, plus any attempt a process of that tree claimed just after it
(a Celery pool child runs what its dying main process handed it), seen from the
WorkerLost entry's message. Each job a check complains about is listed with its history
and, if unfinished, the engine keys that hold its message. The last line is PASS or FAIL;
``--keep-logs`` also keeps every kill and record in ``records.json`` beside the workers'
logs.

The lease and janitor settings are taskrouter's production defaults (15 s, 5 s) unless
``--lease-ttl`` / ``--janitor-interval`` say otherwise; the header prints them.

Every process this script starts is its descendant: it makes itself a child subreaper, so
orphaned work-horses (and RQ workers finishing a job after their pool died) come back to
it, and at the end (also on Ctrl-C or an error) it stops its workers and SIGKILLs, by pid,
any descendant still alive. Every key lives under a key prefix of this run, deleted at the
end (SCAN MATCH prefix*).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from taskrouter.services.processes import cli_command, isolated_env, stop_all

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is on sys.path, not the root
    sys.path.insert(0, str(ROOT))

APP = "benchmarks.fault_app"
POLICY = Path(__file__).with_name("fault_policy.yaml")
# Each kind of kill, and the lane of the jobs whose processes it kills.
KIND_LANE = {
    "rq-horse": "rq",
    "rq-worker": "rq",
    "rq-pool": "rq",
    "celery-child": "celery",
    "celery-worker": "celery",
    "io-worker": "io",
}
KINDS = tuple(KIND_LANE)
EXECUTOR_KINDS = ("rq-horse", "celery-child")  # kills of the process that runs the task
WHOLE_KINDS = ("rq-pool", "celery-worker", "io-worker")  # a `taskrouter worker` process
ORPHANING_KINDS = ("rq-worker", "rq-pool")  # a running horse outlives the killed process
LANES = ("celery", "rq", "io")
FINAL_STATES = ("succeeded", "failed")
STUCK_STATES = ("running", "queued")
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


# -- processes ------------------------------------------------------------------------------


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _term_with_parent() -> None:
    """In a worker, before exec: SIGTERM when this script dies, however it dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process on the machine."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue  # it exited meanwhile
        state, ppid = stat.rsplit(b")", 1)[1].split()[:2]
        table[int(entry.name)] = (int(ppid), state.decode())
    return table


def descendants(root: int, table: Mapping[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Fleet:
    """The worker processes of the run, and everything they start."""

    def __init__(self, env: Mapping[str, str], logdir: Path, args: argparse.Namespace) -> None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of our workers become our children
        self.env = dict(env)
        self.logdir = logdir
        self.args = args
        self.live: dict[str, list[subprocess.Popen[bytes]]] = {lane: [] for lane in LANES}
        self.started: list[subprocess.Popen[bytes]] = []  # every worker started here
        self._next_reap = 0.0

    def concurrency(self, lane: str) -> int:
        return int(getattr(self.args, f"{lane}_concurrency"))

    def start(self, lane: str) -> subprocess.Popen[bytes]:
        """One ``taskrouter worker`` of ``lane`` (celery: prefork, rq: fork, io)."""
        name = f"{lane}-{len(self.started)}"
        cmd = cli_command("worker", "--app", APP)
        cmd += ["--lane", "io"] if lane == "io" else ["--backend", lane]
        cmd += ["--concurrency", str(self.concurrency(lane))]
        with open(self.logdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches this script only; it stops them
                preexec_fn=_term_with_parent,
            )
        self.started.append(proc)
        self.live[lane].append(proc)
        return proc

    def start_all(self) -> None:
        for lane in LANES:
            for _ in range(getattr(self.args, f"{lane}_workers")):
                self.start(lane)

    def kill(self, pid: int) -> float | None:
        """SIGKILL ``pid`` if it is one of ours (never anyone else's process); the time of
        the kill, or None if it is not (or no longer) ours."""
        if pid not in descendants(os.getpid(), process_table()):
            return None
        at = time.time()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return at

    def replace(self, pid: int) -> None:
        """If ``pid`` was a whole worker: collect it and start a replacement."""
        for lane, procs in self.live.items():
            for proc in procs:
                if proc.pid == pid:
                    proc.wait()
                    procs.remove(proc)
                    self.start(lane)
                    return

    def reap_orphans(self) -> None:
        """Collect exited orphans (a work-horse whose worker was killed, an RQ worker
        whose pool was), once a second."""
        if time.monotonic() < self._next_reap:
            return
        self._next_reap = time.monotonic() + 1
        ours = {p.pid for p in self.started}
        for pid, (ppid, state) in process_table().items():
            if ppid == os.getpid() and pid not in ours and state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def stop(self) -> None:
        """SIGTERM the workers (warm shutdown), then SIGKILL whatever of ours is left."""
        stop_all(self.started, 60)
        for _ in range(50):
            left = descendants(os.getpid(), process_table())
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            self._next_reap = 0.0
            self.reap_orphans()


# -- the workload ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One job to submit: its lane, its sleep, and when (seconds into the submission)."""

    lane: str  # "celery" (prefork), "rq" or "io"
    seconds: float
    offset: float
    counter: str


SLEEPS = {"celery": (0.0, 0.2), "rq": (0.5, 3.0), "io": (0.2, 2.0)}


def plan(args: argparse.Namespace, prefix: str, rng: random.Random) -> list[Spec]:
    specs = []
    for i in range(args.jobs):
        draw = rng.random()
        lane = "celery" if draw < 1 / 2 else "rq" if draw < 5 / 6 else "io"
        seconds = rng.uniform(*SLEEPS[lane])
        offset = i * args.submit_seconds / args.jobs
        counter = f"{prefix}:fault:exec:{uuid.uuid4().hex}"
        specs.append(Spec(lane, seconds, offset, counter))
    return specs


# -- kills ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Running:
    """A job the record says is running, and the processes its ``worker`` names."""

    job_id: str
    lane: str
    worker_pid: int  # the process that claimed it (RQ worker, Celery main, lane process) ...
    exec_pid: int  # ... and the process running the task (work-horse, pool child, lane)
    attempt: int


@dataclass(slots=True)
class Kill:
    kind: str
    pid: int
    at: float  # time.time() just before the SIGKILL
    tree: list[int] = field(default_factory=list)  # the pid and its descendants then
    jobs: dict[str, int] = field(default_factory=dict)  # job id -> attempt it was running


def parse_worker(worker: str) -> tuple[int, int]:
    """Parse "engine@host:<worker pid>/<executing pid>" into the two pids."""
    left, _, executing = worker.rpartition("/")
    return int(left.rpartition(":")[2]), int(executing)


def running_jobs(store: Any) -> list[Running]:
    from benchmarks.fault_app import PROFILE_LANE

    ids = store.client.zrange(store.keys.running, 0, -1)
    pipe = store.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(store.keys.job(job_id), "state", "profile", "worker", "attempts")
    found = []
    for job_id, (state, profile, worker, attempts) in zip(ids, pipe.execute(), strict=True):
        if state == "running" and worker and "/" in worker and profile in PROFILE_LANE:
            worker_pid, exec_pid = parse_worker(worker)
            lane = PROFILE_LANE[profile]
            found.append(Running(job_id, lane, worker_pid, exec_pid, int(attempts or 0)))
    return found


def alive(running: list[Running], spared: set[int]) -> list[Running]:
    """Running jobs in no process a kill took down or orphaned. A record still names its
    dead process until the janitor reaps it, a lease later: such a job is not running."""
    return [r for r in running if r.worker_pid not in spared and r.exec_pid not in spared]


def targets(
    kind: str,
    running: list[Running],
    fleet: Fleet,
    spared: set[int],
    table: Mapping[int, tuple[int, str]],
) -> list[int]:
    """Pids a kill of ``kind`` could hit now. Processes a kill left alive (an orphaned
    work-horse, an RQ worker whose pool died) are left alone, so that each orphan's fate
    is its own."""
    lane = KIND_LANE[kind]
    jobs = [r for r in alive(running, spared) if r.lane == lane]
    if kind in EXECUTOR_KINDS:
        return sorted({r.exec_pid for r in jobs})
    if kind == "rq-worker":
        return sorted({r.worker_pid for r in jobs})
    busy = {r.worker_pid for r in jobs}  # a whole worker: one whose tree runs a job
    return sorted(
        p.pid
        for p in fleet.live[lane]
        if p.poll() is None and p.pid not in spared and ({p.pid} | descendants(p.pid, table)) & busy
    )


def hit_jobs(kill: Kill, running: list[Running], spared_before: set[int]) -> dict[str, int]:
    """The jobs that were running in the killed process tree (read right after the kill: a
    dead process neither claims nor finishes, and a reap takes a whole lease)."""
    tree = set(kill.tree)
    return {
        r.job_id: r.attempt
        for r in alive(running, spared_before)
        if r.worker_pid in tree or r.exec_pid in tree
    }


LOST_WORKER = re.compile(r"worker \S+:(\d+)/(\d+) stopped renewing")


def attribute_late_claims(kills: list[Kill], jobs: list[Final]) -> int:
    """Add to its kill each reaped attempt that a process of the killed tree claimed after
    the kill (a Celery pool child takes a job its main process handed it just before
    dying). The WorkerLost entry's message names the worker; returns how many were added."""
    added = 0
    known = {(job_id, a) for k in kills for job_id, a in k.jobs.items()}
    for job in jobs:
        for entry in job.history:
            match = LOST_WORKER.search((entry.get("error") or {}).get("message", ""))
            if not worker_lost(entry) or not match or (job.job_id, entry["attempt"]) in known:
                continue
            pids = {int(match[1]), int(match[2])}
            earlier = [
                k for k in kills if pids & set(k.tree) and k.at * 1000 < entry["finished_at"]
            ]
            if earlier:
                earlier[-1].jobs[job.job_id] = entry["attempt"]
                added += 1
    return added


# -- the run --------------------------------------------------------------------------------


@dataclass(slots=True)
class Final:
    """A job at the end: its record and its own count of executions."""

    spec: Spec
    job_id: str
    state: str
    error_type: str
    attempts: int
    history: list[dict[str, Any]]
    executions: int
    took: float | None  # seconds from submission to the end (None: not finished)


class FaultRun:
    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args = args
        self.prefix = f"trfault-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.env = self._environment()
        self.fleet = Fleet(self.env, logdir, args)
        self.rng = random.Random(args.seed)
        self.specs = plan(args, self.prefix, self.rng)
        self.submitted: list[tuple[Spec, str]] = []  # (spec, job id)
        self.kills: list[Kill] = []
        self.skipped: Counter[str] = Counter()  # kills not made, by why
        self.epoch = time.time()  # the start of the submissions (set by chaos())
        self.late = 0  # reaped attempts claimed after their kill (attribute_late_claims)
        self.spared: set[int] = set()  # the processes of every killed tree
        self.started = time.monotonic()
        self.deadline = self.started + args.max_seconds
        self.chaos_seconds = 0.0
        self.drain_seconds = 0.0
        self.store: Any = None  # set by setup()

    def _environment(self) -> dict[str, str]:
        env = isolated_env(
            self.args.redis_url, self.prefix, pythonpath=str(ROOT), policy=str(POLICY)
        )
        env["RQ_KEY_PREFIX"] = f"{self.prefix}-rq"  # what taskrouter sets for this key prefix
        if self.args.lease_ttl:
            env["TASKROUTER_LEASE_TTL"] = self.args.lease_ttl
        if self.args.janitor_interval:
            env["TASKROUTER_JANITOR_INTERVAL"] = self.args.janitor_interval
        # This process enqueues with the same settings; RQ reads RQ_KEY_PREFIX at import.
        for k in [k for k in os.environ if k.startswith(("TASKROUTER_", "RQ_"))]:
            del os.environ[k]
        os.environ.update({k: v for k, v in env.items() if k.startswith(("TASKROUTER_", "RQ_"))})
        return env

    def setup(self) -> None:
        from benchmarks import fault_app
        from taskrouter import _runtime
        from taskrouter.backends.runtime import Runtime

        self.app = fault_app
        self.runtime = Runtime.from_env()
        _runtime.install(self.runtime)
        self.store = self.runtime.store
        self.store.ping()

    def warm_up(self) -> None:
        """One job per lane, outside the workload: every lane consumes when they end."""
        probes = [
            self.app.short_job.enqueue(f"{self.prefix}:probe:celery", 0.0),
            self.app.long_job.enqueue(f"{self.prefix}:probe:rq", 0.0),
            self.app.io_call.enqueue(f"{self.prefix}:probe:io", 0.0),
        ]
        for job in probes:
            job.wait(120)

    # -- chaos: submit and kill -------------------------------------------------------------

    def submit(self, spec: Spec) -> None:
        fn = {"celery": self.app.short_job, "rq": self.app.long_job, "io": self.app.io_call}
        self.submitted.append((spec, fn[spec.lane].enqueue(spec.counter, spec.seconds).id))

    def try_kill(self, kind: str) -> bool:
        """SIGKILL a process of ``kind`` if one runs a job now; False if none does."""
        table = process_table()
        pids = targets(kind, running_jobs(self.store), self.fleet, self.spared, table)
        if not pids:
            return False
        pid = self.rng.choice(pids)
        tree = sorted({pid} | descendants(pid, table))
        at = self.fleet.kill(pid)
        if at is None:
            return False  # it exited meanwhile: look again
        kill = Kill(kind, pid, at, tree)
        kill.jobs = hit_jobs(kill, running_jobs(self.store), self.spared)
        self.spared.update(tree)
        self.kills.append(kill)
        self.fleet.replace(pid)
        return True

    def chaos(self) -> None:
        """Submit on schedule; every --kill-every s draw a kind of kill, and make it as
        soon as a process of that kind runs a job (short Celery jobs are seldom running at
        one read), or give it up at the next draw."""
        t0 = time.monotonic()
        self.epoch = time.time()
        every = self.args.kill_every
        next_draw, wanted = t0 + every, None
        pending = iter(self.specs)
        spec = next(pending, None)
        while spec is not None and time.monotonic() < self.deadline:
            while spec is not None and spec.offset <= time.monotonic() - t0:
                self.submit(spec)
                spec = next(pending, None)
            if time.monotonic() >= next_draw:
                if wanted is not None:
                    self.skipped[f"no {wanted} running a job for {every:g} s"] += 1
                wanted, next_draw = self.rng.choice(KINDS), next_draw + every
            if wanted is not None and self.try_kill(wanted):
                wanted = None
            self.fleet.reap_orphans()
            time.sleep(0.02)
        self.chaos_seconds = time.monotonic() - t0

    # -- drain and collect ------------------------------------------------------------------

    def states(self) -> list[str | None]:
        pipe = self.store.client.pipeline(transaction=False)
        for _, job_id in self.submitted:
            pipe.hget(self.store.keys.job(job_id), "state")
        return list(pipe.execute())

    def drain(self) -> None:
        t0 = time.monotonic()
        until = min(t0 + self.args.drain_seconds, self.deadline)
        while time.monotonic() < until:
            if all(s in FINAL_STATES for s in self.states()):
                break
            self.fleet.reap_orphans()
            time.sleep(0.5)
        self.drain_seconds = time.monotonic() - t0

    def collect(self) -> list[Final]:
        pipe = self.store.client.pipeline(transaction=False)
        for _, job_id in self.submitted:
            pipe.hgetall(self.store.keys.job(job_id))
        records = pipe.execute()
        counters = [self.store.client.get(spec.counter) for spec, _ in self.submitted]
        return [
            final(spec, job_id, record, count)
            for (spec, job_id), record, count in zip(self.submitted, records, counters, strict=True)
        ]

    def engine_keys_naming(self, job_id: str) -> list[str]:
        """The engines' keys (kombu's, RQ's) that hold or name ``job_id``: where a stuck
        job's message is (a queue, kombu's unacked hash, an RQ registry), if anywhere."""
        import redis

        client: Any = redis.Redis.from_url(self.args.redis_url)  # bytes: values are binary
        needle, found = job_id.encode(), []
        for pattern in (f"{self.prefix}-celery*", f"{self.prefix}-rq*"):
            for key in client.scan_iter(match=pattern, count=1000):
                if needle in key or any(needle in v for v in engine_values(client, key)):
                    found.append(f"{key.decode()} ({client.type(key).decode()})")
        client.close()
        return found

    def dump(self, path: Path, jobs: list[Final]) -> None:
        """Every kill and every job's record, for a closer look (--keep-logs)."""
        data = {
            "epoch": self.epoch,
            "kills": [asdict(k) for k in self.kills],
            "jobs": [asdict(j) for j in jobs],
        }
        path.write_text(json.dumps(data, indent=1))

    def cleanup(self) -> int:
        client = self.store.client
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        return sum(client.delete(*keys[i : i + 500]) for i in range(0, len(keys), 500))


def engine_values(client: Any, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind == b"hash":
        return list(client.hvals(key))
    if kind == b"zset":
        return list(client.zrange(key, 0, -1))
    if kind == b"set":
        return list(client.smembers(key))
    return []


def final(spec: Spec, job_id: str, record: Mapping[str, str], count: str | None) -> Final:
    error = json.loads(record["error"]) if record.get("error") else {}
    return Final(
        spec=spec,
        job_id=job_id,
        state=record.get("state", "lost"),
        error_type=error.get("type", "") if record.get("state") == "failed" else "",
        attempts=int(record.get("attempts") or 0),
        history=json.loads(record["history"]) if record.get("history") else [],
        executions=int(count or 0),
        took=seconds_between(record.get("created_at"), record.get("finished_at")),
    )


def seconds_between(start_ms: str | None, end_ms: str | None) -> float | None:
    return (float(end_ms) - float(start_ms)) / 1000 if start_ms and end_ms else None


# -- the figures ----------------------------------------------------------------------------


def entry_of(job: Final, attempt: int) -> dict[str, Any] | None:
    return next((h for h in job.history if h.get("attempt") == attempt), None)


def worker_lost(entry: dict[str, Any] | None) -> bool:
    return bool(entry and (entry.get("error") or {}).get("type") == "WorkerLost")


def detection_delays(kills: list[Kill], jobs: Mapping[str, Final]) -> list[tuple[str, float]]:
    """(kind of kill, SIGKILL to reap) for each attempt that was running in a killed
    process and was reaped (an orphaned horse that finishes its job is, rightly, never
    reaped)."""
    delays = []
    for kill in kills:
        for job_id, attempt in kill.jobs.items():
            entry = entry_of(jobs[job_id], attempt)
            if entry is not None and worker_lost(entry):
                delays.append((kill.kind, entry["finished_at"] / 1000 - kill.at))
    return delays


def orphans_rerun(kills: list[Kill], jobs: Mapping[str, Final]) -> tuple[int, int]:
    """(attempts orphaned by an rq-worker or rq-pool kill, how many of them were reaped
    and re-run)."""
    orphaned = [
        (job_id, a) for k in kills if k.kind in ORPHANING_KINDS for job_id, a in k.jobs.items()
    ]
    rerun = sum(worker_lost(entry_of(jobs[job_id], a)) for job_id, a in orphaned)
    return len(orphaned), rerun


def distribution(jobs: list[Final]) -> str:
    if not jobs:
        return "none"
    counts = Counter(j.executions for j in jobs)
    spread = ", ".join(f"{n}x: {counts[n]}" for n in sorted(counts))
    return f"{spread}; max {max(counts)}"


def per_kind(kills: list[Kill]) -> str:
    counts = Counter(k.kind for k in kills)
    return ", ".join(f"{kind} {counts[kind]}" for kind in KINDS)


def header(run: FaultRun) -> list[str]:
    s, args = run.runtime.settings, run.args
    n = Counter(spec.lane for spec in run.specs)
    lease_note = "production default" if not args.lease_ttl else "set by --lease-ttl"
    jan_note = "production default" if not args.janitor_interval else "set by --janitor-interval"
    return [
        f"fault run: {args.jobs} jobs ({n['celery']} celery sleep 0-200 ms, "
        f"{n['rq']} rq sleep 0.5-3 s, {n['io']} io lane await 0.2-2 s), retries {{max: 2}}, "
        f"submitted over {args.submit_seconds:g} s; SIGKILL every {args.kill_every:g} s "
        f"meanwhile; seed {args.seed}",
        f"workers: {args.celery_workers} celery x concurrency {args.celery_concurrency}, "
        f"{args.rq_workers} rq pool x {args.rq_concurrency}, "
        f"{args.io_workers} io lane x {args.io_concurrency}; {os.cpu_count()} CPUs",
        f"lease TTL {s.lease_ttl:g} s ({lease_note}; renewed every {s.lease_ttl / 3:g} s), "
        f"janitor reap interval {s.janitor_interval:g} s ({jan_note}); "
        f"celery visibility timeout {run.runtime.derived.visibility_timeout} s",
        f"redis {args.redis_url}, key prefix {run.prefix}",
    ]


def history_text(job: Final, epoch: float) -> str:
    """Each attempt as "attempt worker start-end s [error]", times from the run's start."""
    parts = []
    for h in job.history:
        start = f"{h['started_at'] / 1000 - epoch:.1f}" if "started_at" in h else "?"
        end = f"{h['finished_at'] / 1000 - epoch:.1f}" if "finished_at" in h else "?"
        error = (h.get("error") or {}).get("type", "")
        worker = h.get("worker", "").split("@")[-1]
        parts.append(f"#{h.get('attempt')} {worker} {start}-{end}s {error}".rstrip())
    return "; ".join(parts) or "no attempt ended"


def anomalies(f: Figures, kills: list[Kill]) -> list[Final]:
    """Jobs the checks complain about: unfinished, run twice without a kill, orphans
    reaped, or run more often than their record has attempts."""
    by_id = {j.job_id: j for j in f.jobs}
    rerun = {
        job_id
        for k in kills
        if k.kind in ORPHANING_KINDS
        for job_id, a in k.jobs.items()
        if worker_lost(entry_of(by_id[job_id], a))
    }
    others = {j.job_id for j in f.others if j.executions > 1}
    return [
        j
        for j in f.jobs
        if j.state not in FINAL_STATES or j.job_id in others | rerun or j.executions > j.attempts
    ]


def anomaly_lines(run: FaultRun, f: Figures, limit: int = 12) -> list[str]:
    odd = anomalies(f, run.kills)
    if not odd:
        return []
    lines = [f"jobs the checks complain about ({len(odd)}; times in s from the first submission):"]
    for job in odd[:limit]:
        hits = [
            f"{k.kind} of {k.pid} at {k.at - run.epoch:.1f}s"
            for k in run.kills
            if job.job_id in k.jobs
        ]
        lines.append(
            f"  {job.job_id} {job.spec.lane} submitted {job.spec.offset:.1f}s: {job.state}, "
            f"attempts {job.attempts}, executions {job.executions}; "
            f"killed: {', '.join(hits) or 'never'}; history: {history_text(job, run.epoch)}"
        )
        if job.state not in FINAL_STATES:
            where = run.engine_keys_naming(job.job_id)
            lines.append(f"    its engine message: {', '.join(where) or 'in no engine key'}")
    return lines


@dataclass(slots=True)
class Figures:
    """What the report says, computed from the kills and the jobs at the end."""

    jobs: list[Final]
    hit: list[Final]  # jobs that were running in a process when it was killed
    others: list[Final]
    states: Counter[str]
    reasons: Counter[str]
    delays: list[tuple[str, float]]  # (kind of kill, seconds from SIGKILL to reap)
    orphaned: int
    rerun: int

    @classmethod
    def of(cls, kills: list[Kill], jobs: list[Final]) -> Figures:
        by_id = {j.job_id: j for j in jobs}
        hit_ids = {job_id for k in kills for job_id in k.jobs}
        orphaned, rerun = orphans_rerun(kills, by_id)
        return cls(
            jobs=jobs,
            hit=[j for j in jobs if j.job_id in hit_ids],
            others=[j for j in jobs if j.job_id not in hit_ids],
            states=Counter(j.state for j in jobs),
            reasons=Counter(j.error_type or "?" for j in jobs if j.state == "failed"),
            delays=detection_delays(kills, by_id),
            orphaned=orphaned,
            rerun=rerun,
        )

    @property
    def unfinished(self) -> dict[str, int]:
        return {s: n for s, n in self.states.items() if s not in FINAL_STATES}

    @property
    def stuck(self) -> int:
        return sum(self.states[s] for s in STUCK_STATES)

    def checks(self) -> dict[str, bool]:
        return {
            "stuck == 0": self.stuck == 0,
            "max executions of jobs not running in a killed process == 1": max(
                (j.executions for j in self.others), default=1
            )
            <= 1,
            "every job ended succeeded or failed (nothing lost)": not self.unfinished,
            "no orphaned RQ work-horse's job was reaped and run again": self.rerun == 0,
        }


def outcome_lines(f: Figures) -> list[str]:
    reasons = ", ".join(f"{r} {n}" for r, n in f.reasons.most_common()) or "-"
    unfinished = ", ".join(f"{s} {n}" for s, n in sorted(f.unfinished.items())) or "-"
    reaped = sum(worker_lost(h) for j in f.jobs for h in j.history)
    return [
        f"jobs submitted   {len(f.jobs)}",
        f"  succeeded      {f.states['succeeded']}",
        f"  failed         {f.states['failed']}  (by error type: {reasons})",
        f"  not finished   {sum(f.unfinished.values())}  ({unfinished})",
        f"attempts ended by a WorkerLost reap: {reaped}",
    ]


def execution_lines(f: Figures) -> list[str]:
    over = sum(j.executions > j.attempts for j in f.jobs)
    return [
        "executions per job (each task's own Redis counter):",
        f"  running in a killed process ({len(f.hit)} jobs): {distribution(f.hit)}",
        f"    attempts orphaned by an rq-worker or rq-pool kill: {f.orphaned}, "
        f"of which reaped and run again: {f.rerun}",
        f"  all others ({len(f.others)} jobs): {distribution(f.others)}",
        f"  jobs that ran more often than their record has attempts: {over}",
    ]


def delay_lines(f: Figures) -> list[str]:
    if not f.delays:
        return ["detection delay: no attempt was reaped"]
    every = [d for _, d in f.delays]
    by_kind = []
    for kind in KINDS:
        of = [d for k, d in f.delays if k == kind]
        if of:
            by_kind.append(
                f"{kind} {len(of)}: median {statistics.median(of):.1f} s, longest {max(of):.1f} s"
            )
    return [
        f"detection delay (SIGKILL to the WorkerLost reap, {len(every)} attempts): "
        f"median {statistics.median(every):.1f} s, longest {max(every):.1f} s "
        "(README target: 60 s with the default settings)",
        f"  by kind of kill: {'; '.join(by_kind)}",
    ]


def latency_line(jobs: list[Final]) -> str:
    """The slowest submit-to-end per engine: a message held by a dead worker shows here
    (kombu redelivers it only after the visibility timeout)."""
    parts = []
    for lane in LANES:
        took = sorted(j.took for j in jobs if j.spec.lane == lane and j.took is not None)
        if took:
            parts.append(f"{lane} median {statistics.median(took):.1f} s, longest {took[-1]:.1f} s")
    return "submission to end of finished jobs: " + ("; ".join(parts) or "none")


def report(run: FaultRun, jobs: list[Final]) -> tuple[list[str], bool]:
    f = Figures.of(run.kills, jobs)
    lines = [*header(run), ""]
    skipped = ", ".join(f"{why} {n}" for why, n in run.skipped.items())
    lines.append(f"kills: {len(run.kills)} ({per_kind(run.kills)})")
    if skipped:
        lines.append(f"  kills not made: {skipped}")
    lines.append(
        f"  jobs running in a killed process: {len(f.hit)} (of which {run.late} claimed "
        "by a process of a killed tree just after the kill, seen from their WorkerLost entry)"
    )
    lines += outcome_lines(f)
    lines += execution_lines(f)
    lines += delay_lines(f)
    lines.append(latency_line(jobs))
    lines.append(
        f"stuck (running or queued {run.args.drain_seconds:g} s after the last "
        f"submission): {f.stuck}"
    )
    lines += anomaly_lines(run, f)
    checks = f.checks()
    lines.append("checks:")
    lines += [f"  {'ok  ' if ok else 'FAIL'} {name}" for name, ok in checks.items()]
    return lines, all(checks.values())


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=500, help="jobs to submit (default 500)")
    p.add_argument("--submit-seconds", type=float, default=150, help="submit them over this long")
    p.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=120,
        help="after the last submission, wait this long for every job to end",
    )
    p.add_argument("--max-seconds", type=float, default=600, help="bound on the whole run")
    p.add_argument("--lease-ttl", default=None, help="TASKROUTER_LEASE_TTL (default: 15s)")
    p.add_argument(
        "--janitor-interval", default=None, help="TASKROUTER_JANITOR_INTERVAL (default: 5s)"
    )
    p.add_argument("--celery-workers", type=int, default=2)
    p.add_argument("--celery-concurrency", type=int, default=2)
    p.add_argument("--rq-workers", type=int, default=1, help="RQ pools")
    p.add_argument("--rq-concurrency", type=int, default=3, help="RQ workers per pool")
    p.add_argument("--io-workers", type=int, default=1, help="I/O lane processes")
    p.add_argument("--io-concurrency", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    p.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    return p.parse_args(argv)


@contextlib.contextmanager
def logdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="trfault-"))
        print(f"worker logs in {path}", file=sys.stderr)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="trfault-") as tmp:
            yield Path(tmp)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def execute(run: FaultRun) -> list[str]:
    """Start, warm up, submit and kill, drain; the report's lines (and PASS/FAIL)."""
    run.setup()
    run.fleet.start_all()
    run.warm_up()
    run.chaos()
    run.drain()
    jobs = run.collect()
    run.late = attribute_late_claims(run.kills, jobs)
    if run.args.keep_logs:
        run.dump(run.fleet.logdir / "records.json", jobs)
    lines, ok = report(run, jobs)
    wall = time.monotonic() - run.started
    lines.append(
        f"wall {wall:.0f} s (submitting and killing {run.chaos_seconds:.0f} s, "
        f"draining {run.drain_seconds:.0f} s)"
    )
    lines.append("PASS" if ok else "FAIL")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with logdir(args.keep_logs) as logs:
        run = FaultRun(args, logs)
        lines: list[str] = []
        try:
            lines = execute(run)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            run.fleet.stop()
            deleted = run.cleanup() if run.store is not None else 0
            if run.store is not None:
                run.runtime.close()
            print(f"(cleanup: workers stopped, {deleted} keys deleted)", file=sys.stderr)
    print("\n".join(lines))
    return 0 if lines and lines[-1] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
