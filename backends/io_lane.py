"""The I/O lane: thousands of long calls that wait on the network, in one Celery worker
process.

It is Celery's own worker with Celery's own threads pool (``LanePool`` subclasses it):
Celery's consumer takes the messages, kombu acknowledges them, Flower and ``celery
inspect`` see the worker and its tasks. What this module adds:

- ``async def`` tasks run on one event loop per process (a thread of its own). The pool
  thread that received the message claims the job and hands the coroutine to the loop,
  then returns, so an ``async def`` call holds no thread while it waits. The message is
  acknowledged when the job starts (``acks_late`` off for the lane's tasks); from then on
  the job is kept safe by its lease, as on every lane: if the process dies, the lease
  lapses and the janitor retries or fails the job.
- Plain ``def`` tasks run in the pool's threads, one thread per call, as in Celery's
  threads pool.
- Backpressure: the pool counts the coroutines in flight against its concurrency, so a
  worker never takes more messages than it can start (Celery's ``worker_disable_prefetch``
  asks the pool for free slots on a Redis broker; a semaphore bounds it on any broker).
- Timeouts: an ``async def`` task is cancelled at its profile's ``timeout``; a ``def``
  task gets ``TimeoutError`` raised in its thread at ``timeout`` and, if it still runs at
  the hard limit, its job is recorded failed with error type Timeout and the thread is
  left to finish alone (Celery's threads pool itself ignores time limits).
- Cancel: a job canceled through taskrouter (or revoked through Celery) is cancelled on
  the loop, or interrupted in its thread, within a lease interval at most.
- A watchdog names the task that blocks the event loop (a ``time.sleep`` in an ``async
  def``) in the log. Leases are renewed by their own thread, in one batch per interval,
  so a blocked loop cannot make the other jobs' leases lapse.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery.concurrency.thread import TaskPool as ThreadsPool

from . import runner
from .base import native_id
from .hooks import LeaseHook, WorkerContext
from .store import Claim

log = logging.getLogger("taskrouter.io")

WATCH_INTERVAL = 0.25  # seconds between the watchdog's looks
BLOCKED_AFTER = 1.0  # seconds the loop may go without running a callback before it is named


@dataclass(slots=True)
class _Running:
    claim: Claim
    native: str
    timeout: float | None  # the profile's timeout (Celery's soft limit)
    hard: float | None  # then the job is recorded as timed out, whatever its thread does
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[Any] | None = None  # the coroutine's task (async def)
    thread: int | None = None  # the pool thread's ident (def)
    interrupted: bool = False
    abandoned: bool = False


class IOLane:
    """The event loop and the bookkeeping of one lane process."""

    def __init__(self, ctx: WorkerContext, capacity: int) -> None:
        self.ctx = ctx
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity)
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._async_in_flight = 0
        self.loop = asyncio.new_event_loop()
        # Records the ends of async jobs off the loop (claim and finish are blocking calls).
        self._records = ThreadPoolExecutor(max_workers=4, thread_name_prefix="taskrouter-io-rec")
        self._loop_seen = time.monotonic()
        self._blocked_logged = False
        self._stopping = threading.Event()
        lease = ctx.hook(LeaseHook)
        if lease is not None:
            lease.on_lost = self.cancel

    @property
    def async_in_flight(self) -> int:
        return self._async_in_flight

    def start(self) -> None:
        threading.Thread(target=self._run_loop, name="taskrouter-io-loop", daemon=True).start()
        threading.Thread(target=self._watch, name="taskrouter-io-watch", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # -- one delivery (in a pool thread) ----------------------------------------------------

    def deliver(self, job_id: str, dispatch: int, timeout: float | None, hard: float | None) -> Any:
        """Claim a delivery and run it: on the loop (``async def``, returns at once) or in
        this thread (``def``). ``timeout`` and ``hard``: the message's time limits."""
        self._slots.acquire()
        handed_off = False
        try:
            got = runner.claim(self.ctx, job_id, dispatch)
            if got.status != "ok":
                return f"not run: {got.status}"
            entry = _Running(got, native_id(job_id, dispatch), timeout, hard)
            if runner.is_async(got):
                self._start_async(entry)
                handed_off = True
                return "started on the event loop"
            return self._run_sync(entry)
        finally:
            if not handed_off:
                self._slots.release()

    def _start_async(self, entry: _Running) -> None:
        with self._lock:
            self._running[entry.claim.job_id] = entry
            self._async_in_flight += 1
        name = f"{entry.claim.task}[{entry.claim.job_id}]"

        def create() -> None:
            entry.task = self.loop.create_task(self._run_async(entry), name=name)

        self.loop.call_soon_threadsafe(create)

    async def _run_async(self, entry: _Running) -> None:
        try:
            done = await runner.attempt_async(entry.claim, entry.timeout)
            await self.loop.run_in_executor(self._records, self._finish, entry, done)
        except asyncio.CancelledError:
            # Canceled through taskrouter: the record says so already (the finish would
            # be dropped); release the lease and the slot.
            self._forget(entry)
        except Exception:
            log.exception("job %s: the lane could not record its end", entry.claim.job_id)
            self._forget(entry)
        finally:
            with self._lock:
                self._async_in_flight -= 1
            self._slots.release()

    def _run_sync(self, entry: _Running) -> Any:
        entry.thread = threading.get_ident()
        with self._lock:
            self._running[entry.claim.job_id] = entry
        try:
            done = runner.attempt(entry.claim)
        except BaseException as exc:  # an interrupt that landed outside the task's frames
            done = runner.failure(entry.claim, _as_error(exc), runner.now_ms())
        if entry.abandoned:
            return "abandoned at the hard time limit"
        state = self._finish(entry, done)
        return runner.shown(done) if state == "succeeded" else state

    def _finish(self, entry: _Running, done: runner.Attempt) -> str:
        try:
            return runner.finish(self.ctx, entry.claim, done)
        finally:
            with self._lock:
                self._running.pop(entry.claim.job_id, None)

    def _forget(self, entry: _Running) -> None:
        with self._lock:
            self._running.pop(entry.claim.job_id, None)
        lease = self.ctx.hook(LeaseHook)
        if lease is not None:
            lease.release(entry.claim.job_id)

    # -- cancel, timeouts, the watchdog ---------------------------------------------------

    def cancel(self, job_id: str) -> None:
        """Stop a job this process no longer owns (canceled, or reaped)."""
        with self._lock:
            entry = self._running.get(job_id)
        if entry is None:
            return
        if entry.task is not None:
            self.loop.call_soon_threadsafe(entry.task.cancel)
        elif entry.thread is not None and not entry.interrupted:
            entry.interrupted = True
            _raise_in_thread(entry.thread, _Canceled)

    def _watch(self) -> None:
        from celery.worker import state

        while not self._stopping.wait(WATCH_INTERVAL):
            self._watch_loop()
            now = time.monotonic()
            with self._lock:
                entries = list(self._running.values())
            for entry in entries:
                if entry.native in state.revoked:
                    self.cancel(entry.claim.job_id)
                elif entry.thread is not None and entry.timeout is not None:
                    self._time_sync(entry, now)

    def _watch_loop(self) -> None:
        """Name the task that keeps the event loop from running anything else."""
        now = time.monotonic()
        if now - self._loop_seen >= BLOCKED_AFTER:
            if not self._blocked_logged:
                current = asyncio.current_task(self.loop)
                what = current.get_name() if current is not None else "a callback"
                log.warning(
                    "the event loop is blocked by %s for %.1f s: an async def task must not "
                    "block (time.sleep, blocking I/O); await asyncio.sleep, or use a plain "
                    "def task or asyncio.to_thread for blocking code",
                    what,
                    now - self._loop_seen,
                )
                self._blocked_logged = True
        else:
            self._blocked_logged = False
        self.loop.call_soon_threadsafe(self._seen)

    def _seen(self) -> None:
        self._loop_seen = time.monotonic()

    def _time_sync(self, entry: _Running, now: float) -> None:
        assert entry.timeout is not None and entry.thread is not None
        ran = now - entry.started
        if ran >= entry.timeout and not entry.interrupted:
            entry.interrupted = True
            _raise_in_thread(entry.thread, TimeoutError)
        elif ran >= (entry.hard or entry.timeout) and not entry.abandoned:
            # Stuck where Python cannot interrupt it (a C call): end the job honestly
            # now, and leave the thread to finish alone (its end will be dropped).
            entry.abandoned = True
            log.error("job %s ignores its timeout; recorded as Timeout", entry.claim.job_id)
            err = TimeoutError(f"the job ran past its timeout of {entry.timeout:g} s")
            done = runner.failure(entry.claim, err, runner.now_ms())
            self._records.submit(self._finish, entry, done)


class _Canceled(Exception):
    """Raised in a ``def`` task's thread when its job was canceled."""


def _as_error(exc: BaseException) -> Exception:
    return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))


def _raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in another thread when it next runs Python code."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


class LanePool(ThreadsPool):
    """Celery's threads pool that counts the lane's coroutines in flight as busy slots."""

    lane: IOLane | None = None  # set by the worker before the pool starts

    @property
    def num_processes(self) -> int:
        lane = self.lane
        busy = lane.async_in_flight if lane is not None else 0
        return max(0, self.limit - busy)

    def on_start(self) -> None:
        if self.lane is not None:
            self.lane.start()
        super().on_start()

    def on_stop(self) -> None:
        if self.lane is not None:
            self.lane.stop()
        super().on_stop()
