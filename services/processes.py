"""Starting and stopping taskrouter's own processes (demo, up, tests), and a Redis server
of a test's or benchmark's own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO


def cli_command(*args: str) -> list[str]:
    """The command line of a ``taskrouter ARGS`` child process.

    ``-P``: the child's working directory (a user's project) is not put first on its
    import path, so a project's own ``services/`` or ``taskrouter.py`` cannot shadow the
    package; ``--app`` modules are imported from the working directory explicitly.
    """
    return [sys.executable, "-P", "-m", "taskrouter", *args]


def cli_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of child processes: this one, and the Redis to use."""
    env = dict(os.environ)
    env["TASKROUTER_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def isolated_env(
    redis_url: str, prefix: str, *, pythonpath: str | None = None, **settings: str
) -> dict[str, str]:
    """The environment of a private stack's children (tests, benchmarks): this one
    without any TASKROUTER_* or RQ_* variable, then the Redis, the key prefix and the
    given ``TASKROUTER_<NAME>`` settings (``policy="..."`` sets TASKROUTER_POLICY), and
    ``pythonpath`` first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTER_", "RQ_"))}
    env["TASKROUTER_REDIS_URL"] = redis_url
    env["TASKROUTER_KEY_PREFIX"] = prefix
    env.update({f"TASKROUTER_{name.upper()}": value for name, value in settings.items()})
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return env


def spawn(
    args: list[str], env: Mapping[str, str], log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """``taskrouter ARGS`` as a child process (stdout and stderr to ``log`` if given)."""
    return subprocess.Popen(
        cli_command(*args),
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (warm shutdown: running tasks finish), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """``stop`` for several at once: SIGTERM to all first, so that they shut down side by
    side, then wait for each, SIGKILL after ``timeout``."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the caller's own on a free loopback port, for tests and
    benchmarks that restart it, fill it or kill it; ``args`` are its options
    (persistence, maxmemory)."""

    def __init__(self, directory: str | Path, *args: str) -> None:
        from .embedded import find_server_binary

        self.binary = find_server_binary()
        self.dir = str(directory)
        self.args = list(args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        import redis

        where = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir]
        self.proc = subprocess.Popen(
            [self.binary, *where, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        message = f"redis-server on port {self.port} did not come up"
                        raise RuntimeError(message) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop it with ``sig`` (SIGTERM writes the AOF and exits; SIGKILL loses what
        was not written), SIGKILL after ``timeout``."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
