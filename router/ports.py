"""What ``router/`` needs of the runtime: the one door from the pure package to the
engines (``backends.runtime.Runtime`` satisfies it; ``router._runtime.current()``
returns the process's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .job import Job
    from .registry import CallOptions, Task
    from .workflow import Node
    from .workflow_handle import Workflow


class RuntimePort(Protocol):
    def enqueue(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: CallOptions,
    ) -> Job: ...

    def get_job(self, job_id: str) -> Job: ...

    def enqueue_workflow(self, node: Node) -> Workflow: ...

    def get_workflow(self, workflow_id: str) -> Workflow: ...
