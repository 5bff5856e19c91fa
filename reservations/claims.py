"""Serve reservations: claim a warm pod, start a cold one, or queue; extend and cancel.

``reserve`` decides in the database, in two short transactions:

1. Write the reservation (queued).
2. If a warm pool fits it exactly (same GPU type and profile, ``gpu_count`` equal to the pool's
   GPUs per pod, target above zero) and no earlier request for that pool waits, claim one of
   the pool's ready idle pods: the pod, the reservation's activation and the pod's name lease
   move together or not at all (invariants 5 and 8).
3. Otherwise, in a second transaction under the GPU type's row lock (so that requests of a type
   decide one at a time), start a cold pod if no earlier request of the type is queued and a
   node has room; else the reservation stays queued.

After commit a Celery task stamps the claimed pod (labels, host label, keys) or creates the cold
one, so the request returns as soon as the database has decided. ``advance_queue`` serves the
queue in the same order on a beat: warm pods go to the first queued request that fits them, and
new capacity strictly to the head of each GPU type's queue, so no later request overtakes an
earlier one.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, IntegerField, QuerySet, Value, When

from gpudev_site import metrics
from pool import audit, broadcast, images
from pool.lifecycle import IllegalTransition
from pool.models import GpuType, ImageRelease, PodKind, PodRecord, PodState, Pool
from pool.tasks import reconcile_pools
from reservations import capacity
from reservations.expiry import release_reservation
from reservations.models import (
    DomainMapping,
    ExtensionRefused,
    LeaseHolder,
    Reservation,
    ReservationStatus,
)
from reservations.naming import allocate_name

logger = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 3
# When every idle warm pod's row is locked, look once more after this pause (seconds). Once:
# in a burst, the requests that get no pod sleep in the web server's few request threads, and
# the warm-claim benchmark measured 20 looks over half a second tripling the burst's latency.
CLAIM_LOCK_PAUSES = (0.05,)


class ActionRefused(ValueError):
    """A user's request on a reservation cannot be carried out; the message says why."""


@dataclass(frozen=True)
class ReservationRequest:
    """What a user asked for, already validated (see ``forms.ReservationForm``)."""

    pool: Pool
    gpu_count: int
    duration: timedelta
    requested_name: str = ""


def fits_warm_pool(pool: Pool, gpu_count: int) -> bool:
    """Return whether a request for ``gpu_count`` GPUs of ``pool`` may take its warm pods."""
    return pool.target > 0 and gpu_count == pool.gpus_per_pod


def reserve(user, request: ReservationRequest, *, now: datetime) -> Reservation:
    """Make a reservation and serve it at once if possible: warm, else cold, else queued."""
    actor = user.get_username()
    started = time.monotonic()
    with transaction.atomic():
        reservation = Reservation.objects.create(
            user=user,
            pool=request.pool,
            gpu_count=request.gpu_count,
            duration=request.duration,
            requested_name=request.requested_name,
            created_at=now,
        )
        audit.record(
            actor=actor,
            action="reservation_request",
            reason=f"{request.gpu_count} GPUs of {request.pool} for {request.duration}",
            pool=request.pool,
            reservation=reservation,
        )
        if (
            fits_warm_pool(request.pool, request.gpu_count)
            and not _earlier_waiting_for_pool(reservation).exists()
            and claim_warm_pod(reservation, now=now, actor=actor) is not None
        ):
            transaction.on_commit(lambda: metrics.CLAIM_LATENCY.observe(time.monotonic() - started))
            metrics.CLAIMS.labels(request.pool.slug, "warm").inc()
            return reservation
    # A second transaction that takes the GPU type's lock before writing anything: holding the
    # pool's key-share lock (from the inserts above) while queueing on the type's lock would
    # wait behind other decisions of the type for no reason. The reconciler's pool lock
    # (``Pool.objects.locked``) never conflicts with either (tests/engine/test_locks.py).
    with transaction.atomic():
        _lock_gpu_type(request.pool.gpu_type_id)
        started_cold = not _earlier_queued_of_type(reservation).exists() and start_cold_if_room(
            reservation, now=now, actor=actor
        )
        broadcast.reservation_changed(user.pk, reservation.pk)
    metrics.CLAIMS.labels(request.pool.slug, "cold" if started_cold else "queued").inc()
    return reservation


