"""One table from the exceptions of redis, kombu, Celery and RQ to taskrouter's own.

Every call into Redis or an engine runs inside ``engine_errors(component)``, which maps
what the library raised to the error tree of ``router/errors.py`` and raises it ``from``
the original, as httpx maps httpcore's exceptions. The first row that matches wins, so
the most specific classes come first.

A row names its exception by module and class, not by import: this module is imported
by every process, and a process that never imported kombu (an RQ worker, the janitor)
cannot meet a kombu exception, so its rows are skipped there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from taskrouter.errors import (
    BackendError,
    BackendUnavailable,
    DamagedRecord,
    StorageFull,
    TaskrouterError,
)

Mapper = Callable[[str, str], TaskrouterError]

# Replies of a server that is up but cannot serve now: a restart loading its data, a
# replica, a failover in progress. Clients should try again, as for a lost connection.
_TRANSIENT = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _response(component: str, detail: str) -> TaskrouterError:
    # A script that hit maxmemory reports OOM inside its own error text.
    if "OOM" in detail:
        return StorageFull(component, detail)
    if detail.startswith("WRONGTYPE"):  # a key of ours that holds something else
        return DamagedRecord(None, "a key holds another type than taskrouter writes")
    if detail.startswith(_TRANSIENT) or any(f" {t} " in detail for t in _TRANSIENT):
        return BackendUnavailable(component, detail)
    return BackendError(component, detail)


# (module, class name, mapper), most specific first.
ERROR_TABLE: tuple[tuple[str, str, Mapper], ...] = (
    ("redis.exceptions", "OutOfMemoryError", StorageFull),
    ("redis.exceptions", "BusyLoadingError", BackendUnavailable),
    ("redis.exceptions", "ReadOnlyError", BackendUnavailable),
    ("redis.exceptions", "MasterDownError", BackendUnavailable),
    ("redis.exceptions", "TryAgainError", BackendUnavailable),
    ("redis.exceptions", "ConnectionError", BackendUnavailable),
    ("redis.exceptions", "TimeoutError", BackendUnavailable),
    ("redis.exceptions", "ResponseError", _response),
    ("redis.exceptions", "RedisError", BackendError),
    ("kombu.exceptions", "OperationalError", BackendUnavailable),
    ("kombu.exceptions", "ConnectionError", BackendUnavailable),
    ("kombu.exceptions", "TimeoutError", BackendUnavailable),
    ("kombu.exceptions", "KombuError", BackendError),
    ("celery.exceptions", "TimeoutError", BackendUnavailable),
    ("rq.exceptions", "ConnectionError", BackendUnavailable),
    ("builtins", "ConnectionError", BackendUnavailable),
    ("builtins", "TimeoutError", BackendUnavailable),
    ("builtins", "OSError", BackendUnavailable),
)


def map_exception(exc: BaseException, component: str) -> TaskrouterError | None:
    """The taskrouter error for ``exc`` (None when no row matches)."""
    if isinstance(exc, TaskrouterError):
        return exc
    for module, name, mapper in ERROR_TABLE:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return mapper(component, str(exc) or type(exc).__name__)
    return None


@contextmanager
def engine_errors(component: str = "redis") -> Iterator[None]:
    """Map the exceptions of a Redis or engine call to taskrouter's, ``from`` the
    original; anything the table does not know is raised as it is."""
    try:
        yield
    except TaskrouterError:
        raise
    except Exception as exc:
        mapped = map_exception(exc, component)
        if mapped is None:
            raise
        raise mapped from exc
