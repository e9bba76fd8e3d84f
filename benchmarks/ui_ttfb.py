"""Time to first byte of the dashboard's pages with many job records in Redis.

Writes 100,000 and then 1,000,000 job records into a private key prefix (the hash, the
index entries, the expiry entry and the counters that create.lua writes, each job
already in its final state: mostly succeeded, some failed, queued, running, scheduled and
canceled, created over the last 24 hours on two profiles of each engine), starts
``taskrouter api`` on that prefix, and measures the time to the first byte of the
response of ``/ui`` and ``/ui/jobs`` (and a few other pages) over sequential keep-alive
requests. No worker runs. Every key it wrote is deleted at the end.

    .venv/bin/python benchmarks/ui_ttfb.py                       # 100k and 1M records
    .venv/bin/python benchmarks/ui_ttfb.py --sizes 10000 --requests 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from taskrouter import task  # noqa: E402
from taskrouter.services.processes import cli_command, free_port, isolated_env  # noqa: E402

POLICY = """\
version: 1
routing: {long_after: 30s}
defaults: {timeout: 1m, keep_results: 1d}
profiles:
  web: {expected_latency: 100ms}
  mail: {expected_latency: 500ms, concurrency: 20}
  llm: {expected_latency: 60s, timeout: 10m}
  video: {expected_latency: 5m, timeout: 30m, rate_limit: 10/m}
