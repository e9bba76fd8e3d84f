"""The interface every engine adapter implements (a small Protocol, as RQ's serializers).

The runtime, the API, the workflows and the workers reach an engine only through it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from taskrouter import codec
from taskrouter.derive import ProfileSettings
from taskrouter.errors import PayloadError

if TYPE_CHECKING:
    from taskrouter.workflow import Node


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


_shown = reprlib.Repr()
_shown.maxstring, _shown.maxother, _shown.maxlevel = 80, 80, 3


_SHORT_TYPES = (int, float, bool, type(None))


def _short(value: Any) -> bool:
    kind = type(value)
    return kind in _SHORT_TYPES or (kind is str and len(value) <= 80)


@dataclass(frozen=True, slots=True)
class Call:
    """What an engine's own tools show for a job (Flower's name and args, rq-dashboard's
    function and description): the task's name and a bounded repr of its arguments. The
    message itself carries only the job id and dispatch."""

    task: str
    args: str = "()"
    kwargs: str = "{}"

    @classmethod
    def of(cls, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Call:
        # This runs on every enqueue: a call of a few short scalars (the common case) is
        # shown with repr, which costs a tenth of reprlib's bounded repr.
        if len(args) + len(kwargs) <= 8 and all(_short(v) for v in (*args, *kwargs.values())):
            return cls(task, repr(tuple(args)), repr(dict(kwargs)))
        return cls(task, _shown.repr(tuple(args)), _shown.repr(dict(kwargs)))

    @classmethod
    def of_payload(cls, task: str, payload: str) -> Call:
        try:
            args, kwargs = codec.decode_call(payload)
        except PayloadError:
            return cls(task, "(unreadable arguments)")
        return cls.of(task, args, kwargs)


class Backend(Protocol):
    """One engine, as the router uses it."""

    name: str

    def send(
        self,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        *,
        call: Call | None = None,
        create: Sequence[object] | None = None,
        redispatch: bool = False,
    ) -> None:
        """Put dispatch ``dispatch`` of a job on the engine's queue.

        ``call`` is what the engine's tools show (read from the record when not given).
        ``create`` (store.create_args) writes the job record before or atomically with the
        enqueue; ``redispatch`` clears the job from its engine's dispatching set with it.
        """
        ...

    def fast_message(
        self, job_id: str, dispatch: int, settings: ProfileSettings, call: Call
    ) -> tuple[str, str] | None:
        """(list key, message): one LPUSH on the job store's Redis that puts this dispatch
        on the engine's queue, for callers that write on a client of their own (the API's
        event loop); None where the engine must build the message itself."""
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

    def close(self) -> None: ...


class CanvasBackend(Backend, Protocol):
    """An engine that runs a whole workflow as one native canvas (Celery)."""

    def send_canvas(
        self, node: Node, ids: Sequence[str], settings: Sequence[ProfileSettings]
    ) -> None:
        """Send the workflow ``node``; its members in plan order have ``ids``."""
        ...
