"""A warm spawn, run as its own Celery task: create the pod on its slot, wait until it is ready.

The deadline is WARM_SPAWN_TIMEOUT from the moment the slot was written, and the wait for the
pod inside it is POD_READY_TIMEOUT; ``pool.checks`` makes sure the first outlasts the second
(PR #671). A spawn that misses its deadline is failed, its pod, service and name deleted, and
its pool backs off before the next try.
"""

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from gpudev_site import metrics
from pool import audit, broadcast, cluster, mirror, podspec
from pool.lifecycle import IllegalTransition
from pool.models import PodKind, PodRecord, PodState, Pool
from pool.reconciler import back_off, recycle_pod
from reservations.naming import lease_warm_placeholder

logger = logging.getLogger(__name__)


# A spawn waits on a watch in slices this long, so a worker shutting down is not held up.
WAIT_SLICE_SECONDS = 5

_shutting_down = threading.Event()


class SpawnFailed(Exception):
    """The pod will not become ready in time, or cannot run at all."""


class SpawnInterrupted(Exception):
    """The worker is shutting down; the pod keeps starting and the watcher will see it ready."""


def interrupt_waits() -> None:
    """Make every spawn stop waiting (the worker is shutting down).

    Interrupting is safe: the pod exists and keeps starting, the watcher marks it ready, and
    the reconciler's stuck-spawn sweep fails it if it never gets there.
    """
    _shutting_down.set()


def allow_waits() -> None:
    """Let spawns wait again (a worker is starting in this process)."""
    _shutting_down.clear()


def spawn_warm_pod(record_id: int) -> str:
    """Create the pod for spawn slot ``record_id`` and wait for it; return a summary."""
    record = (
        PodRecord.objects.select_related("pool__gpu_type", "name_lease")
        .filter(pk=record_id)
        .first()
    )
    if record is None or record.state != PodState.SLOT:
        return f"slot {record_id} is not waiting to spawn"
    waited = max(timezone.now() - record.created_at, timedelta(0)).total_seconds()
    deadline = time.monotonic() + settings.WARM_SPAWN_TIMEOUT - waited
    try:
        create_devserver_pod(record)
        ready_by = min(deadline, time.monotonic() + settings.POD_READY_TIMEOUT)
        pod = wait_until_ready(record.name, until=ready_by)
    except SpawnInterrupted:
        return f"{record.name}: stopped waiting (worker shutting down)"
    except (SpawnFailed, cluster.ClusterUnavailable) as exc:
        reason = f"{exc}{_last_word(record.name)}"
        _give_up(record, reason)
        return f"{record.name}: failed: {reason}"
    if mirror.observe_pod(pod, now=timezone.now()):
        broadcast.pods_changed([record.name])
        broadcast.pools_changed([record.pool_id])
    Pool.objects.filter(pk=record.pool_id).update(spawn_failures=0, spawn_backoff_until=None)
    return f"{record.name}: ready"


def create_devserver_pod(record: PodRecord, *, gpu_count: int | None = None, **labels) -> None:
    """Create the SSH service and the pod for a slot, with its name lease, and mark it created."""
    pool = record.pool
    if record.kind == PodKind.WARM and record.name_lease is None:
        record.name_lease = lease_warm_placeholder(pool, record.name, now=timezone.now())
        PodRecord.objects.filter(pk=record.pk).update(name_lease=record.name_lease)
        broadcast.names_changed()
    annotations = {}
    if record.name_lease is not None:
        annotations[cluster.ANNOTATION_NAME_LEASE] = record.name_lease.name
    cluster.create_service(podspec.ssh_service(record.name, pool))
    cluster.create_pod(
        podspec.devserver_pod(
            name=record.name,
            pool=pool,
            kind=record.kind,
            image_ref=record.image_ref,
            gpu_count=pool.gpus_per_pod if gpu_count is None else gpu_count,
            annotations=annotations,
            **labels,
        )
    )
    record.mark_created(now=timezone.now(), actor=audit.RECONCILER)
    broadcast.pods_changed([record.name])


def wait_until_ready(name: str, *, until: float) -> dict:
    """Return the pod once it is ready; raise SpawnFailed if it fails, vanishes or runs late."""
    started = time.monotonic()
    while (remaining := until - time.monotonic()) > 0:
        if _shutting_down.is_set():
            raise SpawnInterrupted(name)
        try:
            pod = cluster.read_pod(name)
            if pod is None:
                raise SpawnFailed(f"pod {name} was deleted while starting")
            if _settled(pod):
                return pod
            events = cluster.watch_pod(
                name,
                pod["metadata"]["resourceVersion"],
                timeout_seconds=max(1, min(int(remaining), WAIT_SLICE_SECONDS)),
            )
            for kind, pod in events:
                if _shutting_down.is_set():
                    raise SpawnInterrupted(name)
                if kind == "DELETED":
                    raise SpawnFailed(f"pod {name} was deleted while starting")
                if kind != "BOOKMARK" and _settled(pod):
                    return pod
        except (cluster.WatchExpired, cluster.ClusterUnavailable) as exc:
            logger.info("spawn %s: re-reading after %s", name, exc)
            time.sleep(min(1.0, max(until - time.monotonic(), 0)))
    raise SpawnFailed(
        f"not ready after {int(time.monotonic() - started)}s "
        f"(POD_READY_TIMEOUT {settings.POD_READY_TIMEOUT:g}s)"
    )


def _last_word(name: str) -> str:
    """Return "; <reason>: <message>" of the pod's latest warning event, to say why it failed."""
    try:
        warnings = [e for e in cluster.pod_events(name) if e.get("type") == "Warning"]
    except cluster.ClusterUnavailable:
        return ""
    if not warnings:
        return ""
    last = warnings[-1]
    return f"; {last.get('reason', 'Warning')}: {last.get('message', '')}"[:400]


def _settled(pod: dict) -> bool:
    if pod.get("status", {}).get("phase") in ("Failed", "Succeeded"):
        raise SpawnFailed(f"pod {pod['status']['phase'].lower()}: {mirror.describe(pod)}")
    return mirror.is_ready(pod)


def _give_up(record: PodRecord, reason: str) -> None:
    now = timezone.now()
    metrics.SPAWN_FAILURES.labels(record.pool.slug).inc()
    record.refresh_from_db()
    try:
        if record.state != PodState.FAILED:
            record.fail(f"spawn failed: {reason}", now=now, actor=audit.RECONCILER)
        recycle_pod(
            record,
            reason=f"spawn failed: {reason}",
            now=now,
            actor=audit.RECONCILER,
            cause="failed",
        )
    except IllegalTransition as exc:
        logger.info("spawn %s: not recycled: %s", record.name, exc)
    except cluster.ClusterUnavailable as exc:
        logger.warning("spawn %s: delete failed, the tick will retry: %s", record.name, exc)
    back_off(record.pool, now=now)
