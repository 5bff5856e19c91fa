"""End reservations whose time is up, and free what they held: pod, SSH service, name.

The sweep also warns users 30, 15 and 5 minutes before expiry (each warning once; an
extension re-arms them), and frees what failed reservations still hold: the watcher fails a
reservation whose pod failed or vanished, and this sweep deletes the pod and releases the name.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from pool import audit, broadcast, cluster
from pool.lifecycle import IllegalTransition
from pool.models import LIVE_STATES, PodRecord, PodState
from pool.reconciler import delete_pod_objects
from reservations.models import DomainMapping, Reservation, ReservationStatus

logger = logging.getLogger(__name__)

EXPIRY_WARNING_MINUTES = (30, 15, 5)


def expiry_warning(time_left: timedelta | None) -> int | None:
    """Return the warning (minutes before expiry) that ``time_left`` falls under, if any."""
    if time_left is None:
        return None
    due = [m for m in EXPIRY_WARNING_MINUTES if time_left <= timedelta(minutes=m)]
    return min(due) if due else None


def release_reservation(reservation: Reservation, *, reason: str, now: datetime, actor: str):
    """Free an ended reservation's pod, SSH service and name leases, together.

    A pod that vanished on its own (already gone) may have left its SSH service behind, so its
    objects are deleted too; deletes of what is already gone are no-ops.
    """
    pods = list(
        PodRecord.objects.filter(reservation=reservation)
        .exclude(state=PodState.DRAINING)
        .select_related("pool", "reservation")
    )
    with transaction.atomic():
        for pod in pods:
            if pod.state != PodState.GONE:
                pod.release_from_reservation(reason, now=now, actor=actor)
        for lease in reservation.name_leases.filter(released_at__isnull=True):
            lease.release(now=now)
        broadcast.pods_changed(pod.name for pod in pods)
        broadcast.pools_changed({pod.pool_id for pod in pods})
        broadcast.names_changed()
        broadcast.reservation_changed(reservation.user_id, reservation.pk)
    for pod in pods:
        try:
            delete_pod_objects(pod.name)
        except cluster.ClusterUnavailable as exc:
            logger.warning(
                "release %s: delete of %s failed, retried by the tick: %s",
                reservation.short_id,
                pod.name,
                exc,
            )


def warn_expiring(*, now: datetime) -> int:
    """Push each expiry warning a reservation has come under since the last; return how many."""
    horizon = now + timedelta(minutes=max(EXPIRY_WARNING_MINUTES))
    soon = Reservation.objects.filter(
        status=ReservationStatus.ACTIVE, expires_at__gt=now, expires_at__lte=horizon
    ).values_list("pk", "user_id", "expires_at", "expiry_warned")
    sent = 0
    for pk, user_id, expires_at, warned in soon:
        minutes = expiry_warning(expires_at - now)
        if warned is not None and warned <= minutes:
            continue
        # Conditional on the expiry read, so a concurrent extension re-arms the warnings.
        updated = (
            Reservation.objects.filter(pk=pk, expires_at=expires_at)
            .filter(Q(expiry_warned__isnull=True) | Q(expiry_warned__gt=minutes))
            .update(expiry_warned=minutes)
        )
        if updated:
            broadcast.reservation_changed(user_id, pk)
            sent += 1
    return sent


def release_failed(*, now: datetime) -> int:
    """Free the pod, service and name that failed reservations still hold; return how many."""
    holding_pod = PodRecord.objects.filter(
        reservation=OuterRef("pk"), state__in=(*LIVE_STATES, PodState.FAILED)
    )
    holding_name = DomainMapping.objects.filter(
        reservation=OuterRef("pk"), released_at__isnull=True
    )
    failed = Reservation.objects.filter(status=ReservationStatus.FAILED).filter(
        Exists(holding_pod) | Exists(holding_name)
    )
    released = 0
    for reservation in failed.select_related("pool"):
        release_reservation(reservation, reason="reservation failed", now=now, actor=audit.SYSTEM)
        released += 1
    return released


def expire_due(*, now: datetime) -> str:
    """Warn, expire active reservations past their expiry, cancel those queued too long, and
    free what failed ones hold."""
    warned = warn_expiring(now=now)
    expired = cancelled = 0
    due = Reservation.objects.filter(status=ReservationStatus.ACTIVE, expires_at__lte=now)
    for reservation in due.select_related("pool"):
        try:
            reservation.expire(now=now, actor=audit.SYSTEM)
        except IllegalTransition:
            continue
        release_reservation(reservation, reason="reservation expired", now=now, actor=audit.SYSTEM)
        expired += 1
    queue_cutoff = now - timedelta(hours=settings.QUEUE_TIMEOUT_HOURS)
    stale = Reservation.objects.filter(
        status=ReservationStatus.QUEUED, created_at__lte=queue_cutoff
    )
    for reservation in stale.select_related("pool"):
        reason = f"queued longer than {settings.QUEUE_TIMEOUT_HOURS:g} hours"
        try:
            reservation.cancel(now=now, actor=audit.SYSTEM, reason=reason)
        except IllegalTransition:
            continue
        release_reservation(reservation, reason=reason, now=now, actor=audit.SYSTEM)
        cancelled += 1
    stuck = fail_stuck_cold_starts(now=now)
    freed = release_failed(now=now)
    return (
        f"warned {warned}, expired {expired}, cancelled {cancelled} queued, "
        f"failed {stuck} stuck cold starts, freed {freed} failed"
    )


def fail_stuck_cold_starts(*, now: datetime) -> int:
    """Fail cold starts not ready within COLD_START_TIMEOUT; ``release_failed`` frees them."""
    cutoff = now - timedelta(seconds=settings.COLD_START_TIMEOUT)
    stuck = Reservation.objects.filter(status=ReservationStatus.STARTING, created_at__lte=cutoff)
    failed = 0
    for reservation in stuck.select_related("pool"):
        pod = reservation.pods.order_by("-created_at").first()
        progress = f" (last seen: {pod.progress})" if pod is not None and pod.progress else ""
        reason = f"not ready after {settings.COLD_START_TIMEOUT / 60:g} minutes{progress}"
        try:
            reservation.fail(reason, now=now, actor=audit.SYSTEM)
        except IllegalTransition:
            continue
        broadcast.reservation_changed(reservation.user_id, reservation.pk)
        failed += 1
    return failed
