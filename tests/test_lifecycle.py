"""State changes are guarded transitions: illegal ones refused, terminal states kept."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pool.lifecycle import IllegalTransition
from pool.models import AuditEvent, PodState
from reservations.models import ExtensionRefused, ReservationStatus
from tests.factories import pod_record, pool_of, reservation_for

pytestmark = pytest.mark.django_db


def test_activate_stamps_ready_expiry_and_host_label(alice):
    now = timezone.now()
    reservation = reservation_for(alice, pool_of("h100"), hours=3)
    reservation.activate(now=now, pod_name="gpudev-h100-abc", warm=True)
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.ACTIVE
    assert reservation.expires_at == now + timedelta(hours=3)
    assert reservation.host_label == f"gpu-dev-{str(reservation.id)[:8]}"
    assert reservation.warm_claimed


@pytest.mark.parametrize("terminal", ["cancel", "expire", "fail"])
def test_terminal_reservation_is_never_overwritten(alice, terminal):
    now = timezone.now()
    reservation = reservation_for(alice, pool_of("h100"))
    reservation.activate(now=now, pod_name="p", warm=False)
    {
        "cancel": lambda: reservation.cancel(now=now, actor="alice"),
        "expire": lambda: reservation.expire(now=now),
        "fail": lambda: reservation.fail("pod vanished", now=now),
    }[terminal]()
    ended_as = reservation.status
    for late_move in (
        lambda: reservation.cancel(now=now, actor="alice"),
        lambda: reservation.expire(now=now),
        lambda: reservation.fail("late failure", now=now),
        lambda: reservation.activate(now=now, pod_name="p", warm=False),
    ):
        with pytest.raises(IllegalTransition):
            late_move()
    reservation.refresh_from_db()
    assert reservation.status == ended_as


def test_queued_reservation_cannot_expire_or_extend(alice):
    reservation = reservation_for(alice, pool_of("h100"))
    with pytest.raises(IllegalTransition, match="queued"):
        reservation.expire(now=timezone.now())
    with pytest.raises(IllegalTransition):
        reservation.extend(timedelta(hours=1), actor="alice")
    assert not AuditEvent.objects.filter(action="reservation_expire").exists()


def test_extension_stops_at_the_total_cap(alice, settings):
    settings.RESERVATION_MAX_TOTAL_HOURS = 48
    now = timezone.now()
    reservation = reservation_for(alice, pool_of("h100"), hours=24)
    reservation.activate(now=now, pod_name="p", warm=False)
    reservation.extend(timedelta(hours=20), actor="alice")
    with pytest.raises(ExtensionRefused, match="4h00m more"):
        reservation.extend(timedelta(hours=5), actor="alice")
    reservation.refresh_from_db()
    assert reservation.expires_at == now + timedelta(hours=44)


def test_stale_extend_loses_to_a_concurrent_one(alice):
    now = timezone.now()
    reservation = reservation_for(alice, pool_of("h100"), hours=1)
    reservation.activate(now=now, pod_name="p", warm=False)
    stale_copy = type(reservation).objects.get(pk=reservation.pk)
    reservation.extend(timedelta(hours=1), actor="alice")
    with pytest.raises(IllegalTransition):
        stale_copy.extend(timedelta(hours=1), actor="alice")
    reservation.refresh_from_db()
    assert reservation.expires_at == now + timedelta(hours=2)


def test_transitions_are_audited_with_actor_and_reason(alice):
    reservation = reservation_for(alice, pool_of("h100"))
    reservation.cancel(now=timezone.now(), actor="alice", reason="changed my mind")
    event = AuditEvent.objects.get(action="reservation_cancel")
    assert (event.actor, event.reason, event.reservation_id) == (
        "alice",
        "changed my mind",
        reservation.id,
    )


def test_only_a_ready_idle_warm_pod_can_be_claimed(alice):
    now = timezone.now()
    pool = pool_of("h100")
    reservation = reservation_for(alice, pool)
    pending = pod_record(pool, "pending-pod", state=PodState.PENDING)
    with pytest.raises(IllegalTransition, match="pending"):
        pending.claim(reservation, now=now, actor="alice")
    ready = pod_record(pool, "ready-pod")
    ready.claim(reservation, now=now, actor="alice")
    second = reservation_for(alice, pool)
    with pytest.raises(IllegalTransition, match="claimed"):
        ready.claim(second, now=now, actor="alice")
    ready.refresh_from_db()
    assert ready.reservation_id == reservation.id
    claimed = AuditEvent.objects.get(action="pod_claimed")
    assert (claimed.pod_name, claimed.reservation_id) == ("ready-pod", reservation.id)


def test_a_claimed_pod_cannot_be_recycled(alice):
    now = timezone.now()
    pool = pool_of("h100")
    pod = pod_record(pool, "claimed-pod")
    pod.claim(reservation_for(alice, pool), now=now, actor="alice")
    with pytest.raises(IllegalTransition):
        pod.start_draining("age 13h > 12h", now=now, actor="reconciler")
    pod.refresh_from_db()
    assert pod.state == PodState.CLAIMED


def test_gone_pod_stays_gone():
    now = timezone.now()
    pod = pod_record(pool_of("h100"), "old-pod")
    pod.start_draining("surplus", now=now, actor="reconciler")
    pod.mark_gone("deleted", now=now, actor="watcher")
    for late_move in (
        lambda: pod.mark_ready(now=now, node_name="n", running_digest="sha256:1", actor="w"),
        lambda: pod.fail("late", now=now, actor="watcher"),
        lambda: pod.mark_gone("again", now=now, actor="watcher"),
    ):
        with pytest.raises(IllegalTransition, match="gone"):
            late_move()
