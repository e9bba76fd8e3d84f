"""current_job() outside a worker, and the flow fields of a job record."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math

import pytest

from taskrouter import PayloadError, RetryAfter, codec, current_job, task
from taskrouter.errors import DamagedRecord, PolicyError
from taskrouter.flow import MAX_CHECKPOINT_CHARS, CurrentJob, retry_after_of, running
from taskrouter.job import Job
from taskrouter.policy import Budget, PerKey, RateLimit, RetryAfterPolicy
from taskrouter.policy_file import parse_policy
from taskrouter.registry import Task, limit_key_of


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


# -- RetryAfter from HTTP 429 -------------------------------------------------------------


def _http_error(library: str, status: int, headers: dict[str, str]) -> Exception:
    if library == "httpx":
        import httpx

        request = httpx.Request("GET", "https://api.example.com/v1/chat")
        response = httpx.Response(status, headers=headers, request=request)
        return httpx.HTTPStatusError("busy", request=request, response=response)
    import requests

    response = requests.Response()
    response.status_code, response.url = status, "https://api.example.com/v1/chat"
    response.headers.update(headers)
    return requests.HTTPError("busy", response=response)


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_an_http_429_with_retry_after_seconds_is_a_retry_after(library):
    later = retry_after_of(
        _http_error(library, 429, {"Retry-After": "7"}), http_429=True, default=1
    )
    assert later is not None and later.seconds == 7.0
    assert "api.example.com" in later.reason


def test_a_429_retry_after_date_and_a_missing_header():
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    later = retry_after_of(
        _http_error("httpx", 429, {"Retry-After": when}), http_429=True, default=1
    )
    assert later is not None and 25 < later.seconds <= 30
    bare = retry_after_of(_http_error("httpx", 429, {}), http_429=True, default=4)
    assert bare is not None and bare.seconds == 4
    junk = retry_after_of(
        _http_error("httpx", 429, {"Retry-After": "soon"}), http_429=True, default=4
    )
    assert junk is not None and junk.seconds == 4


def test_a_429_is_only_a_retry_after_when_the_profile_opts_in():
    assert retry_after_of(_http_error("httpx", 429, {}), http_429=False, default=1) is None
    assert retry_after_of(_http_error("httpx", 503, {}), http_429=True, default=1) is None


def test_a_429_that_caused_the_error_counts_and_retry_after_is_itself():
    try:
        try:
            raise _http_error("requests", 429, {"Retry-After": "3"})
        except Exception as exc:
            raise RuntimeError("the client gave up") from exc
    except RuntimeError as wrapped:
        later = retry_after_of(wrapped, http_429=True, default=1)
    assert later is not None and later.seconds == 3
    own = RetryAfter(2)
    assert retry_after_of(own, http_429=False, default=1) is own


# -- policy keys --------------------------------------------------------------------------


def _profile(extra: str) -> str:
    return f"version: 1\nprofiles:\n  llm:\n    expected_latency: 5s\n{extra}"


def test_retry_after_and_per_key_are_read_with_their_defaults():
    policy = parse_policy(
        _profile(
            "    retry_after: {pause: key, http_429: true}\n"
            "    per_key: {key: tenant, concurrency: 4, rate_limit: 60/m}\n"
        ),
        "p.yaml",
    )
    llm = policy.profiles["llm"]
    assert llm.retry_after == RetryAfterPolicy(pause="key", http_429=True, default=10.0, max=100)
    assert llm.per_key == PerKey("tenant", 4, RateLimit(60, 60.0))
    assert parse_policy(_profile(""), "p.yaml").profiles["llm"].per_key == PerKey()


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("    retry_after: {pause: keys}\n", "p.yaml:5: profiles.llm.retry_after.pause: "),
        ("    retry_after: {http_429: 1}\n", "retry_after.http_429: must be true or false"),
        ("    retry_after: {default: 2d}\n", "retry_after.default: 2d is longer than"),
        ("    retry_after: {max: 0}\n", "retry_after.max: must be a whole number >= 1"),
        ("    retry_after: {pasue: key}\n", "did you mean 'pause'?"),
        ("    per_key: {key: 1tenant}\n", "per_key.key: must name an argument"),
        ("    per_key: {concurency: 3}\n", "did you mean 'concurrency'?"),
        ("    per_key: {rate_limit: 0/m}\n", "per_key.rate_limit: "),
        ("    per_key: 4\n", "profiles.llm.per_key: must be a mapping"),
        ("    per_keys: {key: tenant}\n", "did you mean 'per_key'?"),
    ],
)
def test_bad_flow_keys_name_the_file_line_and_key(extra, expected):
    with pytest.raises(PolicyError) as caught:
        parse_policy(_profile(extra), "p.yaml")
    assert expected in str(caught.value), str(caught.value)


# -- limit keys ---------------------------------------------------------------------------


def _summarize(doc: str, tenant: str = "default", *, model: dict | None = None) -> None: ...


@pytest.mark.parametrize(
    "args, kwargs, argument, expected",
    [
        (("d", "t-7"), {}, "tenant", "t-7"),
        (("d",), {"tenant": "t-8"}, "tenant", "t-8"),
        (("d",), {}, "tenant", "default"),  # the default applies
        (("d",), {"model": {"name": "m"}}, "model", '{"name":"m"}'),
        (("d",), {}, "model", None),  # None: no key
        (("d",), {}, None, None),  # the profile names no argument
        ((), {}, "tenant", None),  # does not bind: the worker reports it
    ],
)
def test_the_limit_key_is_the_named_argument_as_text(args, kwargs, argument, expected):
    fn = Task(_summarize, name="t.unit_summarize", profile="llm")
    assert limit_key_of(fn, args, kwargs, argument) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"limit_key": ""},
        {"limit_key": 7},
        {"cost": 0},
        {"cost": True},
        {"cost": "5"},
        {"cost": 1.5},
    ],
)
def test_bad_limit_key_or_cost_is_refused_at_using(options):
    with pytest.raises(ValueError):
        inline.using(**options)


def test_budget_is_read_and_validated():
    llm = parse_policy(
        _profile("    budget: {limit: 50, per: 1d, per_key: 2.5, when_reached: refuse}\n"), "p.yaml"
    ).profiles["llm"]
    assert llm.budget == Budget(50.0, 86400.0, 2.5, "refuse")
    assert parse_policy(_profile(""), "p.yaml").profiles["llm"].budget is None


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("    budget: {limit: 5}\n", "profiles.llm.budget.per: is required"),
        ("    budget: {per: 1d}\n", "profiles.llm.budget.limit: is required"),
        ("    budget: {limit: -1, per: 1d}\n", "budget.limit: must be a positive amount"),
        ("    budget: {limit: 5, per: 0s}\n", "budget.per: must be longer than 0s"),
        ("    budget: {limit: 5, per: 1d, when_reached: refused}\n", "did you mean 'refuse'"),
        ("    budget: {limit: 5, per: 1d, cap: 3}\n", "unknown key 'cap'"),
    ],
)
def test_bad_budgets_name_the_file_line_and_key(extra, expected):
    with pytest.raises(PolicyError) as caught:
        parse_policy(_profile(extra), "p.yaml")
    assert expected in str(caught.value), str(caught.value)


def test_charges_add_up_and_must_be_amounts():
    port = Port()
    port.charges = []
    port.write_charge = lambda job_id, token, amount: port.charges.append(amount)
    with running(CurrentJob("j1", 1, "tok", port)):
        current_job().charge(0.013)
        current_job().charge(0)  # nothing to write
        current_job().charge(2)
        assert current_job().charged == pytest.approx(2.013)
    assert port.charges == [0.013, 2.0]
    for bad in (-1, math.nan, "1", True):
        with pytest.raises((TypeError, ValueError)):
            current_job().charge(bad)


def test_policy_explain_shows_the_flow_keys_only_where_set():
    from taskrouter.derive import derive
    from taskrouter.explain import render_explain

    policy = parse_policy(
        "version: 1\nprofiles:\n"
        "  llm:\n    expected_latency: 5s\n"
        "    per_key: {key: tenant, concurrency: 4, rate_limit: 60/m}\n"
        "    retry_after: {pause: key, http_429: true}\n"
        "    budget: {limit: 50, per: 1d, per_key: 5}\n"
        "  plain:\n    expected_latency: 5s\n",
        "p.yaml",
    )
    shown = render_explain(derive(policy), "llm")
    assert "key: argument 'tenant', 4 at once, 60/m starts" in shown
    assert "waits hold its limit key; at most 100 waits; HTTP 429 too" in shown
    assert "50 per 1d, 5 per key; then pause" in shown
    plain = render_explain(derive(policy), "plain")
    assert not any(w in plain for w in ("per_key", "retry_after", "budget"))


def test_per_key_weights_are_whole_numbers_per_key():
    llm = parse_policy(
        _profile("    per_key: {key: tenant, weights: {gold: 3, silver: 2}}\n"), "p.yaml"
    ).profiles["llm"]
    assert llm.per_key.weights == (("gold", 3), ("silver", 2))
    with pytest.raises(PolicyError, match=r"per_key\.weights\.gold: must be a whole number >= 1"):
        parse_policy(_profile("    per_key: {key: tenant, weights: {gold: 0}}\n"), "p.yaml")
    with pytest.raises(PolicyError, match=r"per_key\.weights: must be a mapping"):
        parse_policy(_profile("    per_key: {key: tenant, weights: [gold]}\n"), "p.yaml")
