"""A worker whose app crashes at start backs off and, after a bounded number of quick
failures, stops with the error, on both engines; ``taskrouter up`` stops with its
children's errors, restarting its API with the same backoff first."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from taskrouter.settings import QUICK_FAILURES
from tests.integration.conftest import ROOT, cli, worker_env

pytestmark = pytest.mark.integration


def _run(args: list[str], env: dict[str, str], timeout: float = 120):
    started = time.monotonic()
    done = subprocess.run(
        cli(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize("engine", ["celery", "rq"])
def test_a_worker_whose_app_crashes_at_start_gives_up_with_the_error(redis_url, key_prefix, engine):
    env = worker_env(redis_url, key_prefix, CRASH_MODE=engine)
    args = ["worker", "--app", "tests.integration.crash_app", "--backend", engine]
    done, took = _run(args, env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert f"{QUICK_FAILURES} times in a row" in output, output[-3000:]
    # It backed off between tries (0.5 + 1 + 2 + 5 s before the fifth), and gave up.
    assert took >= 8, took
    if engine == "celery":
        assert "crash_app broke the worker at start" in output
        assert output.count("starting it again in") == QUICK_FAILURES - 1
    else:
        assert output.count("exited with 3") >= QUICK_FAILURES


def _taken_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_up_restarts_its_api_with_a_backoff_then_stops_with_its_error(redis_url, key_prefix):
    env = worker_env(redis_url, key_prefix)
    with _taken_port() as taken:  # the API cannot bind: it exits at once, every time
        port = str(taken.getsockname()[1])
        done, took = _run(["up", "--app", "tests.integration.app", "--port", port], env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert output.count("the API exited with") == QUICK_FAILURES - 1, output[-3000:]
    assert f"the API exited {QUICK_FAILURES} times in a row" in output
    assert took >= 8, took


def test_up_stops_everything_with_the_error_of_a_worker_that_gave_up(redis_url, key_prefix):
    env = worker_env(redis_url, key_prefix, CRASH_MODE="rq")
    done, _ = _run(["up", "--app", "tests.integration.crash_app", "--port", "0"], env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "error: the rq worker exited with 1" in output, output[-3000:]
    assert f"rq workers exited {QUICK_FAILURES} times in a row" in output