def _earlier_waiting_for_pool(reservation: Reservation) -> QuerySet:
    """Return the queued requests, made before this one, that its pool's warm pods fit."""
    return Reservation.objects.filter(
        status=ReservationStatus.QUEUED,
        pool=reservation.pool,
        gpu_count=reservation.pool.gpus_per_pod,
        created_at__lte=reservation.created_at,
    ).exclude(pk=reservation.pk)


def _earlier_queued_of_type(reservation: Reservation) -> QuerySet:
    return Reservation.objects.filter(
        status=ReservationStatus.QUEUED,
        pool__gpu_type_id=reservation.pool.gpu_type_id,
        created_at__lte=reservation.created_at,
    ).exclude(pk=reservation.pk)


def _lock_gpu_type(gpu_type_id: int) -> GpuType:
    """Hold the GPU type's row until commit, so capacity decisions of a type run one by one."""
    # NO KEY UPDATE: the watcher may still insert nodes of the type meanwhile.
    return GpuType.objects.select_for_update(no_key=True).get(pk=gpu_type_id)


# --- Warm claims ----------------------------------------------------------------------------


def claim_warm_pod(reservation: Reservation, *, now: datetime, actor: str) -> PodRecord | None:
    """Claim a ready idle warm pod of exactly the reservation's pool and activate it.

    Runs inside the caller's transaction. On PostgreSQL the candidate row is locked with
    ``SKIP LOCKED``, so concurrent claims spread over the pool's pods instead of queueing on
    one; elsewhere ``PodRecord.claim``'s conditional UPDATE refuses a pod someone else took
    first and the next candidate is tried. Returns the pod, or None when none is free.
    """
    from reservations.tasks import stamp_claim

    for _ in range(CLAIM_ATTEMPTS):
        pod = _first_claimable(reservation.pool)
        if pod is None:
            return None
        with transaction.atomic():
            try:
                pod.claim(reservation, now=now, actor=actor)
            except IllegalTransition:
                continue
            reservation.activate(now=now, pod_name=pod.name, warm=True, actor=actor)
            lease = _lease_for_claim(pod, reservation, now=now)
        transaction.on_commit(lambda: stamp_claim.delay(str(reservation.pk)))
        transaction.on_commit(reconcile_pools.delay)
        broadcast.pods_changed([pod.name])
        broadcast.pools_changed([pod.pool_id])
        broadcast.names_changed()
        broadcast.reservation_changed(reservation.user_id, reservation.pk)
        logger.info("reservation %s claimed %s as %s", reservation.short_id, pod.name, lease)
        return pod
    return None


def _first_claimable(pool: Pool) -> PodRecord | None:
    """The first claimable pod of ``pool``, its row locked; None when none is free.

    Rows locked by others are skipped. When every idle warm pod is locked, the holders are
    other claims (which take their pods: once they commit, none is idle and the answer is
    None) or the watcher recording a change to a pod that just became ready (which lets go in
    milliseconds): look once more rather than turn a ready warm pod into a cold start.
    Waiting on the locks instead would queue concurrent claims on one another's rows and can
    deadlock them.
    """
    for pause in (*CLAIM_LOCK_PAUSES, None):
        pod = _claimable(pool).first()
        if pod is not None or not connection.features.has_select_for_update_skip_locked:
            return pod
        if pause is None or not PodRecord.objects.idle_warm().filter(pool=pool).exists():
            return None
        time.sleep(pause)
    return None


def _claimable(pool: Pool) -> QuerySet:
    """Ready idle warm pods of ``pool``, those on the current image first, oldest first."""
    release = images.current_release()
    current = Case(
        When(running_digest=release.digest if release else "", then=Value(0)),
        default=Value(1),
        output_field=IntegerField(),
    )
    pods = (
        PodRecord.objects.idle_warm()
        .filter(pool=pool)
        .select_related("pool", "name_lease")
        .order_by(current, "ready_at", "pk")
    )
    if connection.features.has_select_for_update_skip_locked:
        pods = pods.select_for_update(skip_locked=True, of=("self",))
    return pods


