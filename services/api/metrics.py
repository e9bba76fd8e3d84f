"""``/metrics``: Prometheus text, read from Redis at scrape time by a custom collector.

Every figure is shared state in Redis (the Lua scripts keep the counters and indexes), so
any number of API replicas report the same values and a restart loses nothing.

- ``taskrouter_jobs{profile,backend,queue,state}``: jobs by state now, per profile
  (the state indexes intersected with the profile indexes).
- ``taskrouter_jobs_{submitted,succeeded,failed,retried,waited,canceled}_total{profile,backend,
  queue,task}``: lifetime counters (``Keys.counters``).
- ``taskrouter_job_queue_wait_seconds`` and ``taskrouter_job_run_seconds``: gauge
  histograms over the newest ``RECENT`` succeeded and ``RECENT`` failed jobs, computed
  from their records at each scrape. They describe recent jobs, not every job since a
  start: ``histogram_quantile`` works on them, ``rate`` does not. Cumulative histograms
  need bucket counters kept at claim and finish time in the Lua scripts.
- ``taskrouter_route_switches_total{profile,backend,lane,queue}``: switches of adaptive
  routing (``routing.adaptive``), by the lane (engine, queue) a profile moved to.
- ``taskrouter_queue_depth{backend,queue}``: messages waiting in each engine queue.
- ``taskrouter_workers{backend,lane}``: live workers (heartbeats), counted as ``celery
  inspect`` counts Celery workers (one per node) and ``rq info`` counts RQ workers (one
  per process); ``taskrouter_worker_processes{backend,lane}``: their job processes.
- ``taskrouter_profile_paused{profile}``, ``taskrouter_profile_spend{profile}`` and
  ``taskrouter_profile_budget{profile}``: flow control (pauses, budget spend).
- ``taskrouter_up{component}``: 0 when the Celery broker could not be read (the scrape
  still shows the Redis figures). With Redis down the scrape answers 503.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from taskrouter.backends.heartbeats import WorkerRegistry, counted
from taskrouter.backends.queries import Figures, Labels, figures
from taskrouter.backends.runtime import Runtime
from taskrouter.errors import TaskrouterError
from taskrouter.policy import LANE_ENGINE, LANES
from taskrouter.settings import RECENT_FINISHED

from .deps import responses

log = logging.getLogger("taskrouter.api")
router = APIRouter(tags=["metrics"])

RECENT = RECENT_FINISHED
EVENTS = ("submitted", "succeeded", "failed", "retried", "waited", "canceled")
LABELS = ["profile", "backend", "queue", "task"]
SWITCHED = "switched_to_"  # the counters' event of route_switch.lua, then the lane
# Seconds. Queue waits of short jobs are milliseconds; long jobs wait and run for hours.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
PROGRESS_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
RUNNING_READ = 2000  # running records read per scrape for the progress histogram
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)


class RedisCollector(Collector):
    """Reads every figure from Redis (and the brokers) when Prometheus scrapes."""

    def __init__(self, runtime: Runtime, recent: int = RECENT) -> None:
        self.runtime = runtime
        self.recent = recent

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        fig = figures(rt.store, rt.derived.profiles, recent=self.recent)
        yield self._by_state(fig)
        yield from self._counters(fig)
        yield _histogram(
            "taskrouter_job_queue_wait_seconds",
            f"Seconds from queued to started, over the newest {self.recent} succeeded and "
            f"{self.recent} failed jobs",
            [(f.labels, f.queue_wait) for f in fig.finished],
            WAIT_BUCKETS,
        )
        yield _histogram(
            "taskrouter_job_run_seconds",
            f"Seconds from started to finished, over the newest {self.recent} succeeded and "
            f"{self.recent} failed jobs",
            [(f.labels, f.run_time) for f in fig.finished],
            RUN_BUCKETS,
        )
        yield from self._engines()
        yield from self._flow()

    def _flow(self) -> Iterator[Metric]:
        # Flow control (issue 13): pauses and budget spend per profile, one round trip
        # for the pauses and one for the spends.
        store, profiles = self.runtime.store, self.runtime.derived.profiles
        paused = GaugeMetricFamily(
            "taskrouter_profile_paused",
            "1 while a profile is paused (by hand, or after a RetryAfter with pause: profile)",
            labels=["profile"],
        )
        spend = GaugeMetricFamily(
            "taskrouter_profile_spend",
            "What a profile's jobs charged in its current budget window",
            labels=["profile"],
        )
        limit = GaugeMetricFamily(
            "taskrouter_profile_budget", "A profile's budget per window", labels=["profile"]
        )
        yield _progress(store.running_progress(RUNNING_READ))
        for name, until in store.paused(list(profiles)).items():
            paused.add_metric([name], 0 if until is None else 1)
        budgeted = [(name, ps.budget) for name, ps in profiles.items() if ps.budget is not None]
        spent = store.spent_many([(name, budget, None) for name, budget in budgeted])
        for (name, budget), amount in zip(budgeted, spent, strict=True):
            spend.add_metric([name], amount)
            limit.add_metric([name], budget.limit)
        yield paused
        yield spend
        yield limit

    def _by_state(self, fig: Figures) -> Metric:
        family = GaugeMetricFamily(
            "taskrouter_jobs",
            "Jobs by state now, per profile (backend and queue as the policy routes it)",
            labels=["profile", "backend", "queue", "state"],
        )
        profiles = self.runtime.derived.profiles
        for (profile, state), count in sorted(fig.by_state.items()):
            ps = profiles.get(profile)
            backend, queue = (ps.backend, ps.queue) if ps else ("", "")
            family.add_metric([profile, backend, queue, state], count)
        return family

    def _counters(self, fig: Figures) -> Iterator[Metric]:
        families = {
            event: CounterMetricFamily(
                f"taskrouter_jobs_{event}", f"Jobs {event} since the counters began", labels=LABELS
            )
            for event in EVENTS
        }
        switches = CounterMetricFamily(
            "taskrouter_route_switches",
            "Times adaptive routing moved a profile, by the lane it moved to",
            labels=["profile", "backend", "lane", "queue"],
        )
        for (event, labels), value in sorted(fig.counters.items(), key=lambda kv: kv[0][0]):
            if event in families:
                families[event].add_metric(_values(labels), value)
            elif event.startswith(SWITCHED):
                lane = event.removeprefix(SWITCHED)
                switches.add_metric([labels.profile, labels.backend, lane, labels.queue], value)
        yield from families.values()
        yield switches

    def _engines(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "taskrouter_queue_depth",
            "Messages waiting in each engine queue",
            labels=["backend", "queue"],
        )
        up = GaugeMetricFamily(
            "taskrouter_up",
            "1 when the component could be read in this scrape",
            labels=["component"],
        )
        up.add_metric(["redis"], 1)
        engines = sorted({ps.backend for ps in self.runtime.derived.profiles.values()})
        for engine in engines:
            component = "celery broker" if engine == "celery" else "redis (rq)"
            try:
                depths = self.runtime.backend(engine).queue_depths()
            except TaskrouterError as exc:
                # The depths are missing from this scrape; the rest of it still holds.
                log.warning("metrics: queue depths of %s: %s", engine, exc)
                up.add_metric([component], 0)
                continue
            if engine == "celery":
                up.add_metric([component], 1)
            for queue, n in sorted(depths.items()):
                depth.add_metric([engine, queue], n)
        yield depth
        yield from self._workers(engines)
        yield up

    def _workers(self, engines: Iterable[str]) -> Iterator[Metric]:
        workers = GaugeMetricFamily(
            "taskrouter_workers",
            "Live workers, counted as celery inspect (a node) and rq info (a process) do",
            labels=["backend", "lane"],
        )
        processes = GaugeMetricFamily(
            "taskrouter_worker_processes",
            "Processes that run jobs, of the live workers",
            labels=["backend", "lane"],
        )
        counts: dict[tuple[str, str], list[int]] = {}
        for engine in engines:
            for lane in LANES:
                if LANE_ENGINE[lane] == engine:
                    counts[(engine, lane)] = [0, 0]
        for info in WorkerRegistry(
            self.runtime.store, self.runtime.settings.worker_alive_window
        ).live():
            row = counts.setdefault((info.engine, info.lane), [0, 0])
            row[0] += counted(info)
            row[1] += len(info.processes)
        for (engine, lane), (n, procs) in sorted(counts.items()):
            workers.add_metric([engine, lane], n)
            processes.add_metric([engine, lane], procs)
        yield workers
        yield processes


def _progress(running: Iterable[tuple[str, float | None]]) -> Metric:
    """Running jobs per profile by the progress their tasks reported (a gauge histogram:
    a label per job would make a series per job)."""
    family = GaugeHistogramMetricFamily(
        "taskrouter_running_progress",
        f"Running jobs (at most {RUNNING_READ}) by the progress fraction their task "
        "reported last; those that reported none are counted in taskrouter_jobs only",
        labels=["profile"],
    )
    per: dict[str, list[float]] = defaultdict(list)
    for profile, fraction in running:
        if fraction is not None:
            per[profile].append(fraction)
    for profile, fractions in sorted(per.items()):
        buckets = [
            (_le(bound), float(sum(1 for f in fractions if f <= bound)))
            for bound in PROGRESS_BUCKETS
        ]
        buckets.append(("+Inf", float(len(fractions))))
        family.add_metric([profile], buckets, gsum_value=sum(fractions))
    return family


def _values(labels: Labels) -> list[str]:
    return [labels.profile, labels.backend, labels.queue, labels.task]


def _histogram(
    name: str,
    doc: str,
    samples: Iterable[tuple[Labels, float | None]],
    bounds: Sequence[float],
) -> Metric:
    counts: dict[Labels, list[int]] = defaultdict(lambda: [0] * (len(bounds) + 1))
    sums: dict[Labels, float] = defaultdict(float)
    for labels, seconds in samples:
        if seconds is None:
            continue  # never started (canceled while queued)
        counts[labels][bisect.bisect_left(bounds, seconds)] += 1
        sums[labels] += seconds
    family = GaugeHistogramMetricFamily(name, doc, labels=LABELS)
    for labels, per_bucket in sorted(counts.items(), key=lambda kv: _values(kv[0])):
        cumulative, buckets = 0, []
        for bound, n in zip([*map(_le, bounds), "+Inf"], per_bucket, strict=True):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        family.add_metric(_values(labels), buckets, gsum_value=sums[labels])
    return family


def _le(bound: float) -> str:
    return f"{bound:g}"


def registry(runtime: Runtime) -> CollectorRegistry:
    """A registry of its own: the API's figures, not this process's Python internals."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RedisCollector(runtime))
    return reg


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        },
        **responses(503),
    },
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
