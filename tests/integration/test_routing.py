"""The foundation end to end: real Redis, real Celery and RQ worker processes."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import subprocess
import uuid
from decimal import Decimal

import pytest

from taskrouter import JobFailed, JobNotFound, PayloadError, get_job, task
from tests.conftest import CONTRACT_JOB_FIELDS
from tests.integration import app

pytestmark = pytest.mark.integration

FIELDS = set(CONTRACT_JOB_FIELDS)


@task(profile="quick", name="t.only_in_this_process")
def only_here() -> str:
    return "never runs on a worker"


def test_short_profile_runs_on_celery_and_long_on_rq(stack):
    short, long = app.echo.enqueue({"n": 1}), app.long_echo.enqueue({"n": 2})
    assert (short.backend, long.backend) == ("celery", "rq")
    assert short.wait(30) == {"n": 1}
    assert long.wait(30) == {"n": 2}
    for job, queue in ((short, "quick"), (long, "long")):
        seen = get_job(job.id).to_dict()
        assert set(seen) == FIELDS
        assert seen["state"] == "succeeded" and seen["attempts"] == 1
        assert seen["queue"] == queue and seen["error"] is None
        assert seen["created_at"] <= seen["started_at"] <= seen["finished_at"]
        assert seen["finished_at"].endswith("Z")


def test_values_round_trip_the_same_on_both_engines(stack):
    value = {
        "when": dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC),
        "day": dt.date(2026, 1, 2),
        "id": uuid.UUID(int=42),
        "price": Decimal("19.90"),
        "raw": b"\x00\xff",
        "pair": (1, (2, 3)),
        "ints": {1: "one"},
    }
    results = [app.echo.enqueue(value).wait(30), app.long_echo.enqueue(value).wait(30)]
    assert results == [value, value]
    assert isinstance(results[1]["pair"], tuple) and isinstance(results[1]["price"], Decimal)


@pytest.mark.parametrize("fn, backend", [(app.fail_quick, "celery"), (app.fail_long, "rq")])
def test_failing_task_is_retried_per_policy_then_fails(stack, fn, backend):
    job = fn.enqueue("always broken")
    assert job.backend == backend
    with pytest.raises(JobFailed) as failure:
        job.wait(30)
    assert (failure.value.type, failure.value.message) == ("ValueError", "always broken")
    assert job.state == "failed" and job.attempts == 3
    history = stack.runtime.store.read(job.id)["history"]
    assert history.count('"attempt"') == 3


@pytest.mark.parametrize("fn, backend", [(app.sleep_quick, "celery"), (app.sleep_long, "rq")])
def test_timeout_from_the_profile_stops_the_job(stack, fn, backend):
    job = fn.enqueue(10)
    assert job.backend == backend
    with pytest.raises(JobFailed) as failure:
        job.wait(30)
    assert failure.value.type == "Timeout"
    assert (job.finished_at - job.started_at) < 5000


def test_unencodable_argument_fails_at_enqueue_before_any_write(stack):
    index = stack.runtime.store.keys.index()
    before = stack.runtime.store.client.zcard(index)
    with pytest.raises(TypeError, match="argument 'blob'") as err:
        app.echo.enqueue(blob=object())
    assert isinstance(err.value, PayloadError)
    assert stack.runtime.store.client.zcard(index) == before


def test_task_unknown_to_the_worker_fails_with_a_clear_error(stack):
    job = only_here.enqueue()
    with pytest.raises(JobFailed) as failure:
        job.wait(30)
    assert failure.value.type == "TaskNotRegistered"
    assert "t.only_in_this_process" in failure.value.message
    assert job.attempts == 1


def test_unknown_job_id_is_not_found(stack):
    with pytest.raises(JobNotFound):
        get_job("0" * 28)


def test_plain_call_runs_inline(stack):
    assert app.echo("inline") == "inline"


def test_live_workers_are_counted_as_the_engines_own_tools_count_them(stack):
    """`taskrouter workers` and /readyz: the session's Celery worker is one worker (one
    node) with 2 pool processes, its RQ pool 2 workers (2 processes), each named with
    the real host and its own process."""
    from tests.integration.conftest import cli

    done = subprocess.run(
        cli("workers", "--json"), env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    live = {w["pid"]: w for w in json.loads(done.stdout)}
    celery = live[stack.procs["celery"].pid]
    rq = live[stack.procs["rq"].pid]
    host = socket.gethostname()
    assert (celery["engine"], celery["lane"], celery["host"]) == ("celery", "prefork", host)
    assert len(celery["processes"]) == 2  # its prefork children, not itself
    assert all(p["pid"] != celery["pid"] for p in celery["processes"])
    assert (rq["engine"], rq["lane"], len(rq["processes"])) == ("rq", "fork", 2)
    table = subprocess.run(
        cli("workers"), env=stack.env, capture_output=True, text=True, timeout=60
    ).stdout
    assert f"taskrouter-prefork-{celery['pid']}@{host}" == celery["node"]
    assert re.search(r"\n\d+ celery workers, \d+ rq workers$", table.rstrip()), table
    from taskrouter.services.api.health import readiness

    checks = {c["name"]: c for c in readiness(stack.runtime)}
    assert (
        f"celery worker {celery['node']} (prefork lane, 2 processes)"
        in (checks["celery workers"]["detail"])
    )
    assert f"2 rq workers in pool rq@{host}:{rq['pid']}" in checks["rq workers"]["detail"]
