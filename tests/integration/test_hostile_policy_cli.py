"""Hostile policy files through the real command (``taskrouter policy check`` and
``taskrouter worker`` as processes), and the longest durations the policy accepts run on
real workers of both engines."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskrouter.policy_yaml import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from taskrouter.registry import CallOptions
from taskrouter.settings import MAX_KEEP_RESULTS, MAX_TIMEOUT
from tests.conftest import REDIS_DB, STACK_PREFIX, delete_prefix
from tests.integration import app
from tests.integration.conftest import APP, POLICY, ROOT, Stack, cli
from tests.unit.test_hostile_policy import alias_bomb, merge_bomb

pytestmark = pytest.mark.integration

# The command's own start (Python, click, PyYAML) takes about 0.3 s here; before the
# bounds these files took from 38 s to forever.
QUICK = 5.0

HOSTILE = {
    "merge-key bomb": merge_bomb(),
    "alias bomb": alias_bomb(),
    "100k levels of nesting": "version: 1\nprofiles: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "alias inside itself": "version: 1\nx: &x {<<: *x}\nprofiles: {p: {expected_latency: 1s}}\n",
    "too many values": "version: 1\nprofiles:\n"
    + "".join(f"  p{i}: {{expected_latency: 1s}}\n" for i in range(MAX_NODES)),
    "a timeout RQ cannot arm": "version: 1\nprofiles:\n  p: {expected_latency: 1s, "
    f"backend: rq, timeout: {MAX_TIMEOUT + 1}}}\n",
    "a keep_results Redis cannot hold": "version: 1\nprofiles:\n  p: {expected_latency: 1s, "
    "keep_results: 100000000000000000000}\n",
}
SAYS = {
    "merge-key bomb": f"more than {MAX_NODES} keys",
    "alias bomb": f"more than {MAX_NODES} keys",
    "100k levels of nesting": f"more than {MAX_DEPTH} levels",
    "alias inside itself": "contains it",
    "too many values": f"more than {MAX_NODES} keys",
    "a timeout RQ cannot arm": "profiles.p.timeout: 2147483648 is longer than RQ can enforce",
    "a keep_results Redis cannot hold": "is longer than Redis can keep a record",
}


def run(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        cli(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return done, time.monotonic() - started


def plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTER_", "RQ_"))}
    return {**env, **extra}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_policy_check_refuses_a_hostile_file_at_once_with_file_and_line(
    case: str, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE[case])
    done, took = run("policy", "check", "--policy", str(path), env=plain_env())
    assert done.returncode == 1, done.stdout[-500:]
    assert took < QUICK, took
    assert "Traceback" not in done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"{path}:") and first.split(":")[1].isdigit(), first
    assert SAYS[case] in done.stderr


def test_policy_check_refuses_a_10_mb_file_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as out:
        out.write((ROOT / "policies.yaml").read_bytes())
        out.write(b"#" + b"x" * 99 + b"\n" * 1)
        out.write((b"# " + b"y" * 97 + b"\n") * 100_000)
    assert path.stat().st_size > 10 * 1_000_000
    done, took = run("policy", "check", "--policy", str(path), env=plain_env())
    assert done.returncode == 1 and took < QUICK
    assert done.stderr.strip() == (
        f"{path}: the file is over 1024 KiB ({MAX_FILE_BYTES} bytes), taskrouter's limit for "
        "a policy: a policy of even a thousand profiles is far smaller; check that this is "
        "the policy file"
    )


def test_a_worker_started_on_a_bomb_exits_at_once_naming_it(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(merge_bomb())
    env = {**stack.env, "TASKROUTER_POLICY": str(path)}
    done, took = run("worker", "--app", APP, "--backend", "rq", env=env)
    # A worker imports both engines before it reads the policy: twice the command's bound.
    assert done.returncode == 1 and took < 2 * QUICK
    assert any(line.startswith(f"{path}:") for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr


# -- the longest durations, on real workers ---------------------------------------------------


@pytest.fixture(scope="module")
def longest(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Workers of both engines on the integration policy with every timeout and
    keep_results at the longest the policy check accepts (a Redis database of its own)."""
    from taskrouter.backends.runtime import Runtime
    from taskrouter.settings import Settings

    directory = tmp_path_factory.mktemp("longest")
    data = yaml.safe_load(POLICY.read_text())
    data["defaults"]["keep_results"] = MAX_KEEP_RESULTS
    for name in ("quick", "long"):
        data["profiles"][name]["timeout"] = MAX_TIMEOUT
    path = directory / "policy_longest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    url = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB + 2}"
    s = Stack(url, STACK_PREFIX, directory)
    s.env["TASKROUTER_POLICY"] = str(path)
    s.runtime = Runtime.from_env(Settings.from_env(s.env))
    try:
        s.start_worker("celery", concurrency=1, queues=["quick"])
        s.start_worker("rq", concurrency=1, queues=["long"])
        s.wait_ready()
        yield s
    finally:
        s.stop()
        s.runtime.close()
        delete_prefix(url, STACK_PREFIX)


@pytest.mark.parametrize(("fn", "engine"), [(app.echo, "celery"), (app.long_echo, "rq")])
def test_the_longest_timeout_and_keep_results_run_on_both_engines(
    longest: Stack, fn: Any, engine: str
) -> None:
    rt = longest.runtime
    ps = rt.derived.profiles[fn.profile]
    assert (ps.backend, ps.job_timeout, ps.keep_results) == (engine, MAX_TIMEOUT, MAX_KEEP_RESULTS)
    key = f"longest-{uuid.uuid4().hex}"
    job = rt.enqueue(fn, ({"n": 1},), {}, CallOptions(idempotency_key=key))
    assert job.wait(60) == {"n": 1}
    # The record and the idempotency key expire after keep_results, as Redis holds it.
    keep_ms = MAX_KEEP_RESULTS * 1000
    for redis_key in (rt.store.keys.job(job.id), rt.store.keys.idempotency(ps.profile, key)):
        assert keep_ms - 60_000 < rt.store.client.pttl(redis_key) <= keep_ms, redis_key
