"""Values the codec cannot store as JSON text (an int over 4,300 digits, a str with a lone
surrogate): a result ends its job failed with PayloadError once, on real workers of both
engines, never rerun by the lease; an argument is refused at enqueue()."""

from __future__ import annotations

import uuid

import pytest

from taskrouter import JobFailed, PayloadError
from tests.integration import app

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["huge-int", "surrogate"])
@pytest.mark.parametrize(
    "engine, fn", [("celery", app.unstorable_celery), ("rq", app.unstorable_rq)]
)
def test_an_unstorable_result_fails_the_job_once_with_payload_error(stack, engine, fn, kind):
    counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
    job = fn.enqueue(kind, counter)
    assert job.backend == engine
    with pytest.raises(JobFailed):
        job.wait(30)
    assert job.state == "failed"
    assert job.error["type"] == "PayloadError", job.error
    assert "return value" in job.error["message"]
    # Its profile has retries left, yet it ran once: storing cannot succeed on a rerun.
    assert job.attempts == 1
    assert int(stack.runtime.store.client.get(counter) or 0) == 1
    assert [h["error"]["type"] for h in job.history] == ["PayloadError"]


@pytest.mark.parametrize(
    "value, named",
    [(10**5000, "argument 0"), ("name-\udcff.pdf", "argument 0")],
    ids=["huge-int", "surrogate"],
)
@pytest.mark.parametrize("fn", [app.echo, app.long_echo], ids=["celery", "rq"])
def test_an_unstorable_argument_is_refused_at_enqueue_and_writes_nothing(stack, fn, value, named):
    store = stack.runtime.store
    before = store.client.zcard(store.keys.index())
    with pytest.raises(PayloadError) as caught:
        fn.enqueue(value)
    assert str(caught.value).startswith(f"{named} cannot be stored as JSON text")
    assert store.client.zcard(store.keys.index()) == before