def _lease_for_claim(pod: PodRecord, reservation: Reservation, *, now: datetime) -> DomainMapping:
    """Move the pod's placeholder name to the reservation, or lease the name the user asked for."""
    expires_at = lease_expiry(reservation, now)
    placeholder = pod.name_lease
    if not reservation.requested_name and placeholder is not None and placeholder.is_live(now):
        try:
            placeholder.transfer_to(reservation, expires_at=expires_at)
        except IllegalTransition:
            logger.info("placeholder %s went while claiming %s", placeholder, pod.name)
        else:
            return placeholder
    if placeholder is not None:
        placeholder.release(now=now)
    lease = allocate_name(
        holder=LeaseHolder.RESERVATION,
        expires_at=expires_at,
        now=now,
        pod_name=pod.name,
        reservation=reservation,
        requested=reservation.requested_name,
    )
    PodRecord.objects.filter(pk=pod.pk).update(name_lease=lease)
    pod.name_lease = lease
    return lease


def lease_expiry(reservation: Reservation, now: datetime) -> datetime:
    """Return when a reservation's name lease lapses if nothing releases it first.

    Ending a reservation releases its name at once; this expiry is the backstop (PR #199). It
    follows the reservation's expiry and extensions; before activation it covers the longest
    a reservation may run.
    """
    margin = timedelta(hours=settings.PLACEHOLDER_LEASE_MARGIN_HOURS)
    if reservation.expires_at is not None:
        return reservation.expires_at + margin
    return now + timedelta(hours=settings.RESERVATION_MAX_TOTAL_HOURS) + margin


# --- Cold starts ----------------------------------------------------------------------------


def start_cold_if_room(reservation: Reservation, *, now: datetime, actor: str) -> bool:
    """Start a cold pod for a queued reservation if its GPU type has room; return whether.

    The caller holds the GPU type's row lock.
    """
    release = images.current_release()
    if release is None:
        return False
    if not capacity.room_for(reservation.pool.gpu_type).fits(reservation.gpu_count):
        return False
    start_cold(reservation, release=release, now=now, actor=actor)
    return True


def start_cold(
    reservation: Reservation, *, release: ImageRelease, now: datetime, actor: str
) -> PodRecord:
    """Write the pod's slot and name lease, mark the reservation starting; create it after commit.

    The slot is in the database before the pod exists (invariant 6), pinned to the current
    release's immutable ref (invariant 9).
    """
    from reservations.tasks import create_cold_pod

    pool = reservation.pool
    name = f"gpudev-{pool.slug}-{reservation.short_id}"
    with transaction.atomic():
        lease = allocate_name(
            holder=LeaseHolder.RESERVATION,
            expires_at=lease_expiry(reservation, now),
            now=now,
            pod_name=name,
            reservation=reservation,
            requested=reservation.requested_name,
        )
        record = PodRecord.objects.create(
            name=name,
            pool=pool,
            kind=PodKind.RESERVATION,
            state=PodState.SLOT,
            image_ref=release.immutable_ref,
            reservation=reservation,
            name_lease=lease,
            created_at=now,
        )
        audit.record(
            actor=actor,
            action="pod_spawn",
            reason=f"cold start for reservation {reservation.short_id}",
            pool=pool,
            pod_name=name,
            reservation=reservation,
            details={"image_ref": release.immutable_ref, "gpu_count": reservation.gpu_count},
        )
        reservation.start(name, actor=actor)
    transaction.on_commit(lambda: create_cold_pod.delay(str(reservation.pk)))
    broadcast.pods_changed([name])
    broadcast.pools_changed([pool.pk])
    broadcast.names_changed()
    broadcast.reservation_changed(reservation.user_id, reservation.pk)
    return record


# --- The queue ------------------------------------------------------------------------------


