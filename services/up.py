"""``taskrouter up``: the whole stack on one machine, until Ctrl-C.

Redis (the configured one, or an embedded server), a Celery worker and an RQ worker for
the policy's queues (each with its janitor), and the HTTP API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

import click

from .embedded import resolve_redis
from .processes import cli_env, spawn, stop


def run_up(
    app_module: str,
    *,
    host: str,
    port: int,
    concurrency: int,
    force_embedded: bool = False,
    allowed_hosts: Sequence[str] = (),
) -> int:
    url, server = resolve_redis(
        os.environ.get("TASKROUTER_REDIS_URL"), force_embedded=force_embedded
    )
    env = cli_env(url)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for engine in ("celery", "rq"):
            procs[engine] = spawn(
                [
                    "worker",
                    "--app",
                    app_module,
                    "--backend",
                    engine,
                    "--concurrency",
                    str(concurrency),
                ],
                env,
            )
        api = ["api", "--app", app_module, "--host", host, "--port", str(port)]
        api += [arg for name in allowed_hosts for arg in ("--allowed-host", name)]
        procs["api"] = spawn(api, env)
        click.echo(f"redis: {'embedded server at ' + url if server else url}")
        click.echo(f"api: http://{host}:{port}/docs   (Ctrl-C stops everything)")
        click.echo(f"dashboard: http://{host}:{port}/ui")
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    click.echo(f"{name} exited with {proc.returncode}; stopping", err=True)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for proc in procs.values():
            stop(proc, timeout=60)
        if server is not None:
            server.stop()
