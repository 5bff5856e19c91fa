"""One reconcile tick: snapshot the pools, let the planner decide, apply its actions.

The tick does only quick work: a registry read, a few queries, deletes, and every
RECONCILE_RESYNC_INTERVAL one list of our pods.
Spawns are written as slots (under the pool's row lock, re-counting the deficit, so two ticks or
two beats never spawn twice for one slot) and handed to their own Celery task after commit.
"""

import logging
import secrets
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from gpudev_site import metrics
from pool import audit, broadcast, cluster, images, mirror
from pool.lifecycle import IllegalTransition
from pool.models import ImageRelease, PodKind, PodRecord, PodState, Pool
from pool.planner import Action, ClusterPod, PodView, PoolView, Snapshot, Verb, plan

logger = logging.getLogger(__name__)


RESYNC_KEY = "reconcile:last-resync"


def reconcile(*, now: datetime | None = None, resync: bool | None = None) -> str:
    """Run one tick over every pool; return a one-line summary.

    The tick re-lists our pods from the API when ``resync`` says so, or, by default, when the
    last re-list is ``RECONCILE_RESYNC_INTERVAL`` old: the watcher keeps the records in step,
    so most ticks cost a few queries however many pods there are.
    """
    now = now or timezone.now()
    with metrics.TICK_DURATION.time():
        release, registry_answered = images.refresh_release(now=now)
        cluster_pods = _sync_from_cluster(now) if _resync_due(now, resync) else None
        snapshot = build_snapshot(release, registry_answered, cluster_pods)
        actions = plan(snapshot, now)
        done = execute(actions, release=release, now=now)
    metrics.LAST_TICK.set_to_current_time()
    return ", ".join(f"{count} {verb}" for verb, count in sorted(done.items())) or "nothing to do"


def _resync_due(now: datetime, asked: bool | None) -> bool:
    """Whether this tick re-lists our pods: as asked, else when the last re-list is old."""
    if asked is not None:
        return asked
    last = cache.get(RESYNC_KEY)
    return last is None or now.timestamp() - last >= settings.RECONCILE_RESYNC_INTERVAL


def _sync_from_cluster(now: datetime) -> tuple[ClusterPod, ...] | None:
    """Re-read our pods (the backstop for missed watch events); None if the API is down."""
    listed_at = timezone.now()
    try:
        items, _ = cluster.list_our_pods()
    except cluster.ClusterUnavailable as exc:
        logger.warning("reconcile: cannot list pods, skipping the stranded sweep: %s", exc)
        return None
    cache.set(RESYNC_KEY, now.timestamp(), timeout=None)
    changed = mirror.observe_pod_list(items, now=now, listed_at=listed_at)
    if changed:
        broadcast.pods_changed(changed)
    return tuple(
        ClusterPod(
            name=pod["metadata"]["name"],
            created_at=_parse_time(pod["metadata"].get("creationTimestamp")) or now,
        )
        for pod in items
    )


def build_snapshot(
    release: ImageRelease | None,
    registry_answered: bool,
    cluster_pods: tuple[ClusterPod, ...] | None,
) -> Snapshot:
    """Read everything the planner needs in a fixed number of queries."""
    pods_by_pool: dict[int, list[PodView]] = defaultdict(list)
    live_names = set()
    rows = PodRecord.objects.exclude(state=PodState.GONE).values_list(
        "pool_id", "name", "kind", "state", "created_at", "running_digest", "reservation_id"
    )
    for pool_id, name, kind, state, created_at, digest, reservation_id in rows:
        live_names.add(name)
        pods_by_pool[pool_id].append(
            PodView(name, kind, state, created_at, digest or "", reservation_id)
        )
    pools = tuple(
        PoolView(
            id=pool.id,
            name=str(pool),
            target=pool.target,
            max_age=pool.max_age(),
            rotation_paused=pool.rotation_paused,
            backoff_until=pool.spawn_backoff_until,
            pods=tuple(pods_by_pool.get(pool.id, ())),
        )
        for pool in Pool.objects.select_related("gpu_type")
    )
    return Snapshot(
        pools=pools,
        current_digest=release.digest if release is not None and registry_answered else "",
        has_release=release is not None,
        stuck_spawn_cutoff=timedelta(seconds=settings.STUCK_SPAWN_CUTOFF),
        cluster_pods=cluster_pods,
        live_pod_names=frozenset(live_names),
        stranded_grace=timedelta(seconds=settings.STRANDED_POD_GRACE),
    )


def execute(actions: list[Action], *, release: ImageRelease | None, now: datetime) -> dict:
    """Apply the planner's actions; return how many of each were carried out."""
    done: dict[str, int] = defaultdict(int)
    touched_pools = set()
    for action in actions:
        if action.verb == Verb.HOLD:
            logger.info("reconcile: pool %s holds: %s", action.pool_id, action.reason)
            continue
        try:
            count = _APPLY[action.verb](action, release=release, now=now)
        except cluster.ClusterUnavailable as exc:
            logger.warning("reconcile: %s %s failed: %s", action.verb, action.pod_name, exc)
            continue
        if count:
            done[action.verb.value] += count
            touched_pools.add(action.pool_id)
    retried = _finish_drains(now)
    if retried:
        done["drain retried"] += retried
    touched_pools.discard(None)
    if touched_pools:
        broadcast.pools_changed(touched_pools)
    return done


