"""Serving a reservation: warm claim of exactly its pool, else a cold start, else the queue."""

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from pool.models import AuditEvent, NodeRecord, PodKind, PodRecord, PodState
from reservations import claims
from reservations.models import DomainMapping, LeaseHolder, Reservation, ReservationStatus
from reservations.naming import lease_warm_placeholder
from tests.factories import pod_record, pool_of
from tests.reservations.conftest import ready_nodes

pytestmark = pytest.mark.django_db


def warm_pod(pool, name: str, *, now=None, **fields) -> PodRecord:
    """A ready idle warm pod of ``pool`` holding a placeholder name, as a spawn leaves it."""
    now = now or timezone.now()
    fields.setdefault("ready_at", now)
    record = pod_record(pool, name, **fields)
    record.name_lease = lease_warm_placeholder(pool, name, now=now)
    record.save()
    return record


def ask(user, gpu_type="h100", *, count=1, profile="default", hours=2.0, name="", now=None):
    request = claims.ReservationRequest(
        pool=pool_of(gpu_type, profile),
        gpu_count=count,
        duration=timedelta(hours=hours),
        requested_name=name,
    )
    return claims.reserve(user, request, now=now or timezone.now())


# --- Warm claims ----------------------------------------------------------------------------


def test_warm_claim_activates_and_moves_the_pods_name_to_the_reservation(alice, release):
    pool = pool_of("h100", target=2)
    pod = warm_pod(pool, "gpudev-h100-default-aaaaaa")
    placeholder = pod.name_lease
    now = timezone.now()

    reservation = ask(alice, hours=3, now=now)

    assert reservation.status == ReservationStatus.ACTIVE
    assert reservation.warm_claimed
    assert reservation.pod_name == pod.name
    assert reservation.expires_at == now + timedelta(hours=3)
    assert reservation.host_label == f"gpu-dev-{str(reservation.pk)[:8]}"
    pod.refresh_from_db()
    assert (pod.state, pod.reservation_id) == (PodState.CLAIMED, reservation.pk)
    placeholder.refresh_from_db()
    assert placeholder.holder == LeaseHolder.RESERVATION
    assert placeholder.reservation_id == reservation.pk
    margin = timedelta(hours=settings.PLACEHOLDER_LEASE_MARGIN_HOURS)
    assert placeholder.expires_at == reservation.expires_at + margin
    actions = set(
        AuditEvent.objects.filter(reservation=reservation).values_list("action", flat=True)
    )
    assert {"reservation_request", "reservation_active"} <= actions
    assert AuditEvent.objects.filter(action="pod_claimed", pod_name=pod.name).exists()


def test_warm_claim_honours_a_requested_name(alice, release):
    pool = pool_of("h100", target=1)
    pod = warm_pod(pool, "gpudev-h100-default-aaaaaa")
    placeholder = pod.name_lease

    reservation = ask(alice, name="my-box")

    placeholder.refresh_from_db()
    assert placeholder.released_at is not None
    lease = DomainMapping.objects.get(reservation=reservation)
    assert (lease.name, lease.pod_name, lease.released_at) == ("my-box", pod.name, None)
    pod.refresh_from_db()
    assert pod.name_lease == lease


def test_warm_claim_prefers_a_pod_on_the_current_image(alice, release):
    pool = pool_of("h100", target=2)
    now = timezone.now()
    warm_pod(pool, "gpudev-h100-default-old000", running_digest="sha256:old", now=now)
    current = warm_pod(pool, "gpudev-h100-default-new000", running_digest=release.digest, now=now)
    assert ask(alice).pod_name == current.name


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_warm_pod_whose_row_the_watcher_is_writing_is_still_claimed(alice, release):
    """Concurrent claims skip each other's locked pods, but a pod the watcher is recording a
    change to (just after it became ready, say) is looked at again, not turned into a cold
    start."""
    pool = pool_of("h100", target=1)
    pod = warm_pod(pool, "gpudev-h100-default-aaaaaa")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (claimer,) = cursor.fetchone()
    locked, stop = threading.Event(), threading.Event()

    def watcher_writing() -> None:
        """Hold the pod's row until the claim has looked at the pool's pods (and skipped
        this one)."""
        try:
            with transaction.atomic():
                PodRecord.objects.filter(pk=pod.pk).update(progress="", node_name="node-1")
                locked.set()
                with connection.cursor() as cursor:
                    while not stop.is_set():
                        # A transaction sees one snapshot of the statistics unless cleared.
                        cursor.execute("SELECT pg_stat_clear_snapshot()")
                        cursor.execute(
                            "SELECT query FROM pg_stat_activity WHERE pid = %s", [claimer]
                        )
                        if '"pool_podrecord"' in cursor.fetchone()[0]:
                            return
                        time.sleep(0.002)
        finally:
            connection.close()

    watcher = threading.Thread(target=watcher_writing)
    watcher.start()
    assert locked.wait(10)
    try:
        reservation = ask(alice)
    finally:
        stop.set()
        watcher.join()

    assert reservation.warm_claimed
    assert reservation.pod_name == pod.name


