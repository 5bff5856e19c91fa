"""Prometheus metrics: what each process counts and times, and the pools' state at scrape time.

Counters and histograms live in the process that does the work (web, worker, watcher). Under
Celery's prefork pool set ``PROMETHEUS_MULTIPROC_DIR``: every child writes its samples there and
``worker_metrics_server`` serves their sum from the worker's main process. Pool gauges are read
from the database when ``/metrics`` is scraped, so any web replica reports the same truth.
"""

import hmac
import os

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

SPAWNS = Counter("gpudev_spawns", "Warm spawn slots written, by pool.", ["pool"])
SPAWN_FAILURES = Counter("gpudev_spawn_failures", "Warm spawns that failed, by pool.", ["pool"])
RECYCLES = Counter(
    "gpudev_recycles",
    "Warm pods recycled, by pool and cause (failed, stuck, age, surplus, stale, operator).",
    ["pool", "cause"],
)
CLAIMS = Counter(
    "gpudev_claims", "Reservations served, by pool and path (warm, cold, queued).", ["pool", "path"]
)
ORPHAN_CLEANUPS = Counter("gpudev_orphan_cleanups", "Orphaned name leases released.")
CLAIM_LATENCY = Histogram(
    "gpudev_claim_latency_seconds",
    "From a reserve request arriving to its reservation being active (warm claims).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
)
COLD_START = Histogram(
    "gpudev_cold_start_seconds",
    "From a cold reservation being made to its pod being ready.",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 3600),
)
TICK_DURATION = Histogram(
    "gpudev_reconcile_tick_seconds",
    "Duration of one reconcile tick over every pool.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
)
EVENT_TO_PUSH = Histogram(
    "gpudev_watch_event_to_push_seconds",
    "From a watch event reaching the watcher to its change being broadcast.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
LAST_TICK = Gauge(
    "gpudev_reconcile_last_tick_timestamp_seconds",
    "When the last reconcile tick finished (Unix time); alert when it stops moving.",
    multiprocess_mode="max",
)
LEADER = Gauge(
    "gpudev_watcher_leader",
    "1 while this watcher holds the Lease.",
    ["identity"],
    multiprocess_mode="max",
)
LAST_WATCH_EVENT = Gauge(
    "gpudev_watcher_last_event_timestamp_seconds",
    "When the leading watcher last applied a watch event or list (Unix time).",
    multiprocess_mode="max",
)


class PoolCollector(Collector):
    """Per-pool gauges read from the database at scrape time."""

    GAUGES = {
        "target": "Warm pods the pool should keep.",
        "ready": "Ready idle warm pods.",
        "spawning": "Warm spawns in flight (slot written or pod starting).",
        "claimed": "Warm pods claimed by reservations.",
        "stale": "Ready idle warm pods running a digest other than the current release's.",
    }

    def collect(self):
        from pool.dashboard import pool_counts
        from pool.images import current_release
        from pool.models import Pool

        release = current_release()
        counts = pool_counts(release.digest if release else "")
        families = {
            name: GaugeMetricFamily(f"gpudev_pool_{name}", help_text, labels=["pool"])
            for name, help_text in self.GAUGES.items()
        }
        for pool in Pool.objects.select_related("gpu_type"):
            pool_counts_ = {"target": pool.target, **counts.get(pool.id, {})}
            for name, family in families.items():
                family.add_metric([pool.slug], pool_counts_.get(name, 0))
        yield from families.values()


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_view(request) -> HttpResponse:
    """Serve every metric of this process (or its multiprocess siblings) and the pool gauges."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(sent.encode(), token.encode()):
            return HttpResponseForbidden("A valid METRICS_TOKEN bearer token is required.\n")
    elif not settings.EMBEDDED:
        return HttpResponseForbidden("Set METRICS_TOKEN to expose /metrics.\n")
    registry = CollectorRegistry()
    registry.register(_Union(_registry()))
    registry.register(PoolCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Union(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        yield from self.registry.collect()


def worker_metrics_server(port: int) -> None:
    """Serve this process's metrics (summed over prefork children) on ``port``."""
    start_http_server(port, registry=_registry())


def forget_process(pid: int | None) -> None:
    """Drop a finished prefork child's live gauges from the multiprocess directory."""
    if pid is not None and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)
