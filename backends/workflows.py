"""Workflow hooks called by the worker side when a member job of a workflow ends."""

from __future__ import annotations

from .store import JobStore


def on_member_finished(
    store: JobStore, job_id: str, workflow_id: str, state: str, value: str
) -> None:
    """A member job of ``workflow_id`` ended in ``state`` (result or error JSON in value)."""
