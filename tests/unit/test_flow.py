"""current_job() outside a worker, and the flow fields of a job record."""

from __future__ import annotations

import json
import math

import pytest

from taskrouter import PayloadError, RetryAfter, codec, current_job, task
from taskrouter.errors import DamagedRecord
from taskrouter.flow import MAX_CHECKPOINT_CHARS, CurrentJob, running
from taskrouter.job import Job


@task(profile="quick", name="t.unit_flow_inline")
def inline(n: int) -> dict:
    job = current_job()
    job.checkpoint("n", n)
    job.progress(1.0, "done")
    return job.checkpoints


def test_an_inline_call_has_a_detached_job_of_its_own():
    assert inline(3) == {"n": 3}
    assert inline(4) == {"n": 4}  # nothing left over from the call before
    assert current_job().detached and current_job().checkpoints == {}


class Port:
    def __init__(self) -> None:
        self.writes: list[tuple] = []

    def write_progress(self, job_id, token, fraction, message):
        self.writes.append(("progress", job_id, token, fraction, message))

    def write_checkpoint(self, job_id, token, name, value):
        self.writes.append(("checkpoint", job_id, token, name, value))

    def read_checkpoints(self, job_id):
        return {"earlier": '{"step":1}'}


def test_a_running_job_writes_through_its_port_and_reads_earlier_checkpoints():
    port = Port()
    with running(CurrentJob("j1", 2, "tok", port)):
        job = current_job()
        assert job.checkpoints == {"earlier": {"step": 1}}
        job.checkpoint("later", (1, 2))
        job.progress(0.25, "x" * 1000)
        assert job.checkpoints == {"earlier": {"step": 1}, "later": (1, 2)}
    assert port.writes[0][:4] == ("checkpoint", "j1", "tok", "later")
    assert port.writes[1][:4] == ("progress", "j1", "tok", 0.25)
    assert len(port.writes[1][4]) == 500
    assert current_job().detached


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf])
def test_progress_outside_0_to_1_is_refused(bad):
    with pytest.raises(ValueError):
        current_job().progress(bad)


@pytest.mark.parametrize("bad", [True, "0.5", None])
def test_progress_that_is_not_a_number_is_refused(bad):
    with pytest.raises(TypeError):
        current_job().progress(bad)


def test_checkpoints_are_codec_values_of_bounded_size():
    job = current_job()
    with pytest.raises(PayloadError):
        job.checkpoint("obj", object())
    with pytest.raises(PayloadError):
        job.checkpoint("big", "x" * MAX_CHECKPOINT_CHARS)
    with pytest.raises(ValueError):
        job.checkpoint("", 1)


def test_job_flow_dict_shows_progress_and_plain_checkpoints():
    record = {
        "id": "j",
        "state": "running",
        "progress": json.dumps({"fraction": 0.4, "message": "page 3 of 10", "at": 0}),
        "checkpoints": json.dumps({"s": codec.dumps((1,))}),
    }
    job = Job.from_record(record)
    assert job.flow_dict()["progress"] == {
        "fraction": 0.4,
        "message": "page 3 of 10",
        "at": "1970-01-01T00:00:00.000Z",
    }
    assert job.flow_dict()["checkpoints"] == {"s": [1]}
    assert "progress" not in job.to_dict()


@pytest.mark.parametrize(
    "field, value", [("progress", "[1]"), ("checkpoints", "{"), ("checkpoints", '{"a": 1}')]
)
def test_garbled_flow_fields_are_damage(field, value):
    with pytest.raises(DamagedRecord):
        Job.from_record({"id": "j", "state": "running", field: value})


@pytest.mark.parametrize("bad", [-1, 86401, "5", math.nan])
def test_retry_after_seconds_are_bounded(bad):
    with pytest.raises(ValueError):
        RetryAfter(bad)
