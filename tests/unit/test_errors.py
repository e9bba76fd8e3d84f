"""backends/errors.py: the one table from library exceptions to taskrouter's."""

from __future__ import annotations

import pytest
import redis
from kombu.exceptions import OperationalError

from taskrouter.backends.errors import engine_errors, map_exception
from taskrouter.errors import (
    BackendError,
    BackendUnavailable,
    DamagedRecord,
    PayloadError,
    StorageFull,
    TaskrouterError,
)


@pytest.mark.parametrize(
    ("raised", "mapped"),
    [
        (redis.ConnectionError("refused"), BackendUnavailable),
        (redis.TimeoutError("slow"), BackendUnavailable),
        (redis.exceptions.BusyLoadingError("LOADING"), BackendUnavailable),
        (redis.exceptions.ReadOnlyError("READONLY replica"), BackendUnavailable),
        (redis.exceptions.OutOfMemoryError("OOM command not allowed"), StorageFull),
        # Inside a script, Redis reports OOM in the script's own error text.
        (
            redis.ResponseError("Error running script (call to f_x): OOM command not allowed"),
            StorageFull,
        ),
        (redis.ResponseError("WRONGTYPE Operation against a key"), DamagedRecord),
        (redis.ResponseError("ERR unknown command 'FOO'"), BackendError),
        (redis.RedisError("odd"), BackendError),
        (OperationalError("broker gone"), BackendUnavailable),
        (ConnectionResetError("reset"), BackendUnavailable),
    ],
)
def test_each_library_error_maps_to_one_of_ours(raised: Exception, mapped: type) -> None:
    with pytest.raises(mapped) as caught, engine_errors("redis"):
        raise raised
    assert type(caught.value) is mapped
    assert caught.value.__cause__ is raised  # raised from the original


def test_the_most_specific_row_wins() -> None:
    oom = redis.exceptions.OutOfMemoryError("OOM")
    assert isinstance(oom, redis.ResponseError)  # a ResponseError row would match too
    assert type(map_exception(oom, "redis")) is StorageFull


def test_storage_full_is_an_unavailable_backend_with_advice() -> None:
    err = map_exception(redis.exceptions.OutOfMemoryError("OOM"), "redis")
    assert isinstance(err, BackendUnavailable)
    assert "maxmemory" in str(err)


def test_our_own_errors_and_unknown_ones_pass_through() -> None:
    with pytest.raises(PayloadError), engine_errors():
        raise PayloadError("bad")
    with pytest.raises(KeyError), engine_errors():
        raise KeyError("a bug, not an engine error")
    assert map_exception(KeyError("x"), "redis") is None
    assert isinstance(map_exception(PayloadError("x"), "redis"), TaskrouterError)
