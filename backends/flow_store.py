"""What a running attempt writes of itself into its job record (``taskrouter.flow``:
progress, checkpoints, spend) and the per-profile flow state read beside the records
(pauses, budget spend): part of the job store, in a module of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from taskrouter.errors import JobLost, PayloadError
from taskrouter.flow import MAX_CHECKPOINTS_CHARS, checkpoints_of, progress_of
from taskrouter.keys import Keys
from taskrouter.policy import Budget

from .errors import engine_errors


class FlowRecords:
    """``JobStore``'s flow methods; the store gives them its keys, clock, client and
    scripts."""

    keys: Keys
    clock: Callable[[], int]

    @property
    def client(self) -> Any:
        raise NotImplementedError

    def run(self, name: str, *args: Any) -> Any:
        raise NotImplementedError

    def write_progress(self, job_id: str, token: str, fraction: float, message: str) -> None:
        """The attempt holding ``token`` got ``fraction`` of the way; JobLost if it no
        longer owns the job."""
        r = self.run("flow_write", job_id, token, self.clock(), "progress", message, fraction, 0)
        self._written(job_id, r)

    def write_checkpoint(self, job_id: str, token: str, name: str, value: str) -> None:
        """Checkpoint ``name`` = ``value`` (codec JSON) of the attempt holding ``token``."""
        r = self.run(
            "flow_write",
            job_id,
            token,
            self.clock(),
            "checkpoint",
            name,
            value,
            MAX_CHECKPOINTS_CHARS,
        )
        self._written(job_id, r)

    def write_charge(self, job_id: str, token: str, amount: float) -> None:
        """The attempt holding ``token`` spent ``amount`` (its profile's budget unit)."""
        r = self.run("flow_write", job_id, token, self.clock(), "charge", "", repr(amount), 0)
        self._written(job_id, r)

    def spent(self, profile: str, budget: Budget, limit_key: str | None = None) -> float:
        """What ``profile`` (or one of its limit keys) charged in the current window."""
        return self.spent_many([(profile, budget, limit_key)])[0]

    def spent_many(self, wanted: Sequence[tuple[str, Budget, str | None]]) -> list[float]:
        """``spent`` of each (profile, budget, limit key or None), in one round trip."""
        if not wanted:
            return []
        now = self.clock()
        keys = []
        for profile, budget, limit_key in wanted:
            window = str(now // int(budget.per * 1000))
            keys.append(
                self.keys.spend(profile, window)
                if limit_key is None
                else self.keys.key_spend(profile, limit_key, window)
            )
        with engine_errors():
            return [float(v or 0) for v in self.client.mget(keys)]

    def pause(self, profile: str) -> None:
        """Hold every new start of ``profile`` until ``resume`` (its jobs wait scheduled)."""
        with engine_errors():
            self.client.hset(self.keys.limits(profile), "paused", "manual")

    def resume(self, profile: str) -> bool:
        """End a pause of ``profile`` (by hand or after a RetryAfter); False if none."""
        with engine_errors():
            return bool(self.client.hdel(self.keys.limits(profile), "paused"))

    def paused(self, profiles: Sequence[str]) -> dict[str, str | None]:
        """Each profile's pause: "manual", the ms it ends (a RetryAfter), or None."""
        now = self.clock()
        with engine_errors():
            pipe = self.client.pipeline(transaction=False)
            for profile in profiles:
                pipe.hget(self.keys.limits(profile), "paused")
            found = pipe.execute()
        return {
            p: v if v == "manual" or (v and v.isdigit() and int(v) > now) else None
            for p, v in zip(profiles, found, strict=True)
        }

    def running_progress(self, limit: int) -> list[tuple[str, float | None]]:
        """(profile, reported progress fraction or None) of up to ``limit`` running jobs,
        in two round trips: what ``/metrics`` shows of progress without a label per job."""
        with engine_errors():
            ids = self.client.zrange(self.keys.running, 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), "profile", "progress")
            rows = pipe.execute() if ids else []
        out: list[tuple[str, float | None]] = []
        for profile, text in rows:
            if not profile:
                continue  # the record ended (and expired) between the two reads
            try:
                found = progress_of(text)
            except ValueError:
                found = None
            out.append((profile, None if found is None else float(found["fraction"])))
        return out

    def read_checkpoints(self, job_id: str) -> dict[str, str]:
        """{name: codec JSON} of every checkpoint of the job so far."""
        with engine_errors():
            text = self.client.hget(self.keys.job(job_id), "checkpoints")
        return checkpoints_of(text)

    @staticmethod
    def _written(job_id: str, reply: Sequence[Any]) -> None:
        if reply[0] == "lost":
            raise JobLost(job_id, reply[1])
        if reply[0] == "full":
            raise PayloadError(
                f"job {job_id}: its checkpoints would take {reply[1]} characters of JSON; "
                f"the limit is {MAX_CHECKPOINTS_CHARS}"
            )
