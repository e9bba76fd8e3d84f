"""Small things users expect of the command: --version, --policy wherever the policy is
read, and a demo on a shared Redis that leaves no key behind."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
import redis

from tests.conftest import RUN_PREFIX
from tests.integration.test_cli import fresh_env, run_cli

pytestmark = pytest.mark.integration


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"taskrouter, version {version('taskrouter')}"


@pytest.mark.parametrize(
    "args",
    [
        ["api", "--app", "tests.integration.app"],
        ["up", "--app", "tests.integration.app", "--port", "0"],
        ["worker", "--app", "tests.integration.app", "--backend", "rq"],
        ["janitor", "--once"],
        ["status", "0" * 28],
        ["demo", "--jobs", "2"],
        ["policy", "check"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_that_reads_the_policy_takes_policy(tmp_path, redis_url, args):
    missing = tmp_path / "no-such-policy.yaml"
    env = fresh_env(TASKROUTER_REDIS_URL=redis_url)
    done = run_cli(*args, "--policy", str(missing), env=env, timeout=90)
    assert done.returncode != 0
    assert str(missing) in done.stdout + done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def _keys(url: str) -> set[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return {k for k in client.scan_iter(count=1000) if not k.startswith(RUN_PREFIX.encode())}
    finally:
        client.close()


@pytest.mark.timeout(240)
def test_the_demo_on_a_shared_redis_deletes_every_key_it_wrote(redis_url):
    before = _keys(redis_url)
    done = run_cli(
        "demo", "--jobs", "8", env=fresh_env(TASKROUTER_REDIS_URL=redis_url), timeout=180
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    deleted = re.search(r"deleted the demo's (\d+) keys \((taskrouter-demo-\w+):\*\)", done.stdout)
    assert deleted and int(deleted[1]) > 0, done.stdout
    left = _keys(redis_url) - before
    assert not left, sorted(left)[:20]
