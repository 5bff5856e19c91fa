"""What an operator can change from the ops dashboard, each change audited under their name.

Recycling and orphan cleanup reuse the engine's own functions (``reconciler.recycle_pod``,
``orphans.clean_up``), so an operator's recycle frees the pod, its service and its name exactly
as the reconciler's does.
"""

from datetime import datetime

from django.db import transaction

from pool import audit, broadcast, cluster
from pool.lifecycle import IllegalTransition
from pool.models import PodKind, PodRecord, PodState, Pool
from pool.reconciler import recycle_pod


class RecycleRefused(Exception):
    """The pod is not one an operator may recycle; the message says why."""


def set_target(pool_id: int, target: int, *, actor: str) -> Pool:
    """Set a pool's warm target; the next reconcile tick spawns or recycles to meet it."""
    with transaction.atomic():
        pool = Pool.objects.locked(pool_id)
        if pool.target != target:
            audit.record(
                actor=actor,
                action="pool_target",
                reason=f"target {pool.target} → {target}",
                pool=pool,
                details={"from": pool.target, "to": target},
            )
            pool.target = target
            pool.save(update_fields=["target"])
            broadcast.pools_changed([pool.pk])
    return pool


def set_rotation_paused(pool_id: int, paused: bool, *, actor: str) -> Pool:
    """Pause or resume stale-image rotation of a pool."""
    with transaction.atomic():
        pool = Pool.objects.locked(pool_id)
        if pool.rotation_paused != paused:
            audit.record(
                actor=actor,
                action="rotation_pause" if paused else "rotation_resume",
                reason="rotation paused by an operator" if paused else "rotation resumed",
                pool=pool,
            )
            pool.rotation_paused = paused
            pool.save(update_fields=["rotation_paused"])
            broadcast.pools_changed([pool.pk])
    return pool


def refusal(record: PodRecord) -> str:
    """Say why an operator may not recycle ``record``, or return "" when they may."""
    if record.reservation_id is not None or record.state == PodState.CLAIMED:
        holder = (
            f"reservation {record.reservation.short_id} ({record.reservation.user})"
            if record.reservation is not None
            else "a reservation"
        )
        return (
            f"{record.name} serves {holder}; only warm pods that belong to no reservation "
            "are recycled. End the reservation instead."
        )
    if record.kind != PodKind.WARM:
        return f"{record.name} is a reservation pod; only warm pods are recycled."
    if record.state in (PodState.DRAINING, PodState.GONE):
        return f"{record.name} is already {record.get_state_display().lower()}."
    return ""


def recycle_warm_pod(record: PodRecord, *, now: datetime, actor: str) -> str:
    """Recycle a warm pod for an operator; return what happened, or raise RecycleRefused.

    The record moves to draining and its name is freed first; if the cluster then fails to
    answer, the reconciler re-issues the deletes on its next tick.
    """
    reason = refusal(record)
    if reason:
        raise RecycleRefused(reason)
    try:
        recycle_pod(record, reason=f"recycled by {actor}", now=now, actor=actor)
    except IllegalTransition as exc:
        # Claimed (or moved on) between the page and the click: the guard in the UPDATE holds.
        raise RecycleRefused(str(exc)) from exc
    except cluster.ClusterUnavailable:
        return (
            f"{record.name} is draining and its name is free; the cluster did not answer, "
            "so the reconciler retries the delete."
        )
    return f"Recycled {record.name}: its pod, SSH service and name are deleted; the pool refills."
