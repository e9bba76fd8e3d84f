"""The app of the periodic-task tests (test_schedules.py): one task, in the profile of
their own policy."""

from __future__ import annotations

from taskrouter import task


@task(profile="periodic", name="tests.periodic.beat")
def beat(word: str, *, times: int = 1) -> str:
    return word * times
