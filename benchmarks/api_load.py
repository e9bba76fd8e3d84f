"""Load test of the job-status API: GET /jobs/{id} and POST /jobs over loopback.

Starts ``taskrouter api`` (uvicorn, one process) against a real Redis on a private key
prefix, pre-creates jobs, sends a fixed number of requests from ``--concurrency``
keep-alive connections, and prints requests/s and p50/p99 latency. No worker runs: the
POSTed jobs just queue. Everything it started is stopped and every key it wrote is
deleted at the end.

    .venv/bin/python benchmarks/api_load.py                      # 20,000 GETs, 5,000 POSTs
    .venv/bin/python benchmarks/api_load.py --gets 2000 --posts 500 --concurrency 16

The client is a minimal HTTP/1.1 keep-alive client on asyncio (``--client raw``): on a
small machine the load generator shares the CPU with the server, and httpx's per-request
cost would measure the client more than the server (``--client httpx`` to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from taskrouter import task  # noqa: E402
from taskrouter.backends.store import delete_prefix  # noqa: E402
from taskrouter.services.processes import cli_command, free_port, isolated_env  # noqa: E402

POLICY = """\
version: 1
routing: {long_after: 30s}
defaults: {timeout: 1m, keep_results: 1h}
profiles:
  bench: {expected_latency: 100ms}
  bench_long: {expected_latency: 60s}
"""


@task(profile="bench", name="bench.noop")
def noop(n: int) -> int:
    return n


@task(profile="bench_long", name="bench.noop_long")
def noop_long(n: int) -> int:
    return n


# -- the load --------------------------------------------------------------------------------

Request = tuple[str, str, bytes]  # method, path, body
Send = Callable[[Request], Awaitable[tuple[int, bytes]]]


class RawConnection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for this server."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: Request) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        method, path, body = request
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + self.auth + b"\r\n" + body)
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_load(
    make_request: Callable[[int], Request],
    total: int,
    concurrency: int,
    sender: Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]],
) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(total))

    async def worker() -> None:
        send, close = await sender()
        try:
            for i in counter:
                start = time.perf_counter()
                status, body = await send(make_request(i))
                latencies.append(time.perf_counter() - start)
                if status >= 300:
                    errors.append(f"{status} {body[:200]!r}")
        finally:
            await close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": total,
        "seconds": round(elapsed, 3),
        "rps": round(total / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def raw_sender(
    host: str, port: int, token: str | None
) -> Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Send, Callable[[], Awaitable[None]]]:
        conn = RawConnection(host, port, token)
        return conn.send, conn.close

    return make


def httpx_sender(
    base: str, token: str | None
) -> Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]:
    import httpx

    async def make() -> tuple[Send, Callable[[], Awaitable[None]]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(base_url=base, headers=headers)

        async def send(request: Request) -> tuple[int, bytes]:
            method, path, body = request
            r = await client.request(
                method, path, content=body or None, headers={"Content-Type": "application/json"}
            )
            return r.status_code, r.content

        return send, client.aclose

    return make


# -- setup and teardown ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to report the server's cost
    per request: unlike requests/s it does not depend on what else the machine runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, load: Callable[[], dict[str, float]]) -> dict[str, float]:
    before = cpu_seconds(pid)
    figures = load()
    after = cpu_seconds(pid)
    if before is not None and after is not None:
        per_request = (after - before) / figures["requests"]
        figures["server_cpu_us_per_req"] = round(per_request * 1e6, 1)
    return figures


def wait_http(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the API did not answer within {timeout} s")


def precreate(env: dict[str, str], count: int) -> list[str]:
    """Jobs to read, written by a runtime in a child process (RQ takes its key prefix at
    import, so the prefix must be in the environment before rq is imported)."""
    code = (
        "import json, sys\n"
        "from taskrouter.backends.runtime import Runtime\n"
        "from taskrouter.registry import CallOptions\n"
        "import benchmarks.api_load as b\n"
        "rt = Runtime.from_env()\n"
        f"ids = [rt.enqueue(b.noop, (i,), {{}}, CallOptions()).id for i in range({count})]\n"
        "rt.close()\n"
        "json.dump(ids, sys.stdout)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True
    )
    return list(json.loads(out.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKROUTER_REDIS_URL") or "redis://127.0.0.1:6379/11"
    )
    parser.add_argument("--gets", type=int, default=20_000)
    parser.add_argument("--posts", type=int, default=5_000)
    parser.add_argument("--jobs", type=int, default=1_000, help="pre-created jobs to read")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument(
        "--post-task", default="bench.noop", help="bench.noop (Celery) or bench.noop_long (RQ)"
    )
    parser.add_argument("--token", default=None, help="run the API with this bearer token")
    parser.add_argument("--keep", action="store_true", help="leave the keys (debugging)")
    args = parser.parse_args()

    prefix = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    host, port = "127.0.0.1", free_port()
    tmp = Path(tempfile.mkdtemp(prefix="taskrouter-bench-"))
    (tmp / "policy.yaml").write_text(POLICY)
    env = isolated_env(
        args.redis_url, prefix, pythonpath=str(ROOT), policy=str(tmp / "policy.yaml")
    )
    if args.token:
        env["TASKROUTER_API_TOKEN"] = args.token
    cmd = [
        *cli_command("api"),
        "--app",
        "benchmarks.api_load",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
    ]
    log = tmp / "api.log"
    with open(log, "wb") as out:  # a file, not a pipe nobody reads: the server never blocks
        server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(host, port, server, timeout=30)
        ids = precreate(env, args.jobs)
        if args.client == "raw":
            sender = raw_sender(host, port, args.token)
        else:
            sender = httpx_sender(f"http://{host}:{port}", args.token)

        def get(i: int) -> Request:
            return ("GET", f"/jobs/{ids[i % len(ids)]}", b"")

        post_body = json.dumps({"task": args.post_task, "args": [1]}).encode()

        def post(i: int) -> Request:
            return ("POST", "/jobs", post_body)

        gets = measured(
            server.pid, lambda: asyncio.run(run_load(get, args.gets, args.concurrency, sender))
        )
        posts = measured(
            server.pid, lambda: asyncio.run(run_load(post, args.posts, args.concurrency, sender))
        )
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
        deleted = 0 if args.keep else delete_prefix(args.redis_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"API: uvicorn, 1 process, {host}:{port}; client {args.client}, "
        f"concurrency {args.concurrency}; {os.cpu_count()} CPUs; prefix {prefix} "
        f"({deleted} keys deleted)"
    )
    print(f"GET  /jobs/{{id}} {json.dumps(gets)}")
    print(f"POST /jobs ({args.post_task}) {json.dumps(posts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