def _spawn(action: Action, *, release: ImageRelease | None, now: datetime) -> int:
    """Write spawn slots under the pool's row lock, then start one task per slot."""
    from pool.tasks import spawn_warm_pod

    with transaction.atomic():
        pool = Pool.objects.locked(action.pool_id)
        counted = PodRecord.objects.filter(
            pool=pool,
            kind=PodKind.WARM,
            reservation__isnull=True,
            state__in=(PodState.SLOT, PodState.PENDING, PodState.READY),
        ).count()
        deficit = min(action.count, pool.target - counted)
        slots = []
        for _ in range(max(deficit, 0)):
            slot = PodRecord.objects.create(
                name=warm_pod_name(pool),
                pool=pool,
                kind=PodKind.WARM,
                state=PodState.SLOT,
                image_ref=release.immutable_ref,
                created_at=now,
            )
            audit.record(
                actor=audit.RECONCILER,
                action="pod_spawn",
                reason=action.reason,
                pool=pool,
                pod_name=slot.name,
                details={"image_ref": release.immutable_ref},
            )
            slots.append(slot)
        for slot in slots:
            transaction.on_commit(lambda pk=slot.pk: spawn_warm_pod.delay(pk))
        metrics.SPAWNS.labels(pool.slug).inc(len(slots))
        broadcast.pods_changed(slot.name for slot in slots)
    return len(slots)


def warm_pod_name(pool: Pool) -> str:
    return f"gpudev-{pool.slug}-{secrets.token_hex(3)}"


def _recycle(action: Action, *, release: ImageRelease | None, now: datetime) -> int:
    record = (
        PodRecord.objects.select_related("pool", "name_lease").filter(name=action.pod_name).first()
    )
    if record is None:
        return 0
    try:
        recycle_pod(
            record, reason=action.reason, now=now, actor=audit.RECONCILER, cause=action.cause
        )
    except IllegalTransition as exc:
        logger.info("reconcile: not recycling %s: %s", record.name, exc)
        return 0
    if action.failure:
        back_off(record.pool, now=now)
    return 1


def recycle_pod(
    record: PodRecord, *, reason: str, now: datetime, actor: str, cause: str = "operator"
) -> None:
    """Delete a pod that belongs to no reservation, its SSH service and its name lease, together.

    The record moves to draining and the name is released in one transaction (PR #199: a
    recycle that forgot the name leaked it for days); the deletes follow, and a tick retries
    them for any pod still draining.
    """
    with transaction.atomic():
        record.start_draining(reason, now=now, actor=actor)
        if record.name_lease is not None:
            record.name_lease.release(now=now)
            broadcast.names_changed()
        broadcast.pods_changed([record.name])
        broadcast.pools_changed([record.pool_id])
    metrics.RECYCLES.labels(record.pool.slug, cause).inc()
    delete_pod_objects(record.name)


def delete_pod_objects(pod_name: str) -> None:
    """Delete the pod and its SSH service from the cluster."""
    cluster.delete_service(cluster.ssh_service_name(pod_name))
    cluster.delete_pod(pod_name)


def back_off(pool: Pool, *, now: datetime) -> None:
    """Count a failed spawn and hold the pool's spawns for exponentially longer."""
    failures = pool.spawn_failures + 1
    delay = min(settings.SPAWN_BACKOFF_BASE * 2 ** (failures - 1), settings.SPAWN_BACKOFF_MAX)
    Pool.objects.filter(pk=pool.pk).update(
        spawn_failures=failures, spawn_backoff_until=now + timedelta(seconds=delay)
    )


def _delete_stranded(action: Action, *, release: ImageRelease | None, now: datetime) -> int:
    delete_pod_objects(action.pod_name)
    audit.record(
        actor=audit.RECONCILER,
        action="pod_delete_stranded",
        reason=action.reason,
        pod_name=action.pod_name,
    )
    return 1


def _finish_drains(now: datetime) -> int:
    """Re-issue deletes for pods still draining after an earlier delete failed."""
    stale = timezone.now() - timedelta(seconds=settings.RECONCILE_INTERVAL)
    retried = 0
    for name in PodRecord.objects.filter(state=PodState.DRAINING, updated_at__lt=stale).values_list(
        "name", flat=True
    ):
        try:
            delete_pod_objects(name)
        except cluster.ClusterUnavailable:
            continue
        retried += 1
    return retried


_APPLY = {
    Verb.SPAWN: _spawn,
    Verb.RECYCLE: _recycle,
    Verb.ROTATE: _recycle,
    Verb.DELETE_STRANDED: _delete_stranded,
}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
