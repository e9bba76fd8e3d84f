"""The process-wide runtime, built on first use so that importing taskrouter opens
nothing. It is router/'s only way to the engines (``ports.RuntimePort``)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskrouter.backends.runtime import Runtime

_lock = threading.Lock()
_current: Runtime | None = None


def current() -> Runtime:
    """The runtime of this process, configured from the environment on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                from taskrouter.backends.runtime import Runtime

                _current = Runtime.from_env()
    return _current


def install(runtime: Runtime | None) -> Runtime | None:
    """Replace the process runtime (workers, the API and tests build their own)."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    return previous
