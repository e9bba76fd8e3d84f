"""router.states: the unified states and the table of every engine's native states."""

from __future__ import annotations

import celery.states
import pytest
from rq.job import JobStatus

from taskrouter import states
from taskrouter.states import FINISHED, NATIVE_STATES, STATES, WAITING, from_native

RQ_STATES = {member.value for member in JobStatus}
CELERY_STATES = set(celery.states.ALL_STATES)
# Real Celery states that ALL_STATES leaves out (a task's own choice, not a lifecycle step).
CELERY_EXTRA = {celery.states.REJECTED, celery.states.IGNORED}
# RQ 3.0 statuses that states.py does not list although it says it lists every one.


def test_the_unified_states_are_the_contracts() -> None:
    assert STATES == (
        "queued",
        "scheduled",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "canceled",
    )
    assert len(set(STATES)) == len(STATES)
    assert {"succeeded", "failed", "canceled"} == FINISHED
    assert {"queued", "scheduled", "retrying"} == WAITING
    assert FINISHED.isdisjoint(WAITING)
    assert set(STATES) == FINISHED | WAITING | {"running"}
    for name in STATES:
        assert getattr(states, name.upper()) == name


def test_every_unified_state_is_reached_by_some_native_state() -> None:
    reached = {unified for unified, _ in NATIVE_STATES.values()}
    assert reached == set(STATES)


@pytest.mark.parametrize("native", sorted(RQ_STATES))
def test_every_rq_job_status_is_mapped(native: str) -> None:
    assert ("rq", native) in NATIVE_STATES
    assert from_native("rq", native) in STATES


@pytest.mark.parametrize("native", sorted(CELERY_STATES | CELERY_EXTRA))
def test_every_celery_state_is_mapped(native: str) -> None:
    assert ("celery", native) in NATIVE_STATES
    assert from_native("celery", native) in STATES


def test_the_table_has_no_rows_the_engines_do_not_have() -> None:
    engines = {"rq": RQ_STATES, "celery": CELERY_STATES | CELERY_EXTRA}
    for engine, native in NATIVE_STATES:
        assert engine in engines
        assert native in engines[engine], (engine, native)


def test_the_table_maps_only_to_unified_states_with_a_reason_string() -> None:
    for key, (unified, why) in NATIVE_STATES.items():
        assert unified in STATES, key
        assert isinstance(why, str)


@pytest.mark.parametrize(
    ("engine", "native", "unified"),
    [
        ("celery", "PENDING", "queued"),
        ("celery", "STARTED", "running"),
        ("celery", "RETRY", "retrying"),
        ("celery", "SUCCESS", "succeeded"),
        ("celery", "FAILURE", "failed"),
        ("celery", "REVOKED", "canceled"),
        ("rq", "queued", "queued"),
        ("rq", "deferred", "scheduled"),
        ("rq", "scheduled", "scheduled"),
        ("rq", "started", "running"),
        ("rq", "finished", "succeeded"),
        ("rq", "failed", "failed"),
        ("rq", "stopped", "canceled"),
        ("rq", "canceled", "canceled"),
    ],
)
def test_native_states_map_as_a_user_of_the_engine_expects(
    engine: str, native: str, unified: str
) -> None:
    assert from_native(engine, native) == unified


def test_engine_final_states_map_to_final_states() -> None:
    for native in celery.states.READY_STATES:
        assert from_native("celery", native) in FINISHED, native
    for status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        assert from_native("rq", status.value) in FINISHED


@pytest.mark.parametrize(
    ("engine", "native"),
    [
        ("celery", "BOGUS"),
        ("celery", "success"),  # case matters: Celery's states are upper case
        ("rq", "FINISHED"),
        ("rq", "SUCCESS"),  # a Celery state under the wrong engine
        ("dramatiq", "queued"),
        ("rq", ""),
    ],
)
def test_from_native_of_an_unknown_state_raises(engine: str, native: str) -> None:
    with pytest.raises(ValueError) as caught:
        from_native(engine, native)
    assert engine in str(caught.value) and repr(native) in str(caught.value)