def advance_queue(*, now: datetime) -> str:
    """Serve queued reservations in request order, per GPU type; return a summary."""
    type_ids = set(
        Reservation.objects.filter(status=ReservationStatus.QUEUED).values_list(
            "pool__gpu_type_id", flat=True
        )
    )
    served = sum(_advance_type(type_id, now=now) for type_id in sorted(type_ids))
    waiting = Reservation.objects.filter(status=ReservationStatus.QUEUED).count()
    return f"served {served} queued reservations, {waiting} still waiting"


def _advance_type(gpu_type_id: int, *, now: datetime) -> int:
    """Serve one GPU type's queue: warm pods to the first request that fits them, new capacity
    only to the head, so that nothing overtakes an earlier request's claim on it."""
    served = 0
    with transaction.atomic():
        _lock_gpu_type(gpu_type_id)
        queued = (
            Reservation.objects.filter(
                status=ReservationStatus.QUEUED, pool__gpu_type_id=gpu_type_id
            )
            .select_related("pool__gpu_type")
            .order_by("created_at", "pk")
        )
        head_waits = False
        for reservation in queued:
            try:
                with transaction.atomic():
                    if _serve_queued(reservation, cold_allowed=not head_waits, now=now):
                        served += 1
                        continue
            except IllegalTransition as exc:
                logger.info("queue: %s changed meanwhile: %s", reservation.short_id, exc)
                continue
            head_waits = True
        if served:
            announce_queue(gpu_type_id)
    return served


def _serve_queued(reservation: Reservation, *, cold_allowed: bool, now: datetime) -> bool:
    if (
        fits_warm_pool(reservation.pool, reservation.gpu_count)
        and claim_warm_pod(reservation, now=now, actor=audit.SYSTEM) is not None
    ):
        return True
    return cold_allowed and start_cold_if_room(reservation, now=now, actor=audit.SYSTEM)


def announce_queue(gpu_type_id: int) -> None:
    """Tell everyone still queued for a GPU type that their position may have moved."""
    for user_id, pk in Reservation.objects.filter(
        status=ReservationStatus.QUEUED, pool__gpu_type_id=gpu_type_id
    ).values_list("user_id", "pk"):
        broadcast.reservation_changed(user_id, pk)


def refresh_keys(user) -> None:
    """Re-stamp the user's running pods, so that a key added or removed reaches them too."""
    from reservations.tasks import stamp_claim

    running = Reservation.objects.filter(
        user=user, status__in=(ReservationStatus.STARTING, ReservationStatus.ACTIVE)
    )
    for pk in running.values_list("pk", flat=True):
        transaction.on_commit(lambda pk=pk: stamp_claim.delay(str(pk)))


# --- Extend and cancel ----------------------------------------------------------------------


def extend_reservation(
    reservation: Reservation, by: timedelta, *, now: datetime, actor: str
) -> None:
    """Push an active reservation's expiry back, and its name lease with it."""
    if reservation.status != ReservationStatus.ACTIVE:
        raise ActionRefused(
            f"Only an active reservation can be extended; this one is {reservation.status}."
        )
    with transaction.atomic():
        try:
            reservation.extend(by, actor=actor)
        except ExtensionRefused as exc:
            raise ActionRefused(str(exc)) from exc
        except IllegalTransition as exc:
            raise ActionRefused("The reservation changed meanwhile; try again.") from exc
        reservation.name_leases.filter(released_at__isnull=True).update(
            expires_at=lease_expiry(reservation, now)
        )
        broadcast.reservation_changed(reservation.user_id, reservation.pk)


def cancel_reservation(reservation: Reservation, *, now: datetime, actor: str) -> None:
    """End an open reservation now and free its pod, SSH service and name."""
    if reservation.status_enum.is_terminal:
        raise ActionRefused(f"This reservation has already ended ({reservation.status}).")
    was_queued = reservation.status == ReservationStatus.QUEUED
    try:
        reservation.cancel(now=now, actor=actor, reason=f"cancelled by {actor}")
    except IllegalTransition as exc:
        raise ActionRefused("The reservation ended meanwhile.") from exc
    release_reservation(reservation, reason="reservation cancelled", now=now, actor=actor)
    if was_queued:
        announce_queue(reservation.pool.gpu_type_id)
