"""The interface every engine adapter implements (a small Protocol, as RQ's serializers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from taskrouter.derive import ProfileSettings


def native_id(job_id: str, dispatch: int | str) -> str:
    """The engine's id for one dispatch of a job: the job id itself, then ``<id>-<n>``.

    One native id per dispatch, because Celery's result backend never overwrites a stored
    SUCCESS and RQ silently overwrites a job hash re-enqueued under the same id.
    """
    return job_id if str(dispatch) == "1" else f"{job_id}-{dispatch}"


def parse_native_id(nid: str) -> tuple[str, int]:
    """The (job id, dispatch) of an engine id made by ``native_id``."""
    job_id, _, n = nid.partition("-")
    return job_id, int(n) if n.isdigit() else 1


class Backend(Protocol):
    """One engine, as the router uses it."""

    name: str

    def send(
        self,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        *,
        create: Sequence[object] | None = None,
        redispatch: bool = False,
    ) -> None:
        """Put dispatch ``dispatch`` of a job on the engine's queue.

        ``create`` (store.create_args) writes the job record before or atomically with the
        enqueue; ``redispatch`` clears the job from the router's dispatching set with it.
        """
        ...

    def stop(self, job_id: str, dispatch: int, *, running: bool) -> None:
        """Make sure a canceled job does not run, and stop it if it is running."""
        ...

    def ping(self) -> None:
        """Raise BackendUnavailable when the engine's broker cannot be reached."""
        ...

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting per queue of this engine."""
        ...

    def workers_alive(self) -> int:
        """How many workers of this engine are online now."""
        ...

    def close(self) -> None: ...
