"""Starting and stopping taskrouter's own processes (demo, up, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def cli_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of child processes: this one, the Redis to use, and the project
    on the import path (so ``--app`` modules of the checkout import)."""
    env = dict(os.environ)
    env["TASKROUTER_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def spawn(
    args: list[str], env: Mapping[str, str], log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """``taskrouter ARGS`` as a child process (stdout and stderr to ``log`` if given)."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
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
