"""Celery tasks on reservations and name leases: thin wrappers around one function each.

Periodic tasks run under a single-flight lock; the per-reservation tasks are idempotent, so a
retry or a second worker does no harm.
"""

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from gpudev_site.locks import single_flight
from pool import cluster
from reservations import claims, pods
from reservations.expiry import expire_due
from reservations.naming import purge_expired_leases as purge

# Transient API trouble is retried after 1, 2 and 4 seconds before the user is told.
API_RETRIES = 3


@shared_task
def purge_expired_leases() -> str:
    """Release every expired name lease."""
    with single_flight("purge-expired-leases") as acquired:
        if not acquired:
            return "skipped: another purge is running"
        return f"released {purge(now=timezone.now())} expired name leases"


@shared_task
def expire_reservations() -> str:
    """Warn before expiry, end reservations whose time is up, free what failed ones hold."""
    with single_flight("expire-reservations") as acquired:
        if not acquired:
            return "skipped: another expiry run is going"
        return expire_due(now=timezone.now())


@shared_task
def advance_queue() -> str:
    """Serve queued reservations that now fit, in request order per GPU type."""
    with single_flight("advance-queue", timeout=settings.QUEUE_RETRY_INTERVAL) as acquired:
        if not acquired:
            return "skipped: another queue run is going"
        return claims.advance_queue(now=timezone.now())


@shared_task(bind=True, max_retries=API_RETRIES)
def stamp_claim(self, reservation_id: str) -> str:
    """Label a claimed pod and give it the host label, user and keys; warn the user on failure."""
    try:
        return pods.stamp_pod(reservation_id)
    except cluster.ClusterUnavailable as exc:
        if self.request.retries < API_RETRIES:
            raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
        reason = f"the cluster did not answer: {exc}"
    except pods.StampFailed as exc:
        reason = str(exc)
    pods.warn(reservation_id, f"Your SSH keys may not be on the server yet ({reason}).")
    return f"{reservation_id}: stamp failed: {reason}"


@shared_task(bind=True, max_retries=API_RETRIES)
def create_cold_pod(self, reservation_id: str) -> str:
    """Create a starting reservation's pod and SSH service; fail the reservation if we cannot."""
    try:
        return pods.create_cold_pod(reservation_id)
    except cluster.ClusterUnavailable as exc:
        if self.request.retries < API_RETRIES:
            raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
        reason = f"the cluster did not answer: {exc}"
    except pods.StampFailed as exc:
        pods.warn(reservation_id, f"Your SSH keys may not be on the server yet ({exc}).")
        return f"{reservation_id}: stamp failed: {exc}"
    except Exception as exc:
        # Anything else the API refuses (an invalid manifest, a quota) will not fix itself.
        reason = str(exc)
    pods.fail_cold_start(reservation_id, reason)
    return f"{reservation_id}: cold start failed: {reason}"
