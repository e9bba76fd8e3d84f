"""A killed ``taskrouter worker --backend rq`` takes its RQ workers with it, as a killed
Celery worker takes its pool children: each stops once the job its horse runs has ended
(that job runs once), and none keeps taking jobs, unsupervised and counted by no
heartbeat, beside the pool that replaces it."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.integration import app
from tests.integration.conftest import own_worker, poll

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(entry.path, "stat").read_bytes()
                if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rsplit(b")", 1)[1].split()[0] == b"Z"


def test_rq_workers_stop_with_their_killed_pool_after_their_job(stack, tmp_path):
    counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
    workers: list[int] = []
    try:
        with own_worker(stack, "rq", ["fault-rq"], concurrency=2) as pool:
            job = app.slow_once_rq.enqueue(str(tmp_path / "marker"), 3, counter)

            def running() -> dict[str, str] | None:
                record = stack.runtime.store.read(job.id)
                return record if record and record["state"] == "running" else None

            record = poll(running, 30, "the job to start")
            rq_worker = int(record["worker"].split(":")[-1].split("/")[0])
            workers = _children(pool.pid)
            assert rq_worker in workers and len(workers) == 2
            os.kill(pool.pid, signal.SIGKILL)
            pool.wait()
            # The horse finishes the job (its lease renewed all along), once.
            assert job.wait(30) == "done"
            poll(lambda: all(_gone(pid) for pid in workers), 30, "the pool's RQ workers to stop")
        assert job.attempts == 1
        assert int(stack.runtime.store.client.get(counter) or 0) == 1
        assert not any(h.get("error") for h in job.history)
    finally:
        for pid in workers:  # only if the test failed: never leave them consuming
            with contextlib.suppress(ProcessLookupError):
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)
