"""Periodic tasks on a real Redis with real janitor and worker processes: any number of
janitors make one job per tick, an outage of every janitor makes one catch-up job, and
the jobs are ordinary jobs that the status CLI and API show."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from taskrouter.backends.store import JobStore
from taskrouter.services.processes import cli_command, isolated_env, stop
from tests.helpers import poll
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

APP = "tests.integration.periodic_app"
TASK = "tests.periodic.beat"
POLICY = """\
version: 1
profiles:
  periodic: {expected_latency: 1s, backend: rq, keep_results: 1h}
schedules:
  every-second:
    task: tests.periodic.beat
    every: 1s
    args: [tick]
    kwargs: {times: 2}
"""


class Processes:
    """``taskrouter`` child processes on one key prefix, stopped at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cli_command(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.procs[name] = proc
        return proc

    def janitor(self, name: str) -> subprocess.Popen[bytes]:
        """A janitor, once it runs the schedules."""
        proc = self.start(name, "janitor", "--app", APP)
        poll(lambda: self._running(name), 60, f"janitor {name} running the schedules")
        return proc

    def _running(self, name: str) -> bool:
        if self.procs[name].poll() is not None:
            pytest.fail(f"{name} exited with {self.procs[name].returncode}: {self.log(name)}")
        return "running schedules: every-second" in self.log(name)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self, name: str) -> None:
        stop(self.procs[name])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)


