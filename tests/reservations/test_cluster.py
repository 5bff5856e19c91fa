"""Reservations against a real engine: clustersim, the official client, a Celery worker, the
watcher, PostgreSQL. Each test says what a developer (or the cluster) would notice."""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pool import cluster, reconciler
from pool.models import PodKind, PodRecord, PodState
from reservations import claims
from reservations.expiry import expire_due
from reservations.models import DomainMapping, Reservation, ReservationStatus
from tests.factories import pool_of
from tests.live import wait_for
from tests.reservations.conftest import ED25519, add_key

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

# PostgreSQL's default max_connections (100) is shared with the worker, the watcher and other
# test runs, so at most this many of the concurrent requests hold a connection at once.
DB_CONCURRENCY = 40


def fill_warm_pool(engine, pool, ready: int) -> None:
    """Tick the reconciler and run the sim until ``pool`` has ``ready`` idle warm pods."""

    def filled() -> bool:
        return PodRecord.objects.filter(pool=pool).idle_warm().count() >= ready

    while not filled():
        reconciler.reconcile(now=timezone.now())
        wait_for(
            lambda: not PodRecord.objects.filter(pool=pool, state=PodState.SLOT).exists(),
            what="spawn tasks to create their pods",
        )
        engine.sim.advance_until(
            lambda: (
                filled() or not PodRecord.objects.filter(pool=pool, state=PodState.PENDING).exists()
            ),
            max_seconds=300,
        )


def request_for(gpu_type="h100", *, count=1, profile="default", minutes=120, name=""):
    return claims.ReservationRequest(
        pool=pool_of(gpu_type, profile),
        gpu_count=count,
        duration=timedelta(minutes=minutes),
        requested_name=name,
    )


def developer(name: str):
    user = get_user_model().objects.create_user(name, password=f"{name}-gpudev")
    add_key(user)
    return user


