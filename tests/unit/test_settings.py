"""router.settings: Settings.from_env, defaults and overrides."""

from __future__ import annotations

import pytest

from taskrouter import settings as settings_module
from taskrouter.settings import Settings


def test_defaults_with_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.celery_broker_url is None
    assert s.broker_url == s.redis_url
    assert s.policy_path == "./policies.yaml"
    assert s.api_token is None
    assert s.key_prefix == "taskrouter"
    assert s.rq_key_prefix is None
    assert s.celery_key_prefix is None
    assert s.lease_ttl == 15.0
    assert s.janitor_interval == 5.0
    assert s == Settings()


def test_every_variable_overrides_its_default() -> None:
    s = Settings.from_env(
        {
            "TASKROUTER_REDIS_URL": "redis://cache:6380/3",
            "TASKROUTER_CELERY_BROKER_URL": "amqp://guest:guest@rabbit:5672//",
            "TASKROUTER_POLICY": "/etc/taskrouter/policies.yaml",
            "TASKROUTER_API_TOKEN": "s3cret",
            "TASKROUTER_KEY_PREFIX": "acme.prod:v2",
            "TASKROUTER_LEASE_TTL": "30s",
            "TASKROUTER_JANITOR_INTERVAL": "250ms",
            "UNRELATED": "ignored",
        }
    )
    assert s.redis_url == "redis://cache:6380/3"
    assert s.celery_broker_url == "amqp://guest:guest@rabbit:5672//"
    assert s.broker_url == "amqp://guest:guest@rabbit:5672//"
    assert s.policy_path == "/etc/taskrouter/policies.yaml"
    assert s.api_token == "s3cret"
    assert s.key_prefix == "acme.prod:v2"
    assert s.rq_key_prefix == "acme.prod:v2-rq"
    assert s.celery_key_prefix == "acme.prod:v2-celery:"
    assert s.lease_ttl == 30.0
    assert s.janitor_interval == 0.25


def test_empty_values_mean_the_default() -> None:
    s = Settings.from_env(
        {
            "TASKROUTER_REDIS_URL": "",
            "TASKROUTER_CELERY_BROKER_URL": "",
            "TASKROUTER_POLICY": "",
            "TASKROUTER_API_TOKEN": "",
            "TASKROUTER_LEASE_TTL": "",
            "TASKROUTER_JANITOR_INTERVAL": "",
        }
    )
    assert s == Settings()


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKROUTER_REDIS_URL", "redis://elsewhere:1/2")
    monkeypatch.setenv("TASKROUTER_API_TOKEN", "tok")
    s = Settings.from_env()
    assert s.redis_url == "redis://elsewhere:1/2"
    assert s.api_token == "tok"


def test_engine_prefixes_follow_only_an_explicit_key_prefix() -> None:
    assert Settings.from_env({}).rq_key_prefix is None
    # The default value written out is still a choice to isolate the engines' keys.
    explicit = Settings.from_env({"TASKROUTER_KEY_PREFIX": "taskrouter"})
    assert explicit.key_prefix == "taskrouter"
    assert (explicit.rq_key_prefix, explicit.celery_key_prefix) == (
        "taskrouter-rq",
        "taskrouter-celery:",
    )


def test_an_empty_key_prefix_is_the_same_as_none() -> None:
    assert Settings.from_env({"TASKROUTER_KEY_PREFIX": ""}) == Settings.from_env({})


@pytest.mark.parametrize(
    "prefix", ["has space", "slash/es", "x" * 65, "ünï", "star*", "{hash}", "new\nline"]
)
def test_an_invalid_key_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="TASKROUTER_KEY_PREFIX"):
        Settings.from_env({"TASKROUTER_KEY_PREFIX": prefix})


def test_a_key_prefix_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="TASKROUTER_KEY_PREFIX"):
        Settings.from_env({"TASKROUTER_KEY_PREFIX": "pre\n"})


@pytest.mark.parametrize("prefix", ["a", "x" * 64, "A-b_c.d:e", "0"])
def test_valid_key_prefixes_are_accepted(prefix: str) -> None:
    assert Settings.from_env({"TASKROUTER_KEY_PREFIX": prefix}).key_prefix == prefix


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("2s", 2.0), ("1", 1.0), ("45", 45.0), ("1500ms", 1.5), ("2m", 120.0), ("1.5", 1.5)],
)
def test_lease_ttl_is_a_duration(raw: str, seconds: float) -> None:
    assert Settings.from_env({"TASKROUTER_LEASE_TTL": raw}).lease_ttl == seconds


@pytest.mark.parametrize("raw", ["999ms", "500ms", "0", "0.5", "0s"])
def test_lease_ttl_below_one_second_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"TASKROUTER_LEASE_TTL=.*at least 1s"):
        Settings.from_env({"TASKROUTER_LEASE_TTL": raw})


@pytest.mark.parametrize("raw", ["soon", "5 minutes", "-3s", "1x", "nan"])
def test_lease_ttl_that_is_not_a_duration_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"TASKROUTER_LEASE_TTL="):
        Settings.from_env({"TASKROUTER_LEASE_TTL": raw})


def test_janitor_interval_minimum_is_a_tenth_of_a_second() -> None:
    assert Settings.from_env({"TASKROUTER_JANITOR_INTERVAL": "100ms"}).janitor_interval == 0.1
    with pytest.raises(ValueError, match=r"TASKROUTER_JANITOR_INTERVAL=.*at least 0.1s"):
        Settings.from_env({"TASKROUTER_JANITOR_INTERVAL": "50ms"})


def test_with_redis_changes_only_the_url() -> None:
    s = Settings.from_env({"TASKROUTER_KEY_PREFIX": "p", "TASKROUTER_API_TOKEN": "t"})
    moved = s.with_redis("unix:///tmp/r.sock?db=0")
    assert moved.redis_url == "unix:///tmp/r.sock?db=0"
    assert moved.broker_url == "unix:///tmp/r.sock?db=0"
    assert (moved.key_prefix, moved.api_token, moved.rq_key_prefix) == ("p", "t", "p-rq")
    assert s.redis_url == "redis://127.0.0.1:6379/0"


def test_settings_are_immutable() -> None:
    with pytest.raises(AttributeError):
        Settings().redis_url = "redis://x"  # type: ignore[misc]


def test_documented_constants_are_consistent() -> None:
    assert settings_module.LEASE_TTL >= 1.0
    assert settings_module.JANITOR_INTERVAL < settings_module.LEASE_TTL
    assert settings_module.UNFINISHED_TTL >= 86400
