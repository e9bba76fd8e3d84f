"""``taskrouter up``: the whole stack on one machine, until Ctrl-C.

Redis (the configured one, or an embedded server), a Celery worker and an RQ worker for
the policy's queues (each with its janitor), and the HTTP API.

A worker supervises its own engine's processes (it restarts them with a growing delay
and gives up after a bounded number of quick failures), so a worker that exits has
given up: ``up`` then stops everything with its error. The API, which has no supervisor
of its own, is started again with the same growing delay; after ``QUICK_FAILURES`` exits
in a row, each within ``QUICK_FAILURE`` seconds of its start (a port in use, say), ``up``
stops everything with its error too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

import click

from taskrouter.settings import QUICK_FAILURE, QUICK_FAILURES, RESTART_BACKOFF

from .embedded import resolve_redis
from .processes import cli_env, spawn, stop


class _Child:
    """One child process of ``up`` and its restarts."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], restart: bool) -> None:
        self.name, self.args, self.env, self.restart = name, args, env, restart
        self.quick = 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.started = time.monotonic()
        return spawn(self.args, self.env)

    def check(self) -> str | None:
        """None while it runs (or was restarted); why ``up`` must stop, once it must."""
        code = self.proc.poll()
        if code is None:
            return None
        if not self.restart:
            return f"{self.name} exited with {code} (see its error above)"
        self.quick = self.quick + 1 if time.monotonic() - self.started < QUICK_FAILURE else 1
        if self.quick >= QUICK_FAILURES:
            return (
                f"{self.name} exited {self.quick} times in a row within {QUICK_FAILURE:g} s "
                f"of starting (last exit code {code}; see its error above)"
            )
        delay = RESTART_BACKOFF[min(self.quick, len(RESTART_BACKOFF)) - 1]
        click.echo(f"{self.name} exited with {code}; starting it again in {delay:g} s", err=True)
        time.sleep(delay)
        self.proc = self._start()
        return None


def eviction_warning(url: str) -> str | None:
    """The warning of a Redis that may evict job records (backends/memory.py); None
    when it cannot be read now (the workers then report Redis unreachable)."""
    import redis

    from taskrouter.backends import memory
    from taskrouter.errors import TaskrouterError

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return memory.check(client)
    except TaskrouterError:
        return None
    finally:
        client.close()


def run_up(
    app_module: str,
    *,
    host: str,
    port: int,
    concurrency: int,
    force_embedded: bool = False,
    allowed_hosts: Sequence[str] = (),
    policy_path: str | None = None,
) -> int:
    url, server = resolve_redis(
        os.environ.get("TASKROUTER_REDIS_URL"), force_embedded=force_embedded
    )
    env = cli_env(url, **({"TASKROUTER_POLICY": policy_path} if policy_path else {}))
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[_Child] = []
    try:
        for engine in ("celery", "rq"):
            args = ["worker", "--app", app_module, "--backend", engine]
            args += ["--concurrency", str(concurrency)]
            children.append(_Child(f"the {engine} worker", args, env, restart=False))
        api = ["api", "--app", app_module, "--host", host, "--port", str(port)]
        api += [arg for name in allowed_hosts for arg in ("--allowed-host", name)]
        children.append(_Child("the API", api, env, restart=True))
        click.echo(f"redis: {'embedded server at ' + url if server else url}")
        warning = eviction_warning(url)
        if warning:
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"api: http://{host}:{port}/docs   (Ctrl-C stops everything)")
        click.echo(f"dashboard: http://{host}:{port}/ui")
        while not stopping:
            for child in children:
                why = child.check()
                if why:
                    click.echo(f"error: {why}; stopping", err=True)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for child in children:
            stop(child.proc, timeout=60)
        if server is not None:
            server.stop()