def service_exists(name: str) -> bool:
    try:
        client.CoreV1Api(cluster.api_client()).read_namespaced_service(
            cluster.ssh_service_name(name), "gpudev"
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def refreshed(reservation: Reservation) -> Reservation:
    reservation.refresh_from_db()
    return reservation


def until_status(engine, reservation: Reservation, *statuses: str, seconds: float = 300):
    engine.sim.advance_until(lambda: refreshed(reservation).status in statuses, seconds)
    return reservation


@pytest.fixture
def running(engine):
    """The engine with the watcher mirroring pods and nodes."""
    engine.start_watcher()
    wait_for(lambda: pool_of("h100").gpu_type.nodes.filter(ready=True).count() == 2)
    return engine


def test_hundred_concurrent_requests_share_ten_warm_pods_without_a_double_claim(running):
    pool = pool_of("h100", target=10)
    fill_warm_pool(running, pool, ready=10)
    users = [developer(f"dev{i:03d}") for i in range(100)]
    start, slots = threading.Barrier(len(users)), threading.BoundedSemaphore(DB_CONCURRENCY)
    made, errors = [], []

    def reserve_as(user) -> None:
        start.wait()
        try:
            with slots:
                made.append(claims.reserve(user, request_for(), now=timezone.now()))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve_as, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(made) == 100
    reservations = Reservation.objects.filter(pk__in=[r.pk for r in made])
    warm = reservations.filter(warm_claimed=True)
    assert warm.count() == 10
    assert set(warm.values_list("status", flat=True)) == {ReservationStatus.ACTIVE}
    others = reservations.filter(warm_claimed=False)
    assert set(others.values_list("status", flat=True)) <= {
        ReservationStatus.STARTING,
        ReservationStatus.QUEUED,
    }
    assert others.count() == 90
    claimed = PodRecord.objects.filter(pool=pool, state=PodState.CLAIMED)
    assert claimed.count() == 10
    assert set(claimed.values_list("reservation_id", flat=True)) == set(
        warm.values_list("pk", flat=True)
    ), "each warm pod went to exactly one reservation"
    assert len(set(warm.values_list("pod_name", flat=True))) == 10
    live = DomainMapping.objects.live(timezone.now()).filter(reservation__in=reservations)
    holders = list(live.values_list("reservation_id", flat=True))
    assert len(holders) == len(set(holders)), "no reservation holds two names"
    assert len(holders) == 10 + others.filter(status=ReservationStatus.STARTING).count()
    cold = PodRecord.objects.filter(kind=PodKind.RESERVATION).count()
    assert cold == others.filter(status=ReservationStatus.STARTING).count() <= 6


def test_warm_claim_stamps_host_label_user_and_keys_on_the_pod(running):
    pool = pool_of("h100", target=1)
    fill_warm_pool(running, pool, ready=1)
    alice = developer("alice")

    reservation = claims.reserve(alice, request_for(name="alice-box"), now=timezone.now())

    assert reservation.status == ReservationStatus.ACTIVE
    wait_for(lambda: refreshed(reservation).stamped_at, what="the claim to be stamped")
    pod = cluster.read_pod(reservation.pod_name)
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels[cluster.LABEL_WARM_STATE] == "claimed"
    assert labels[cluster.LABEL_KIND] == "warm"
    assert labels[cluster.LABEL_RESERVATION] == str(reservation.pk)
    assert annotations[cluster.ANNOTATION_HOSTLABEL] == f"gpu-dev-{str(reservation.pk)[:8]}"
    assert annotations[cluster.ANNOTATION_SSH_KEYS] == ED25519
    assert annotations[cluster.ANNOTATION_USER] == "alice"
    assert annotations[cluster.ANNOTATION_NAME_LEASE] == "alice-box"
    assert reservation.warning == ""


def test_a_key_added_later_reaches_the_running_pod(running):
    fill_warm_pool(running, pool_of("h100", target=1), ready=1)
    alice = developer("alice")
    reservation = claims.reserve(alice, request_for(), now=timezone.now())
    wait_for(lambda: refreshed(reservation).stamped_at, what="the claim to be stamped")
    from tests.reservations.conftest import ECDSA

    add_key(alice, ECDSA)
    claims.refresh_keys(alice)

    def keys_on_pod() -> str:
        pod = cluster.read_pod(reservation.pod_name)
        return pod["metadata"]["annotations"][cluster.ANNOTATION_SSH_KEYS]

    wait_for(lambda: keys_on_pod() == f"{ED25519}\n{ECDSA}", what="the new key on the pod")


def test_cold_start_shows_progress_and_activates_when_the_pod_is_ready(running):
    alice = developer("alice")
    reservation = claims.reserve(alice, request_for(count=2), now=timezone.now())
    assert reservation.status == ReservationStatus.STARTING

    record = wait_for(
        lambda: PodRecord.objects.filter(reservation=reservation, state=PodState.PENDING).first(),
        what="the cold pod to be created",
    )
    seen = set()

    def ready() -> bool:
        seen.add(PodRecord.objects.get(pk=record.pk).progress)
        return refreshed(reservation).status == ReservationStatus.ACTIVE

    running.sim.advance_until(ready, max_seconds=300)

    assert not reservation.warm_claimed
    assert reservation.expires_at == reservation.ready_at + timedelta(minutes=120)
    assert any(p.startswith("Scheduled on") or p == "ContainerCreating" for p in seen), seen
    pod = cluster.read_pod(record.name)
    assert pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["containers"][0]["image"] == record.image_ref
    wait_for(lambda: refreshed(reservation).stamped_at, what="the cold pod to be stamped")
    annotations = cluster.read_pod(record.name)["metadata"]["annotations"]
    assert annotations[cluster.ANNOTATION_HOSTLABEL] == reservation.host_label


def test_queue_order_holds_within_a_gpu_type(running):
    alice, bob, carol = developer("alice"), developer("bob"), developer("carol")
    wait_for(lambda: pool_of("a10g").gpu_type.nodes.filter(ready=True).exists())
    now = timezone.now()
    first = claims.reserve(alice, request_for("a10g", count=2), now=now)
    until_status(running, first, ReservationStatus.ACTIVE)
    wait_for(lambda: pool_of("a10g").gpu_type.nodes.get().gpus_used == 2)

    big = claims.reserve(bob, request_for("a10g", count=4), now=now + timedelta(seconds=1))
    small = claims.reserve(carol, request_for("a10g", count=1), now=now + timedelta(seconds=2))

    assert big.status == ReservationStatus.QUEUED, "4 GPUs do not fit beside the first 2"
    assert small.status == ReservationStatus.QUEUED, "1 GPU would fit, but bob asked first"
    claims.advance_queue(now=timezone.now())
    assert refreshed(small).status == ReservationStatus.QUEUED

    claims.cancel_reservation(first, now=timezone.now(), actor="alice")
    running.sim.advance_until(lambda: cluster.read_pod(first.pod_name) is None, 120)
    wait_for(lambda: pool_of("a10g").gpu_type.nodes.get().gpus_used == 0)
    claims.advance_queue(now=timezone.now())

    assert refreshed(big).status == ReservationStatus.STARTING
    assert refreshed(small).status == ReservationStatus.QUEUED


@pytest.mark.parametrize("ending", ["cancel", "expiry"])
def test_ending_frees_the_pod_its_service_and_its_name(running, ending):
    fill_warm_pool(running, pool_of("h100", target=1), ready=1)
    alice = developer("alice")
    reservation = claims.reserve(alice, request_for(minutes=30), now=timezone.now())
    pod_name = reservation.pod_name
    assert cluster.read_pod(pod_name) is not None
    assert service_exists(pod_name)

    if ending == "cancel":
        claims.cancel_reservation(reservation, now=timezone.now(), actor="alice")
    else:
        expire_due(now=timezone.now() + timedelta(minutes=31))

    assert refreshed(reservation).status in (
        ReservationStatus.CANCELLED,
        ReservationStatus.EXPIRED,
    )
    running.sim.advance_until(lambda: cluster.read_pod(pod_name) is None, max_seconds=120)
    assert not service_exists(pod_name)
    assert not DomainMapping.objects.live(timezone.now()).filter(reservation=reservation).exists()
    wait_for(
        lambda: PodRecord.objects.get(name=pod_name).state == PodState.GONE,
        what="the watcher to see the pod go",
    )


def test_a_vanished_pod_fails_its_reservation_and_frees_its_name(running):
    fill_warm_pool(running, pool_of("h100", target=1), ready=1)
    alice = developer("alice")
    reservation = claims.reserve(alice, request_for(), now=timezone.now())
    core = client.CoreV1Api(cluster.api_client())

    core.delete_namespaced_pod(reservation.pod_name, "gpudev", grace_period_seconds=0)
    running.sim.step(1)

    wait_for(
        lambda: refreshed(reservation).status == ReservationStatus.FAILED,
        what="the watcher to fail the reservation",
    )
    assert "disappeared" in reservation.failure_reason
    expire_due(now=timezone.now())
    assert not DomainMapping.objects.live(timezone.now()).filter(reservation=reservation).exists()
    assert not service_exists(reservation.pod_name)
