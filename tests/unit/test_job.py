"""router.job: the Job handle built from a record, its JSON, and wait()."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import pytest

from taskrouter import codec
from taskrouter.errors import JobFailed, JobNotFound, JobTimeout, TaskrouterError
from taskrouter.job import Job, iso
from taskrouter.states import FINISHED, STATES
from tests.conftest import CONTRACT_JOB_FIELDS

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

T0 = 1_795_496_400_123  # 2026-11-24T05:00:00.123Z, the contract's example (calendar.timegm)


def record(**fields: Any) -> dict[str, str]:
    """A record as Redis returns it: every value a string."""
    base: dict[str, Any] = {
        "id": "0190abcdef12aaaabbbbccccdddd",
        "task": "app.tasks.enrich",
        "profile": "enrichment",
        "backend": "rq",
        "queue": "enrichment",
        "state": "queued",
        "attempts": 0,
        "max_attempts": 4,
        "dispatch": 1,
        "created_at": T0,
        "queued_at": T0,
        "payload": codec.encode_call(("doc-1",), {}),
        "keep_ms": 86_400_000,
    }
    base.update(fields)
    return {k: str(v) for k, v in base.items() if v is not None}


# -- iso -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (T0, "2026-11-24T05:00:00.123Z"),
        (str(T0), "2026-11-24T05:00:00.123Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        ("1795496400000", "2026-11-24T05:00:00.000Z"),
        (1795496400999.9, "2026-11-24T05:00:00.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (None, None),
        ("", None),
    ],
)
def test_iso_is_utc_with_milliseconds_and_z(ms: Any, expected: str | None) -> None:
    assert iso(ms) == expected


def test_iso_agrees_with_the_datetime_it_names() -> None:
    text = iso(T0)
    assert text is not None and ISO_MS.match(text)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.timestamp() * 1000 == pytest.approx(T0, abs=0.5)


# -- from_record / to_dict -----------------------------------------------------------


def test_from_record_reads_every_field() -> None:
    rec = record(
        state="succeeded",
        attempts=2,
        started_at=T0 + 1000,
        finished_at=T0 + 2500,
        workflow_id="wf1",
        idempotency_key="doc-1",
        result=codec.dumps({"n": (1, 2)}),
    )
    job = Job.from_record(rec)
    assert (job.id, job.task, job.profile, job.backend, job.queue, job.state) == (
        rec["id"],
        "app.tasks.enrich",
        "enrichment",
        "rq",
        "enrichment",
        "succeeded",
    )
    assert (job.attempts, job.max_attempts) == (2, 4)
    assert (job.created_at, job.queued_at, job.started_at, job.finished_at) == (
        T0,
        T0,
        T0 + 1000,
        T0 + 2500,
    )
    assert job.workflow_id == "wf1"
    assert job.idempotency_key == "doc-1"
    assert job.result == {"n": (1, 2)}


def test_from_record_of_a_bare_record_has_defaults() -> None:
    job = Job.from_record({"id": "x", "state": "queued"})
    assert (job.task, job.state, job.attempts, job.max_attempts) == ("", "queued", 0, 1)
    assert job.created_at is job.started_at is job.finished_at is None
    assert job.workflow_id is None and job.idempotency_key is None
    assert job.result is None and job.error is None and job.history == []


def test_empty_strings_in_a_record_mean_unset() -> None:
    job = Job.from_record(
        record(workflow_id="", idempotency_key="", started_at="", result="", error="")
    )
    assert job.workflow_id is None and job.idempotency_key is None
    assert job.started_at is None and job.result is None and job.error is None


def test_to_dict_is_the_contract_job_json() -> None:
    rec = record(
        state="succeeded",
        attempts=1,
        started_at=T0 + 7,
        finished_at=T0 + 1_000_042,
        result=codec.dumps(
            {"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "pair": (1, 2), "raw": b"\x01"}
        ),
    )
    out = Job.from_record(rec).to_dict()
    assert list(out) == CONTRACT_JOB_FIELDS
    assert out["id"] == rec["id"]
    assert out["state"] == "succeeded" and out["attempts"] == 1
    assert out["created_at"] == "2026-11-24T05:00:00.123Z"
    assert out["started_at"] == "2026-11-24T05:00:00.130Z"
    assert out["finished_at"] == "2026-11-24T05:16:40.165Z"
    for key in ("created_at", "started_at", "finished_at"):
        assert ISO_MS.match(out[key]), out[key]
    # Plain JSON for people: no codec tags, tuples as lists, datetimes as strings.
    assert out["result"] == {"when": "2026-01-02T00:00:00+00:00", "pair": [1, 2], "raw": "AQ=="}
    assert out["error"] is None and out["workflow_id"] is None
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_to_dict_of_a_queued_job_has_nulls_for_what_has_not_happened() -> None:
    out = Job.from_record(record()).to_dict()
    assert out["started_at"] is None and out["finished_at"] is None
    assert out["result"] is None and out["error"] is None
    assert out["attempts"] == 0


def test_failed_job_has_error_type_and_message() -> None:
    err = {"type": "ValueError", "message": "bad doc"}
    job = Job.from_record(record(state="failed", error=json.dumps(err), finished_at=T0 + 5))
    assert job.error == err
    assert job.to_dict()["error"] == err
    assert job.result is None


def test_history_is_one_entry_per_finished_attempt() -> None:
    entries = [
        {"attempt": 1, "worker": "w1", "started_at": T0, "finished_at": T0 + 5, "error": {}},
        {"attempt": 2, "worker": "w2", "started_at": T0 + 9, "finished_at": T0 + 12},
    ]
    job = Job.from_record(record(history=json.dumps(entries)))
    assert job.history == entries
    job.history.append({"mutated": True})
    assert job.history == entries  # a fresh list each time


@pytest.mark.parametrize("state", STATES)
def test_finished_is_true_exactly_for_final_states(state: str) -> None:
    job = Job.from_record(record(state=state))
    assert job.finished is (state in {"succeeded", "failed", "canceled"})
    assert job.finished is (state in FINISHED)


def test_result_of_every_codec_type_is_decoded() -> None:
    value = (dt.date(2026, 1, 1), {1: {b"x"}}, dt.timedelta(seconds=3))
    assert Job.from_record(record(result=codec.dumps(value))).result == value


# -- a JobSource in memory ---------------------------------------------------------------


class FakeSource:
    """Serves records in turn: each read returns the next one, the last one forever."""

    def __init__(self, *records: Mapping[str, str] | None) -> None:
        self.records = list(records)
        self.reads = 0
        self.canceled: list[str] = []

    def read_record(self, job_id: str) -> Mapping[str, str] | None:
        self.reads += 1
        return self.records[min(self.reads, len(self.records)) - 1]

    def cancel_job(self, job_id: str) -> Mapping[str, str]:
        self.canceled.append(job_id)
        return record(id=job_id, state="canceled", finished_at=T0 + 1)


def handle(source: FakeSource) -> Job:
    return Job.from_record(record(), source)


def test_wait_returns_the_decoded_result() -> None:
    source = FakeSource(
        record(),
        record(state="running", attempts=1),
        record(state="succeeded", attempts=1, result=codec.dumps({"doc": ("a", 1)})),
    )
    job = handle(source)
    started = time.monotonic()
    assert job.wait(timeout=10) == {"doc": ("a", 1)}
    assert time.monotonic() - started < 2
    assert source.reads == 3
    assert job.state == "succeeded" and job.attempts == 1


def test_wait_of_a_succeeded_job_with_none_result_returns_none() -> None:
    source = FakeSource(record(state="succeeded", result=codec.dumps(None)))
    assert handle(source).wait(timeout=1) is None


def test_wait_raises_job_failed_with_the_remote_type_and_message() -> None:
    err = {"type": "KeyError", "message": "'doc-1'"}
    source = FakeSource(record(state="running"), record(state="failed", error=json.dumps(err)))
    job = handle(source)
    with pytest.raises(JobFailed) as caught:
        job.wait(timeout=10)
    failure = caught.value
    assert isinstance(failure, TaskrouterError)
    assert (failure.job_id, failure.state, failure.type, failure.message) == (
        job.id,
        "failed",
        "KeyError",
        "'doc-1'",
    )
    assert "KeyError" in str(failure) and job.id in str(failure)


def test_wait_on_a_canceled_job_raises_job_failed() -> None:
    with_error = json.dumps({"type": "Canceled", "message": "canceled while queued"})
    with pytest.raises(JobFailed) as caught:
        handle(FakeSource(record(state="canceled", error=with_error))).wait(timeout=1)
    assert (caught.value.state, caught.value.type) == ("canceled", "Canceled")
    assert caught.value.message == "canceled while queued"
    with pytest.raises(JobFailed) as bare:
        handle(FakeSource(record(state="canceled"))).wait(timeout=1)
    assert (bare.value.state, bare.value.type) == ("canceled", "Canceled")


@pytest.mark.parametrize("timeout", [0.0, 0.3])
def test_wait_gives_up_with_job_timeout_in_bounded_time(timeout: float) -> None:
    source = FakeSource(record(state="running"))
    job = handle(source)
    started = time.monotonic()
    with pytest.raises(JobTimeout) as caught:
        job.wait(timeout=timeout)
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, TimeoutError)
    assert timeout <= elapsed < timeout + 0.5
    assert job.id in str(caught.value) and "running" in str(caught.value)


def test_wait_polls_with_a_growing_interval_not_a_busy_loop() -> None:
    source = FakeSource(record(state="queued"))
    with pytest.raises(JobTimeout):
        handle(source).wait(timeout=1.0)
    # 2 ms doubling to 200 ms: about a dozen reads in a second, never hundreds.
    assert 3 <= source.reads <= 25


def test_wait_forever_still_returns_when_the_job_finishes() -> None:
    source = FakeSource(*[record(state="running")] * 5, record(state="succeeded", result="7"))
    assert handle(source).wait(timeout=None) == 7
    assert source.reads == 6


def test_wait_on_a_record_that_disappears_raises_job_not_found() -> None:
    with pytest.raises(JobNotFound):
        handle(FakeSource(record(state="running"), None)).wait(timeout=5)


def test_refresh_replaces_every_field() -> None:
    job = handle(FakeSource(record(state="running", attempts=3, started_at=T0 + 1)))
    assert job.refresh() is job
    assert (job.state, job.attempts, job.started_at) == ("running", 3, T0 + 1)


def test_cancel_goes_through_the_source_and_updates_the_handle() -> None:
    source = FakeSource(record())
    job = handle(source)
    assert job.cancel() is job
    assert source.canceled == [job.id]
    assert job.state == "canceled" and job.finished


def test_a_job_without_a_source_cannot_refresh() -> None:
    job = Job.from_record(record())
    with pytest.raises(RuntimeError, match="get_job"):
        job.refresh()
    with pytest.raises(RuntimeError):
        job.wait(timeout=0.1)


# -- damaged records -----------------------------------------------------------------------

DAMAGE = {
    "no id field": ({"id": None}, "no 'id' field"),
    "an empty id": ({"id": ""}, "no 'id' field"),
    "no state": ({"state": None}, "no 'state' field"),
    "an unknown state": ({"state": "exploded"}, "state 'exploded' is not a job state"),
    "attempts not a number": ({"attempts": "three"}, "field 'attempts' is 'three', not a number"),
    "a time not a number": ({"created_at": "noon"}, "field 'created_at' is 'noon', not a number"),
    "a time past year 9999": ({"finished_at": "1e20"}, ""),
    "an infinite time": ({"started_at": "inf"}, ""),
    "an error not json": ({"error": "{oops"}, ""),
    "an error not an object": ({"error": "[1]"}, "field 'error' is not a JSON object"),
    "a result not the codec's": ({"result": '{"__tr__":"pickle","v":"x"}'}, "unknown type tag"),
    "a result not json": ({"result": "{"}, "field 'result' does not decode"),
}


@pytest.mark.parametrize("change, says", list(DAMAGE.values()), ids=list(DAMAGE))
def test_a_damaged_record_raises_damaged_record_naming_what_is_wrong(
    change: dict[str, Any], says: str
) -> None:
    from taskrouter.errors import DamagedRecord

    fields = {k: v for k, v in {**record(), **change}.items() if v is not None}
    with pytest.raises(DamagedRecord) as caught:
        Job.from_record(fields, job_id="0190abcdef12aaaabbbbccccdddd")
    message = str(caught.value)
    assert message.startswith("the record of job '0190abcdef12aaaabbbbccccdddd' is damaged (")
    assert says in message
    assert isinstance(caught.value, TaskrouterError)


def test_a_record_read_by_another_id_is_damaged() -> None:
    from taskrouter.errors import DamagedRecord

    with pytest.raises(DamagedRecord, match="its 'id' field says '0190abcdef12aaaabbbbccccdddd'"):
        Job.from_record(record(), job_id="ffffffffffffffffffffffffffff")


def test_a_job_read_from_its_record_always_gives_its_json() -> None:
    job = Job.from_record(record(state="succeeded", result=codec.dumps((1, {2}))))
    assert job.to_dict()["result"] == [1, [2]]
    assert job.result == (1, {2})