"""
PROFILES = {  # profile: (engine, task)
    "web": ("celery", "bench.ui.render"),
    "mail": ("celery", "bench.ui.send"),
    "llm": ("rq", "bench.ui.summarize"),
    "video": ("rq", "bench.ui.transcode"),
}
STATES = [  # final state, share
    ("succeeded", 0.80),
    ("failed", 0.08),
    ("queued", 0.05),
    ("canceled", 0.03),
    ("running", 0.02),
    ("scheduled", 0.02),
]
PAGES = [
    "/ui",
    "/ui/jobs",
    "/ui/_/overview",
    "/ui/jobs?state=failed&profile=llm",
    "/ui/jobs?since=1h",
]
DAY_MS = 86_400_000
BATCH = 2000


@task(profile="web", name="bench.ui.render")
def render(n: int) -> int:
    return n


@task(profile="mail", name="bench.ui.send")
def send(n: int) -> int:
    return n


@task(profile="llm", name="bench.ui.summarize")
def summarize(n: int) -> int:
    return n


@task(profile="video", name="bench.ui.transcode")
def transcode(n: int) -> int:
    return n


def wait_http(base_url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the API did not answer within {timeout} s")


def delete_prefix(client: Any, prefix: str) -> int:
    deleted = 0
    batch: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) == 5000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def write_records(client: Any, prefix: str, count: int, now_ms: int, seed: int) -> float:
    """``count`` records as create.lua (and the finish scripts) would leave them."""
    rng = random.Random(seed)
    names, weights = zip(*STATES, strict=True)
    profiles = list(PROFILES)
    counters: Counter[str] = Counter()
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        created = now_ms - rng.randrange(DAY_MS)
        job_id = f"{created:012x}{rng.getrandbits(64):016x}"
        profile = profiles[i % len(profiles)]
        engine, task_name = PROFILES[profile]
        state = rng.choices(names, weights)[0]
        fields: dict[str, Any] = {
            "id": job_id,
            "task": task_name,
            "profile": profile,
            "backend": engine,
            "queue": profile,
            "state": state,
            "attempts": 0 if state in ("queued", "scheduled") else 1,
            "max_attempts": 1,
            "dispatch": 1,
            "created_at": created,
            "queued_at": created,
            "payload": json.dumps({"a": [i], "k": {}}),
            "keep_ms": DAY_MS,
        }
        if state not in ("queued", "scheduled"):
            fields["started_at"] = created + rng.randrange(5, 500)
        if state in ("succeeded", "failed", "canceled"):
            fields["finished_at"] = fields.get("started_at", created) + rng.randrange(1, 5000)
        if state == "succeeded":
            fields["result"] = str(i)
        if state == "failed":
            fields["error"] = json.dumps({"type": "ValueError", "message": f"bad input {i}"})
        key = f"{prefix}:job:{job_id}"
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, DAY_MS * 2)
        for index in (
            "all",
            f"state:{state}",
            f"profile:{profile}",
            f"backend:{engine}",
            f"task:{task_name}",
        ):
            pipe.zadd(f"{prefix}:idx:{index}", {job_id: created})
        pipe.zadd(
            f"{prefix}:expiry", {f"{job_id}|{profile}|{engine}|*|{task_name}": created + DAY_MS}
        )
        labels = f"{profile}|{engine}|{profile}|{task_name}"
        counters[f"submitted|{labels}"] += 1
        if state in ("succeeded", "failed", "canceled"):
            counters[f"{state}|{labels}"] += 1
        if (i + 1) % BATCH == 0:
            pipe.execute()
    for name, n in counters.items():
        pipe.hincrby(f"{prefix}:counters", name, n)
    pipe.execute()
    return time.perf_counter() - started


def ttfb(base_url: str, path: str, requests: int) -> dict[str, float]:
    """Milliseconds to the response's first byte (its status line and headers), and to
    its last, over ``requests`` sequential requests on one keep-alive connection."""
    import httpx

    first, whole = [], []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for i in range(requests + 5):
            t0 = time.perf_counter()
            with client.stream("GET", path) as response:
                t1 = time.perf_counter()
                response.read()
                t2 = time.perf_counter()
            if response.status_code != 200:
                raise SystemExit(f"GET {path}: {response.status_code} {response.text[:300]}")
            if i >= 5:  # the first few warm the server's caches (templates, scripts)
                first.append((t1 - t0) * 1000)
                whole.append((t2 - t0) * 1000)
    first.sort()
    return {
        "p50": round(statistics.median(first), 1),
        "p95": round(first[int(0.95 * (len(first) - 1))], 1),
        "max": round(first[-1], 1),
        "body_p50": round(statistics.median(whole), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKROUTER_REDIS_URL") or "redis://127.0.0.1:6379/11"
    )
    parser.add_argument("--sizes", default="100000,1000000", help="record counts, ascending")
    parser.add_argument("--requests", type=int, default=200, help="per page and size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import redis

    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    prefix = f"bench-ui-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="taskrouter-bench-"))
    (tmp / "policy.yaml").write_text(POLICY)
    env = isolated_env(
        args.redis_url, prefix, pythonpath=str(ROOT), policy=str(tmp / "policy.yaml")
    )
    host, port = "127.0.0.1", free_port()
    cmd = [
        *cli_command("api"),
        "--app",
        "benchmarks.ui_ttfb",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
    ]
    log = tmp / "api.log"
    results: list[tuple[int, float, dict[str, dict[str, float]]]] = []
    now = int(time.time() * 1000)
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://{host}:{port}", server, timeout=30)
        written = 0
        for size in sizes:
            took = write_records(client, prefix, size - written, now, seed=size)
            written = size
            figures = {path: ttfb(f"http://{host}:{port}", path, args.requests) for path in PAGES}
            results.append((size, took, figures))
    except BaseException:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        deleted = delete_prefix(client, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"taskrouter api: uvicorn, 1 process; {args.requests} sequential GETs per page and "
        f"size on one keep-alive connection; {os.cpu_count()} CPUs; prefix {prefix} "
        f"({deleted} keys deleted)"
    )
    print(
        f"{'records':>10}  {'page':<36} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'body p50':>9}"
    )
    for size, took, figures in results:
        for path, f in figures.items():
            cells = f"{f['p50']:>7} {f['p95']:>7} {f['max']:>7} {f['body_p50']:>9}"
            print(f"{size:>10,}  {path:<36} {cells}")
        print(f"{'':>10}  (records written in {took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
