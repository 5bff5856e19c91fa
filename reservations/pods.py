"""The cluster side of a reservation: create its cold pod, and stamp the claim on its pod.

Both run in Celery tasks after the database has decided (``claims``), so a user's request never
waits on the Kubernetes API. A stamp is a metadata patch guarded by the pod's resourceVersion,
re-read and retried on a conflict, then read back: the pod reads its host label, the user and
their keys from these annotations through a downward-API volume (deploy/templates).
"""

import logging

from django.utils import timezone

from pool import audit, broadcast, cluster
from pool.lifecycle import IllegalTransition
from pool.models import PodKind, PodRecord, PodState
from pool.spawner import create_devserver_pod
from reservations.expiry import release_reservation
from reservations.models import Reservation, ReservationStatus

logger = logging.getLogger(__name__)

STAMP_ATTEMPTS = 3
CLAIMED = "claimed"


class StampFailed(Exception):
    """The pod could not be given (or does not show) the reservation's labels and keys."""


def host_label(reservation: Reservation) -> str:
    """Return the host label the pod's shell shows, ``gpu-dev-<first 8 of the id>``."""
    return f"gpu-dev-{reservation.short_id}"


def authorized_keys(user) -> str:
    return "\n".join(user.ssh_keys.values_list("public_key", flat=True))


def claim_metadata(reservation: Reservation, pod: PodRecord) -> tuple[dict, dict]:
    """Return the labels and annotations that mark ``pod`` as serving ``reservation``."""
    labels = {cluster.LABEL_RESERVATION: str(reservation.pk)}
    if pod.kind == PodKind.WARM:
        labels[cluster.LABEL_WARM_STATE] = CLAIMED
    annotations = {
        cluster.ANNOTATION_HOSTLABEL: host_label(reservation),
        cluster.ANNOTATION_SSH_KEYS: authorized_keys(reservation.user),
        cluster.ANNOTATION_USER: reservation.user.get_username(),
    }
    if pod.name_lease is not None:
        annotations[cluster.ANNOTATION_NAME_LEASE] = pod.name_lease.name
    return labels, annotations


def _carries(pod: dict, labels: dict, annotations: dict) -> bool:
    metadata = pod.get("metadata", {})
    have_labels = metadata.get("labels") or {}
    have_annotations = metadata.get("annotations") or {}
    return all(have_labels.get(k) == v for k, v in labels.items()) and all(
        have_annotations.get(k) == v for k, v in annotations.items()
    )


def reservation_pod(reservation: Reservation) -> PodRecord | None:
    """Return the pod record serving the reservation now, if any."""
    return (
        PodRecord.objects.filter(reservation=reservation)
        .exclude(state__in=(PodState.DRAINING, PodState.GONE))
        .select_related("name_lease")
        .order_by("-created_at")
        .first()
    )


def stamp_pod(reservation_id: str) -> str:
    """Stamp the reservation's pod with its labels, host label, user and keys; verify it.

    Raises StampFailed when the pod is gone or keeps changing, and ClusterUnavailable when the
    API cannot be reached (the task retries that).
    """
    reservation = (
        Reservation.objects.select_related("user", "pool").filter(pk=reservation_id).first()
    )
    if reservation is None or reservation.status not in (
        ReservationStatus.STARTING,
        ReservationStatus.ACTIVE,
    ):
        return f"reservation {reservation_id} is not running"
    record = reservation_pod(reservation)
    if record is None or record.state == PodState.SLOT:
        return f"{reservation.short_id}: no pod to stamp yet"
    labels, annotations = claim_metadata(reservation, record)
    for _ in range(STAMP_ATTEMPTS):
        pod = cluster.read_pod(record.name)
        if pod is None:
            raise StampFailed(f"pod {record.name} is gone")
        if _carries(pod, labels, annotations):
            break
        try:
            cluster.patch_pod_metadata(
                record.name,
                resource_version=pod["metadata"]["resourceVersion"],
                labels=labels,
                annotations=annotations,
            )
        except cluster.Conflict:
            logger.info("stamp %s: %s changed under us; re-reading", reservation.short_id, pod)
            continue
    else:
        raise StampFailed(f"pod {record.name} kept changing; gave up after {STAMP_ATTEMPTS} tries")
    stamped = cluster.read_pod(record.name)
    if stamped is None or not _carries(stamped, labels, annotations):
        raise StampFailed(f"pod {record.name} does not show the keys after the update")
    Reservation.objects.filter(pk=reservation.pk).update(stamped_at=timezone.now(), warning="")
    audit.record(
        actor=audit.SYSTEM,
        action="pod_stamped",
        reason=f"host label {host_label(reservation)}, "
        f"{len(annotations[cluster.ANNOTATION_SSH_KEYS].splitlines())} keys",
        pool=reservation.pool,
        pod_name=record.name,
        reservation=reservation,
    )
    broadcast.reservation_changed(reservation.user_id, reservation.pk)
    return f"{reservation.short_id}: stamped {record.name}"


def warn(reservation_id: str, message: str) -> None:
    """Show the user a problem with a reservation that still runs."""
    reservation = Reservation.objects.filter(pk=reservation_id).first()
    if reservation is None:
        return
    Reservation.objects.filter(pk=reservation.pk).update(warning=message[:300])
    broadcast.reservation_changed(reservation.user_id, reservation.pk)


def create_cold_pod(reservation_id: str) -> str:
    """Create the SSH service and the pod on a starting reservation's slot, then stamp it.

    Safe to retry: a pod already created is stamped, not created again.
    """
    reservation = Reservation.objects.filter(pk=reservation_id).first()
    if reservation is None or reservation.status != ReservationStatus.STARTING:
        return f"reservation {reservation_id} is not starting; no pod to create"
    slot = (
        PodRecord.objects.select_related("pool__gpu_type", "name_lease")
        .filter(reservation=reservation, kind=PodKind.RESERVATION, state=PodState.SLOT)
        .first()
    )
    if slot is not None:
        try:
            create_devserver_pod(
                slot, gpu_count=reservation.gpu_count, reservation_id=str(reservation.pk)
            )
        except IllegalTransition:
            # Cancelled while the pod was being created: its record drains, and the
            # reconciler's drain sweep deletes what was created.
            return f"{reservation.short_id}: ended while its pod was created"
    return stamp_pod(reservation_id)


def fail_cold_start(reservation_id: str, reason: str) -> None:
    """Fail a reservation whose pod could not be created, and free what it held."""
    reservation = Reservation.objects.select_related("pool").filter(pk=reservation_id).first()
    if reservation is None or reservation.status_enum.is_terminal:
        return
    now = timezone.now()
    try:
        reservation.fail(f"could not create the pod: {reason}", now=now, actor=audit.SYSTEM)
    except IllegalTransition:
        return
    release_reservation(reservation, reason="cold start failed", now=now, actor=audit.SYSTEM)
