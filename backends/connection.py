"""Redis clients that are safe across fork."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import redis

CLIENT_OPTIONS: dict[str, Any] = {
    # No CLIENT SETINFO on connect: two round trips fewer in every RQ work-horse, which
    # opens its connections anew for each job.
    "driver_info": None,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 30,
}


class PerProcess:
    """One Redis client per process, built on first use in each.

    A connection pool inherited through fork from a parent whose other threads held the
    pool's lock at that moment deadlocks the child on first use (seen with RQ's
    work-horse and Celery's pool children, forked while the janitor thread talked to
    Redis). A child therefore never touches its parent's pool.
    """

    def __init__(
        self,
        url: str,
        *,
        decode_responses: bool = False,
        setup: Callable[[redis.Redis], None] | None = None,
    ) -> None:
        self.url = url
        self.decode_responses = decode_responses
        self.setup = setup
        self._pid = -1
        self._client: redis.Redis | None = None

    def get(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            client = redis.Redis.from_url(
                self.url, decode_responses=self.decode_responses, **CLIENT_OPTIONS
            )
            if self.setup is not None:
                self.setup(client)  # before publishing: other threads see it ready or not at all
            self._client, self._pid = client, os.getpid()
        return self._client

    @property
    def fresh(self) -> bool:
        """True until this process has built its client."""
        return self._client is None or self._pid != os.getpid()

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