@pytest.fixture
def env(redis_url: str, key_prefix: str, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policies.yaml"
    policy.write_text(POLICY)
    return isolated_env(
        redis_url, key_prefix, pythonpath=str(ROOT), policy=str(policy), lease_ttl="2s"
    )


@pytest.fixture
def procs(env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    found = Processes(env, tmp_path)
    try:
        yield found
    finally:
        found.stop_all()


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[JobStore]:
    found = JobStore.from_url(redis_url, key_prefix)
    try:
        yield found
    finally:
        found.close()


def periodic_jobs(store: JobStore) -> list[dict[str, str]]:
    """Every record of the schedule's task, oldest first."""
    ids = store.client.zrange(store.keys.index_of("task", TASK), 0, -1)
    records = [store.read(job_id) for job_id in ids]
    return [r for r in records if r is not None]


def last_tick(store: JobStore) -> int:
    return int(store.client.hget(store.keys.periodic("every-second"), "last_tick") or 0)


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.timeout(180)
def test_three_janitors_make_one_job_per_tick(procs: Processes, store: JobStore) -> None:
    for name in ("janitor-1", "janitor-2", "janitor-3"):
        procs.janitor(name)
    start = now_ms() // 1000 * 1000  # ticks after this one, for ten seconds
    end = start + 10_000
    poll(lambda: last_tick(store) >= end, 30, "ten seconds of ticks")
    procs.stop_all()

    jobs = periodic_jobs(store)
    ticks = [int(r["tick"]) for r in jobs]
    assert len(ticks) == len(set(ticks)), sorted(ticks)  # never two jobs for one tick
    window = [t for t in ticks if start < t <= end]
    assert 9 <= len(window) <= 11, window
    assert all(t % 1000 == 0 for t in ticks)
    # Ordinary jobs, routed by the task's profile, with the schedule's arguments.
    for record in jobs:
        assert (record["profile"], record["backend"], record["queue"]) == (
            "periodic",
            "rq",
            "periodic",
        )
        assert record["schedule"] == "every-second"
        assert record["idempotency_key"] == f"schedule:every-second:{record['tick']}"
        assert json.loads(record["payload"]) == {"a": ["tick"], "k": {"times": 2}}
    # The schedule's state names the newest job.
    assert store.client.hget(store.keys.periodic("every-second"), "last_job") == jobs[-1]["id"]


@pytest.mark.timeout(180)
def test_an_outage_of_every_janitor_makes_one_catch_up_job(
    procs: Processes, store: JobStore
) -> None:
    procs.janitor("janitor-1")
    poll(lambda: len(periodic_jobs(store)) >= 2, 30, "two periodic jobs")
    procs.stop("janitor-1")
    down_after = last_tick(store)
    # Five ticks come and go with no janitor running.
    poll(lambda: now_ms() >= down_after + 5_500, 10, "five ticks of outage", interval=0.1)
    assert last_tick(store) == down_after

    procs.janitor("janitor-1b")
    poll(lambda: last_tick(store) >= down_after + 8_000, 30, "ticks after the restart")
    procs.stop("janitor-1b")

    jobs = {int(r["tick"]): r for r in periodic_jobs(store)}
    after = sorted(t for t in jobs if t > down_after)
    catch_up = after[0]
    # The ticks that passed with no janitor running made exactly one job: the latest.
    missed = range(down_after + 1_000, catch_up + 1_000, 1_000)
    assert len(missed) >= 5
    assert [t for t in missed if t in jobs] == [catch_up]
    assert jobs[catch_up]["catch_up"] == "1"
    # Then every tick has its job again, each on time.
    assert after[1:] == list(range(catch_up + 1_000, after[-1] + 1_000, 1_000))
    assert {jobs[t]["catch_up"] for t in after[1:]} == {"0"}


@pytest.mark.timeout(180)
def test_a_worker_runs_the_schedule_and_the_cli_and_api_show_it(
    procs: Processes, store: JobStore, env: dict[str, str]
) -> None:
    # Workers run the janitor's duties too: an RQ worker alone makes the jobs and runs them.
    procs.start("rq-worker", "worker", "--app", APP, "--backend", "rq")

    def succeeded() -> dict[str, str] | None:
        done = [r for r in periodic_jobs(store) if r["state"] == "succeeded"]
        return done[0] if done else None

    job = poll(succeeded, 60, "a periodic job that succeeded")
    procs.stop("rq-worker")
    from taskrouter import codec

    assert codec.loads(job["result"]) == "ticktick"

    done = subprocess.run(
        cli_command("schedules", "--json"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    state = store.client.hgetall(store.keys.periodic("every-second"))
    last_job = store.read(state["last_job"])
    assert last_job is not None
    expected_last = {
        "name": "every-second",
        "task": TASK,
        "when": "every 1s",
        "cron": None,
        "timezone": None,
        "every": 1.0,
        "jitter": 0.0,
        "missed": "run-once",
        "last_job": state["last_job"],
        "last_job_state": last_job["state"],
    }
    assert {k: row[k] for k in expected_last} == expected_last
    assert row["next_run"] > row["last_tick"]  # ISO 8601 UTC, all with milliseconds
    assert row["last_run"] >= row["last_tick"]  # made at its tick or just after

    table = subprocess.run(
        cli_command("schedules"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "TASK", "WHEN", "MISSED"]
    assert line.split()[:5] == ["every-second", TASK, "every", "1s", "run-once"]

    (api_row,) = api_schedules(env)["schedules"]
    assert {k: v for k, v in api_row.items() if k != "next_run"} == {
        k: v for k, v in row.items() if k != "next_run"
    }


def api_schedules(env: dict[str, str]) -> Any:
    from fastapi.testclient import TestClient

    import tests.integration.periodic_app  # noqa: F401 - its task, as `api --app` imports it
    from taskrouter.services.api.app import create_app
    from taskrouter.services.api.schemas import SchedulesOut
    from taskrouter.settings import Settings

    # This process reads no RQ key: its RQ prefix stays the session's (RQ reads it once).
    settings = replace(Settings.from_env(env), rq_key_prefix=None)
    with TestClient(create_app(settings, allowed_hosts=["testserver"])) as client:
        r = client.get("/schedules")
    assert r.status_code == 200, r.text
    SchedulesOut.model_validate(r.json())
    return r.json()


@pytest.mark.parametrize(
    "args",
    [
        ["janitor", "--app", APP, "--once"],
        ["worker", "--app", APP, "--backend", "rq"],
        ["api", "--app", APP, "--port", "0"],
    ],
    ids=lambda a: a[0],
)
def test_a_schedule_of_a_task_the_app_lacks_stops_the_process_at_start(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    policy = tmp_path / "misspelled.yaml"
    policy.write_text(POLICY.replace("task: tests.periodic.beat", "task: tests.periodic.baet"))
    done = subprocess.run(
        cli_command(*args, "--policy", str(policy)),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"{policy}:6: schedules.every-second.task: no registered task 'tests.periodic.baet': "
        "did you mean 'tests.periodic.beat'? register it with @task in the app (--app), "
        "or fix the name"
    ), done.stderr[-2000:]