@pytest.mark.parametrize(
    ("profile", "count"),
    [("big", 1), ("default", 2)],
    ids=["another profile", "another GPU count"],
)
def test_warm_pod_of_another_pool_or_size_is_never_taken(alice, release, profile, count):
    pool_of("h100", "big", target=1)
    default_pod = warm_pod(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa")
    ready_nodes("h100", 1)

    reservation = ask(alice, profile=profile, count=count)

    assert reservation.status == ReservationStatus.STARTING
    assert not reservation.warm_claimed
    default_pod.refresh_from_db()
    assert (default_pod.state, default_pod.reservation) == (PodState.READY, None)


def test_pool_with_target_zero_never_serves_warm(alice, release):
    pod = warm_pod(pool_of("h100", target=0), "gpudev-h100-default-aaaaaa")
    ready_nodes("h100", 1)
    assert ask(alice).status == ReservationStatus.STARTING
    pod.refresh_from_db()
    assert pod.state == PodState.READY


# --- Cold starts and the queue ---------------------------------------------------------------


def test_cold_start_writes_a_slot_pinned_to_the_release_and_leases_the_name(
    alice, release, django_capture_on_commit_callbacks
):
    ready_nodes("h100", 1)
    with django_capture_on_commit_callbacks() as callbacks:
        reservation = ask(alice, count=4, name="big-run")

    assert reservation.status == ReservationStatus.STARTING
    slot = PodRecord.objects.get(reservation=reservation)
    assert (slot.kind, slot.state) == (PodKind.RESERVATION, PodState.SLOT)
    assert slot.image_ref == release.immutable_ref
    assert reservation.pod_name == slot.name
    assert slot.name_lease.name == "big-run"
    assert slot.name_lease.holder == LeaseHolder.RESERVATION
    assert callbacks, "the pod is created by a task queued after commit"


def test_no_room_queues_without_a_pod_or_a_name(alice, release):
    ready_nodes("h100", 2, gpus_used=8)
    reservation = ask(alice)
    assert reservation.status == ReservationStatus.QUEUED
    assert not PodRecord.objects.filter(reservation=reservation).exists()
    assert not DomainMapping.objects.filter(reservation=reservation).exists()


def test_no_image_release_queues(alice):
    ready_nodes("h100", 1)
    assert ask(alice).status == ReservationStatus.QUEUED


def test_pods_not_yet_on_a_node_hold_their_gpus(alice, bob, release):
    ready_nodes("h100", 1)
    assert ask(alice, count=8).status == ReservationStatus.STARTING
    assert ask(bob, count=8).status == ReservationStatus.QUEUED


def test_a_request_needs_one_node_with_room_not_room_in_total(alice, release):
    ready_nodes("h100", 2, gpus_used=6)
    assert ask(alice, count=4).status == ReservationStatus.QUEUED


def test_later_request_waits_behind_an_earlier_one_of_its_type(alice, bob, release):
    nodes = ready_nodes("h100", 1, gpus_used=8)
    first = ask(alice, count=4)
    NodeRecord.objects.filter(pk=nodes[0].pk).update(gpus_used=6)

    second = ask(bob, count=1)

    assert (first.status, second.status) == (ReservationStatus.QUEUED, ReservationStatus.QUEUED)
    assert claims.advance_queue(now=timezone.now()).startswith("served 0")
    NodeRecord.objects.filter(pk=nodes[0].pk).update(gpus_used=4)
    claims.advance_queue(now=timezone.now())
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == ReservationStatus.STARTING
    assert second.status == ReservationStatus.QUEUED, "only 4 free: the head took them"


def test_queue_of_one_type_does_not_hold_up_another(alice, bob, release):
    ready_nodes("h100", 1, gpus_used=8)
    ready_nodes("a10g", 1)
    ask(alice)
    assert ask(bob, "a10g").status == ReservationStatus.STARTING


def test_queue_serves_in_request_order(alice, bob, release):
    nodes = ready_nodes("h100", 1, gpus_used=8)
    now = timezone.now()
    queued = [ask(alice if i % 2 else bob, now=now + timedelta(seconds=i)) for i in range(4)]
    NodeRecord.objects.filter(pk=nodes[0].pk).update(gpus_used=6)

    claims.advance_queue(now=now + timedelta(seconds=10))

    statuses = [Reservation.objects.get(pk=r.pk).status for r in queued]
    assert statuses == ["starting", "starting", "queued", "queued"]


def test_queued_request_gets_the_next_warm_pod_before_a_newcomer(alice, bob, release):
    pool = pool_of("h100", target=1)
    ready_nodes("h100", 1, gpus_used=8)
    first = ask(alice)
    assert first.status == ReservationStatus.QUEUED
    warm_pod(pool, "gpudev-h100-default-aaaaaa")

    newcomer = ask(bob)

    assert newcomer.status == ReservationStatus.QUEUED, "a newcomer must not jump the queue"
    claims.advance_queue(now=timezone.now())
    first.refresh_from_db()
    assert (first.status, first.warm_claimed) == (ReservationStatus.ACTIVE, True)


def test_warm_pods_still_serve_queued_requests_behind_a_stuck_head(alice, bob, release):
    pool = pool_of("h100", target=1)
    ready_nodes("h100", 1, gpus_used=8)
    head = ask(alice, count=8)
    behind = ask(bob)
    warm_pod(pool, "gpudev-h100-default-aaaaaa")

    claims.advance_queue(now=timezone.now())

    head.refresh_from_db()
    behind.refresh_from_db()
    assert head.status == ReservationStatus.QUEUED
    assert behind.status == ReservationStatus.ACTIVE, "the head cannot use a 1-GPU warm pod"


def test_queue_position_is_per_gpu_type(alice, bob, release):
    from reservations.capacity import queue_position

    ready_nodes("h100", 1, gpus_used=8)
    ready_nodes("a10g", 1, gpus_used=4)
    now = timezone.now()
    h1 = ask(alice, now=now)
    a1 = ask(bob, "a10g", now=now + timedelta(seconds=1))
    h2 = ask(bob, now=now + timedelta(seconds=2))
    assert [queue_position(r) for r in (h1, a1, h2)] == [1, 1, 2]


# --- Extend and cancel -----------------------------------------------------------------------


def test_extension_moves_the_name_lease_and_stops_at_the_total_cap(alice, release):
    warm_pod(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa")
    now = timezone.now()
    reservation = ask(alice, hours=24, now=now)

    claims.extend_reservation(reservation, timedelta(hours=20), now=now, actor="alice")
    with pytest.raises(claims.ActionRefused, match="at most 48 hours in all"):
        claims.extend_reservation(reservation, timedelta(hours=8), now=now, actor="alice")

    reservation.refresh_from_db()
    assert reservation.expires_at == now + timedelta(hours=44)
    lease = DomainMapping.objects.get(reservation=reservation)
    margin = timedelta(hours=settings.PLACEHOLDER_LEASE_MARGIN_HOURS)
    assert lease.expires_at == reservation.expires_at + margin


def test_only_active_reservations_extend(alice, release):
    reservation = ask(alice)
    with pytest.raises(claims.ActionRefused, match="this one is queued"):
        claims.extend_reservation(reservation, timedelta(hours=1), now=timezone.now(), actor="a")


def test_cancel_frees_the_pod_and_the_name(alice, release):
    pod = warm_pod(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa")
    reservation = ask(alice)

    claims.cancel_reservation(reservation, now=timezone.now(), actor="alice")

    reservation.refresh_from_db()
    pod.refresh_from_db()
    assert reservation.status == ReservationStatus.CANCELLED
    assert pod.state == PodState.DRAINING
    assert not DomainMapping.objects.live(timezone.now()).filter(reservation=reservation).exists()
    with pytest.raises(claims.ActionRefused, match="already ended"):
        claims.cancel_reservation(reservation, now=timezone.now(), actor="alice")
