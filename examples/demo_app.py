"""The demo workload: fast chatty tasks, slow LLM-like calls, heavy file work, and one
flaky task.

Run it with ``make demo`` (or ``taskrouter demo``); workers load it with
``taskrouter worker --app taskrouter.examples.demo_app --backend celery|rq`` and
``--lane io``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from taskrouter import task


@task(profile="interactive")
def add(a: int, b: int) -> int:
    """A fast task: Celery, prefetching allowed."""
    return a + b


@task(profile="default")
def render(doc_id: str, words: int = 2000) -> dict[str, object]:
    """A short CPU-bound task: Celery."""
    digest = hashlib.sha256()
    for i in range(words):
        digest.update(f"{doc_id}:{i}".encode())
    return {"doc": doc_id, "digest": digest.hexdigest()[:16]}


@task(profile="enrichment")
async def summarize(doc_id: str, seconds: float = 2.0) -> dict[str, object]:
    """A slow, LLM-like call that awaits the network: the I/O lane's event loop."""
    await asyncio.sleep(seconds)
    return {"doc": doc_id, "summary": f"summary of {doc_id}", "tokens": int(seconds * 100)}


@task(profile="llm")
def ask(prompt: str, seconds: float = 3.0) -> str:
    """A long call with a blocking client: a thread of the I/O lane."""
    time.sleep(seconds)
    return f"answer to {prompt!r}"


@task(profile="media")
def transcode(name: str, megabytes: int = 32) -> dict[str, object]:
    """Heavy, memory-hungry file work: RQ's fresh process per job gives the memory back."""
    data = bytearray(megabytes * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()[:16]
    return {"file": name, "megabytes": megabytes, "digest": digest}


@task(profile="flaky")
def flaky(marker: str) -> str:
    """Fails on its first attempt (no marker file yet), succeeds on the retry."""
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("first attempt failed\n")
        raise ConnectionError("upstream hiccup (first attempt fails on purpose)")
    return "ok on retry"


@task(profile="interactive")
def boom(message: str) -> None:
    """Always fails: for tests of failure handling."""
    raise ValueError(message)
