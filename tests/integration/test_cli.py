"""The ``taskrouter`` command, run as a real process (``python -m taskrouter``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from taskrouter import codec
from taskrouter.backends.store import JobStore, new_job_id, now_ms
from taskrouter.derive import derive
from taskrouter.job import Job
from taskrouter.policy_file import load_policy
from taskrouter.services.processes import cli_command
from tests.conftest import CONTRACT_JOB_FIELDS
from tests.helpers import poll

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPO_POLICY = ROOT / "policies.yaml"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def fresh_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no TASKROUTER_* (nor the tests' RQ_*) variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTER_", "RQ_"))}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        env=env if env is not None else fresh_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- policy check ------------------------------------------------------------------------


def test_policy_check_of_the_repo_policy_lists_every_profile_and_its_backend() -> None:
    done = run_cli("policy", "check")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["profile", "backend", "lane", "queue"]
    table = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        table[cells[0]] = (cells[1], cells[2])
    derived = derive(load_policy(REPO_POLICY))
    assert table == {name: (ps.backend, ps.lane) for name, ps in derived.profiles.items()}
    # The policy's intent, independently of derive(): long network calls in the I/O lane,
    # long file work on RQ, short calls on Celery's prefork pool.
    assert table["enrichment"] == ("celery", "io") and table["llm"] == ("celery", "io")
    assert table["media"] == ("rq", "fork")
    assert table["interactive"] == ("celery", "prefork") == table["default"]
    assert "Celery visibility timeout" in done.stdout


def test_policy_check_takes_the_policy_from_the_environment(tmp_path: Path) -> None:
    policy = tmp_path / "mine.yaml"
    policy.write_text("version: 1\nprofiles:\n  solo:\n    expected_latency: 5m\n")
    done = run_cli("policy", "check", env=fresh_env(TASKROUTER_POLICY=str(policy)))
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()[1:] if line.strip()]
    assert rows[0] == ["solo", "rq"]


BROKEN = {
    "unknown key": (
        """\
        version: 1
        profiles:
          a:
            expected_latency: 1s
            colour: red
        """,
        5,
        "profiles.a.colour",
        "unknown key 'colour'",
    ),
    "bad duration": (
        """\
        version: 1
        defaults:
          timeout: 5 minutes
        profiles:
          a:
            expected_latency: 1s
        """,
        3,
        "defaults.timeout",
        "'5 minutes' is not a duration",
    ),
    "timeout shorter than expected_latency": (
        """\
        version: 1
        profiles:
          slow:
            expected_latency: 2m
            timeout: 30s
        """,
        5,
        "profiles.slow.timeout",
        "shorter than expected_latency",
    ),
}


@pytest.mark.parametrize(("text", "line", "key", "fragment"), BROKEN.values(), ids=list(BROKEN))
def test_policy_check_of_a_broken_file_prints_file_line_key_message(
    tmp_path: Path, text: str, line: int, key: str, fragment: str
) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text(textwrap.dedent(text))
    done = run_cli("policy", "check", "--policy", str(policy))
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    problem_lines = done.stderr.splitlines()
    assert len(problem_lines) == 1, done.stderr
    match = re.fullmatch(rf"{re.escape(str(policy))}:(\d+): ([\w.]+): (.+)", problem_lines[0])
    assert match, problem_lines[0]
    assert (int(match[1]), match[2]) == (line, key)
    assert fragment in match[3]


def test_policy_check_of_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = run_cli("policy", "check", "--policy", str(missing))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{missing}: file not found")
    assert "Traceback" not in done.stderr


# -- policy explain ----------------------------------------------------------------------


def test_policy_explain_prints_the_backend_and_the_derived_settings() -> None:
    done = run_cli("policy", "explain", "enrichment")
    assert done.returncode == 0, done.stderr
    fields = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("  ")
        fields[key.strip()] = value.strip()
    assert fields["backend"].startswith("celery ")
    assert fields["lane"].startswith("io ")
    assert fields["queue"] == "enrichment"
    assert fields["expected_latency"] == "1m"
    assert fields["timeout"].startswith("10m")
    assert fields["job_timeout"].startswith("600s")
    assert fields["max_attempts"].startswith("4 (retries: 3, backoff 10s 1m 5m)")
    assert fields["concurrency"].startswith("8 at once")
    assert fields["rate_limit"].startswith("60/m")
    assert fields["keep_results"].startswith("1d")
    assert "routing.long_after 30s" in fields["reason"]
    assert fields["profile"].startswith("enrichment (") and "policies.yaml:" in fields["profile"]


def test_policy_explain_of_an_unknown_profile_lists_the_known_ones() -> None:
    done = run_cli("policy", "explain", "nope")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "'nope'" in done.stderr
    for name in load_policy(REPO_POLICY).profiles:
        assert name in done.stderr


# -- status ------------------------------------------------------------------------------


@pytest.fixture
def store_env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return fresh_env(TASKROUTER_REDIS_URL=redis_url, TASKROUTER_KEY_PREFIX=key_prefix)


def make_finished_job(store: JobStore, *, fail: bool = False) -> str:
    job_id = new_job_id()
    created = now_ms()
    fields: dict[str, Any] = {
        "id": job_id,
        "task": "app.tasks.enrich",
        "profile": "enrichment",
        "backend": "rq",
        "queue": "enrichment",
        "state": "queued",
        "attempts": 0,
        "max_attempts": 1,
        "dispatch": 1,
        "created_at": created,
        "queued_at": created,
        "payload": codec.encode_call(("doc-1",), {}),
        "keep_ms": 3_600_000,
    }
    store.create(store.create_args(job_id, fields, created_ms=created, unfinished_ttl_ms=3_600_000))
    token = uuid.uuid4().hex
    assert store.claim(job_id, 1, "w1", token, 60_000).status == "ok"
    if fail:
        value = json.dumps({"type": "ValueError", "message": "no such doc"})
        outcome = "failed"
    else:
        value = codec.dumps({"doc": "doc-1", "tags": ("a", "b"), "at": (created, None)})
        outcome = "succeeded"
    entry = {"attempt": 1, "worker": "w1", "started_at": created, "finished_at": now_ms()}
    assert store.finish(job_id, token, outcome, value, history=entry)[0] == "ok"
    return job_id


def test_status_of_an_unknown_id_is_not_found(store_env: dict[str, str]) -> None:
    done = run_cli("status", new_job_id(), env=store_env)
    assert done.returncode != 0
    assert "not found" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("status", "no-such-job", "--json", env=store_env)
    assert done.returncode != 0 and "not found" in done.stderr


@pytest.mark.parametrize("fail", [False, True], ids=["succeeded", "failed"])
def test_status_json_prints_the_contract_job_json(
    redis_url: str, key_prefix: str, store_env: dict[str, str], fail: bool
) -> None:
    store = JobStore.from_url(redis_url, key_prefix)
    try:
        job_id = make_finished_job(store, fail=fail)
        expected = Job.from_record(store.read(job_id)).to_dict()  # type: ignore[arg-type]
    finally:
        store.close()
    done = run_cli("status", job_id, "--json", env=store_env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert list(out) == CONTRACT_JOB_FIELDS
    assert out == expected
    assert out["id"] == job_id
    assert (out["task"], out["profile"], out["backend"], out["queue"]) == (
        "app.tasks.enrich",
        "enrichment",
        "rq",
        "enrichment",
    )
    assert out["attempts"] == 1
    assert out["workflow_id"] is None
    for key in ("created_at", "started_at", "finished_at"):
        assert ISO_MS.match(out[key]), (key, out[key])
    assert out["created_at"] <= out["started_at"] <= out["finished_at"]
    if fail:
        assert out["state"] == "failed"
        assert out["error"] == {"type": "ValueError", "message": "no such doc"}
        assert out["result"] is None
    else:
        assert out["state"] == "succeeded"
        assert out["error"] is None
        # Plain JSON: tuples are lists, no codec tags.
        assert out["result"]["tags"] == ["a", "b"]
        assert out["result"]["doc"] == "doc-1"
        assert codec.TAG not in done.stdout


def test_status_without_json_prints_one_field_per_line(
    redis_url: str, key_prefix: str, store_env: dict[str, str]
) -> None:
    store = JobStore.from_url(redis_url, key_prefix)
    try:
        job_id = make_finished_job(store)
    finally:
        store.close()
    done = run_cli("status", job_id, env=store_env)
    assert done.returncode == 0, done.stderr
    fields = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    assert list(fields) == CONTRACT_JOB_FIELDS
    assert fields["id"] == job_id
    assert fields["state"] == "succeeded"
    assert fields["backend"] == "rq"
    assert fields["error"] == "" and fields["workflow_id"] == ""
    assert json.loads(fields["result"])["tags"] == ["a", "b"]


# -- demo ----------------------------------------------------------------------------------


def valkey_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # A zombie has exited already: it holds no socket and no memory.
        if comm == "valkey-server" and stat.rsplit(")", 1)[1].split()[0] != "Z":
            pids.add(int(entry.name))
    return pids


def describe(pid: int) -> str:
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")
        ppid = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1]
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} (parent {ppid}): {cmdline}"


@pytest.mark.timeout(240)
def test_demo_embedded_runs_both_engines_and_stops_its_server() -> None:
    if sys.platform != "linux":
        pytest.skip("reads /proc")
    before = valkey_pids()
    done = run_cli("demo", "--embedded", "--jobs", "12", env=fresh_env(), timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    server = re.search(r"embedded server \(pid (\d+)\)", done.stdout)
    assert server, done.stdout
    server_pid = int(server[1])
    assert server_pid not in before
    assert "all 12 jobs finished" in done.stdout
    rows = {}
    for line in done.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in ("celery", "rq") and len(cells) == 10:
            rows[(cells[0], cells[1])] = cells[1:]
    assert set(rows) == {("celery", "prefork"), ("celery", "io"), ("rq", "fork")}, done.stdout
    assert sum(int(cells[1]) for cells in rows.values()) == 12
    for lane, cells in rows.items():
        jobs, succeeded, failed = int(cells[1]), int(cells[2]), int(cells[3])
        assert jobs > 0 and succeeded == jobs and failed == 0, (lane, cells)
    assert done.stdout.rstrip().endswith("embedded server stopped")
    # Nothing of the demo's own is left running: its server is gone at once...
    assert server_pid not in valkey_pids()
    # ...and no other server appeared and stayed (others' servers come and go: wait).
    stayed: set[int] = set()

    def none_stayed() -> bool:
        stayed.clear()
        stayed.update(valkey_pids() - before)
        return not stayed

    try:
        poll(none_stayed, 10, "servers the demo did not start to go", interval=0.1)
    except pytest.fail.Exception:
        raise AssertionError([describe(pid) for pid in stayed]) from None
