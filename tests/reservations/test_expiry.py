"""The expiry sweep: warnings at 30, 15 and 5 minutes, once each; failed reservations freed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pool.models import PodKind, PodState
from reservations import cards
from reservations.expiry import expire_due, release_failed, warn_expiring
from reservations.models import DomainMapping, LeaseHolder, ReservationStatus
from reservations.naming import allocate_name
from tests.factories import pod_record, pool_of, reservation_for

pytestmark = pytest.mark.django_db


def active(user, *, minutes_left: float, now):
    reservation = reservation_for(user, pool_of("h100"), hours=minutes_left / 60)
    reservation.activate(now=now, pod_name="p", warm=False)
    return reservation


def test_each_warning_is_sent_once_as_its_threshold_is_crossed(alice):
    now = timezone.now()
    reservation = active(alice, minutes_left=40, now=now)
    sent = []
    for minute in range(0, 40):
        if warn_expiring(now=now + timedelta(minutes=minute)):
            reservation.refresh_from_db()
            sent.append((minute, reservation.expiry_warned))
    assert sent == [(10, 30), (25, 15), (35, 5)]


def test_an_extension_re_arms_the_warnings(alice):
    now = timezone.now()
    reservation = active(alice, minutes_left=20, now=now)
    assert warn_expiring(now=now) == 1
    reservation.extend(timedelta(hours=1), actor="alice")
    reservation.refresh_from_db()
    assert reservation.expiry_warned is None
    assert warn_expiring(now=now) == 0
    assert warn_expiring(now=now + timedelta(minutes=51)) == 1


def test_card_shows_the_banner_with_one_click_extend_inside_30_minutes(alice):
    now = timezone.now()
    reservation = active(alice, minutes_left=12, now=now)
    html = cards.render_card(cards.card_for(alice, reservation.pk, now))
    assert "Expires in less than 15 minutes" in html
    assert 'name="minutes" value="60"' in html
    later = active(alice, minutes_left=90, now=now)
    assert "Expires in less than" not in cards.render_card(cards.card_for(alice, later.pk, now))


def test_failed_reservation_gives_back_its_pod_and_name(alice):
    now = timezone.now()
    pool = pool_of("h100")
    reservation = reservation_for(alice, pool)
    lease = allocate_name(
        holder=LeaseHolder.RESERVATION,
        expires_at=now + timedelta(hours=50),
        now=now,
        reservation=reservation,
    )
    pod = pod_record(
        pool,
        "gpudev-h100-default-cold01",
        kind=PodKind.RESERVATION,
        state=PodState.FAILED,
        reservation=reservation,
        name_lease=lease,
    )
    reservation.fail("pod failed: Error", now=now)

    assert release_failed(now=now) == 1

    pod.refresh_from_db()
    lease.refresh_from_db()
    assert pod.state == PodState.DRAINING
    assert lease.released_at == now
    assert release_failed(now=now) == 0, "nothing left to free"


def test_sweep_expires_and_cancels_what_is_due(alice, settings):
    now = timezone.now()
    due = active(alice, minutes_left=10, now=now - timedelta(minutes=11))
    stale = reservation_for(alice, pool_of("h100"), created_at=now - timedelta(hours=49))
    summary = expire_due(now=now)
    assert "expired 1, cancelled 1 queued" in summary
    due.refresh_from_db()
    stale.refresh_from_db()
    assert (due.status, stale.status) == (ReservationStatus.EXPIRED, ReservationStatus.CANCELLED)
    assert not DomainMapping.objects.live(now).exists()


def test_a_cold_start_stuck_past_its_timeout_fails_saying_where_it_stuck(alice, settings):
    settings.COLD_START_TIMEOUT = 3600
    now = timezone.now()
    pool = pool_of("h100")
    stuck = reservation_for(alice, pool, created_at=now - timedelta(minutes=61))
    stuck.start("gpudev-cold-1")
    pod_record(
        pool,
        "gpudev-cold-1",
        state=PodState.PENDING,
        kind=PodKind.RESERVATION,
        reservation=stuck,
        progress="Unschedulable: 0/3 nodes have free nvidia.com/gpu",
    )
    recent = reservation_for(alice, pool, created_at=now - timedelta(minutes=59))
    recent.start("gpudev-cold-2")

    expire_due(now=now)

    stuck.refresh_from_db()
    recent.refresh_from_db()
    assert stuck.status == ReservationStatus.FAILED
    assert stuck.failure_reason == (
        "not ready after 60 minutes (last seen: Unschedulable: 0/3 nodes have free nvidia.com/gpu)"
    )
    assert recent.status == ReservationStatus.STARTING
