"""Starting and stopping taskrouter's own processes (demo, up, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
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
