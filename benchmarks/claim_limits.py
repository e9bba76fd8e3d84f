"""The claim's cost with keyed limits against its cost with global limits only (issue 13).

    .venv/bin/python benchmarks/claim_limits.py [--jobs 4000] [--reps 5] [--baseline-rev main]

Claims (claim.lua, the script on every job's start path) of queued records, one after
another, on a private Redis server (the embedded one, on a unix socket: nothing else
runs on it, so its per-script counters are ours). Profiles:

- ``global``: a global ``concurrency`` and ``rate_limit`` (what a profile had before
  issue 13), never reached;
- ``keyed``: the same, plus ``per_key`` concurrency and rate over ``--keys`` (100) limit
  keys, each call with a ``cost``, never reached;
- ``baseline`` (with ``--baseline-rev REV``): the ``global`` profile claimed by the
  claim script of git revision REV (``git show REV:backends/lua/...``), i.e. the claim
  before this change.

Scenarios alternate in blocks of ``--block`` (250) claims, so that all see the same
machine; each claimed job is then finished (untimed), so that slots do not pile up. For
each: the median over ``--reps`` of the client's time per claim (a round trip included)
and of Redis's own time per script call (INFO commandstats, usec_per_call of EVALSHA).
The target: keyed at most 1.5x global (and 1.5x baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from taskrouter.backends.scripts import _USES  # noqa: E402
from taskrouter.backends.store import JobStore  # noqa: E402
from taskrouter.lua_keys import lua_key_table  # noqa: E402
from taskrouter.services.embedded import EmbeddedRedis  # noqa: E402

HUGE = 10**9


def _baseline_claim(rev: str) -> str:
    def show(name: str) -> str:
        path = f"backends/lua/{name}.lua"
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    text = show("common") + "\n" + show("claim")
    return lua_key_table(_USES.findall(text)) + "\n" + text


class Bench:
    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.args = args
        self.store = JobStore.from_url(url, f"trbench-claim-{uuid.uuid4().hex[:6]}")
        self.store.publish_limits(
            {"global": (HUGE, HUGE, 60.0), "keyed": (HUGE, HUGE, 60.0)},
            {"keyed": (HUGE, HUGE, 60.0)},
        )
        self.baseline = (
            self.store.client.register_script(_baseline_claim(args.baseline_rev))
            if args.baseline_rev
            else None
        )
        self.n = 0

    def _create(self, profile: str, keyed: bool) -> str:
        self.n += 1
        job_id = f"{int(time.time() * 1000):012x}{self.n:016x}"
        now = self.store.clock()
        fields: dict[str, Any] = {
            "id": job_id,
            "task": "bench.noop",
            "profile": profile,
            "backend": "celery",
            "queue": profile,
            "state": "queued",
            "attempts": 0,
            "max_attempts": 1,
            "dispatch": 1,
            "created_at": now,
            "queued_at": now,
            "payload": '{"a":[],"k":{}}',
            "keep_ms": 60_000,
            "limit_key": f"tenant-{self.n % self.args.keys}" if keyed else None,
            "cost": 1200 if keyed else None,
        }
        self.store.create(
            self.store.create_args(job_id, fields, created_ms=now, unfinished_ttl_ms=600_000)
        )
        return job_id

    def block(self, scenario: str) -> tuple[float, float]:
        """(client us per claim, Redis us per script call) of one block."""
        profile = "keyed" if scenario == "keyed" else "global"
        ids = [self._create(profile, scenario == "keyed") for _ in range(self.args.block)]
        took = 0.0
        for job_id in ids:
            token = uuid.uuid4().hex
            started = time.perf_counter()
            if self.baseline is not None and scenario == "baseline":
                reply = self.baseline(
                    args=[self.store.keys.prefix, job_id, 1, "w", self.store.clock(), 60_000, token]
                )
            else:
                reply = self.store.claim(job_id, 1, "w", token, 60_000)
                reply = [reply.status]
            took += time.perf_counter() - started
            assert reply[0] == "ok", reply
            self.store.finish(job_id, token, "succeeded", "null", history={"attempt": 1})
        # The finishes ran EVALSHA too: Redis's time per claim comes from a block of
        # claims alone.
        return took / len(ids) * 1e6, self._server_side(scenario, profile)

    def _server_side(self, scenario: str, profile: str) -> float:
        ids = [self._create(profile, scenario == "keyed") for _ in range(self.args.block)]
        tokens = [uuid.uuid4().hex for _ in ids]
        client = self.store.client
        client.config_resetstat()
        for job_id, token in zip(ids, tokens, strict=True):
            if self.baseline is not None and scenario == "baseline":
                self.baseline(
                    args=[self.store.keys.prefix, job_id, 1, "w", self.store.clock(), 60_000, token]
                )
            else:
                self.store.claim(job_id, 1, "w", token, 60_000)
        usec = float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
        for job_id, token in zip(ids, tokens, strict=True):
            self.store.finish(job_id, token, "succeeded", "null", history={"attempt": 1})
        return usec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=4000, help="claims per scenario and rep")
    p.add_argument("--block", type=int, default=250)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--keys", type=int, default=100, help="limit keys of the keyed profile")
    p.add_argument("--baseline-rev", default=None, help="git revision of the claim before")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    scenarios = ["global", "keyed"] + (["baseline"] if args.baseline_rev else [])
    with EmbeddedRedis() as server:
        bench = Bench(server.url, args)
        for scenario in scenarios:  # warm up: scripts loaded, keys created
            bench.block(scenario)
        client_us: dict[str, list[float]] = {s: [] for s in scenarios}
        server_us: dict[str, list[float]] = {s: [] for s in scenarios}
        for _ in range(args.reps):
            samples: dict[str, list[tuple[float, float]]] = {s: [] for s in scenarios}
            for _ in range(max(1, args.jobs // args.block)):
                for scenario in scenarios:
                    samples[scenario].append(bench.block(scenario))
            for s in scenarios:
                client_us[s].append(statistics.mean(c for c, _ in samples[s]))
                server_us[s].append(statistics.mean(r for _, r in samples[s]))
    result = {
        s: {
            "client_us": statistics.median(client_us[s]),
            "redis_us": statistics.median(server_us[s]),
        }
        for s in scenarios
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"claims of {args.jobs} jobs x {args.reps} reps, keyed over {args.keys} keys")
    print(f"{'scenario':10} {'client us/claim':>16} {'Redis us/claim':>15}")
    for s in scenarios:
        print(f"{s:10} {result[s]['client_us']:16.1f} {result[s]['redis_us']:15.1f}")
    for ref in [s for s in ("global", "baseline") if s in result]:
        c = result["keyed"]["client_us"] / result[ref]["client_us"]
        r = result["keyed"]["redis_us"] / result[ref]["redis_us"]
        print(f"keyed / {ref}: {c:.2f}x client, {r:.2f}x Redis (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
