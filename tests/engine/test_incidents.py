"""The three incidents the product exists to prevent, replayed on clustersim.

Each test drives the real engine: reconcile ticks, spawn tasks on an in-process Celery worker,
the official kubernetes client against clustersim, boto3 against its ECR registry.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from kubernetes import client

from pool import cluster, images, reconciler
from pool.models import AuditEvent, PodRecord, PodState
from pool.orphans import clean_up, find_orphans
from pool.tasks import spawn_warm_pod
from reservations.models import DomainMapping, LeaseHolder
from reservations.naming import allocate_name, lease_warm_placeholder
from tests.factories import pod_record, pool_of, reservation_for
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class Ticker:
    """Reconcile ticks 30 s apart on the product's clock, letting the sim run in between."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.now = timezone.now()

    def tick(self) -> list[AuditEvent]:
        """Run one tick and return the recycles it made."""
        self.now += timedelta(seconds=30)
        before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        reconciler.reconcile(now=self.now)
        return list(AuditEvent.objects.filter(id__gt=before, action="pod_recycle"))

    def settle(self, pool, *, ready: int) -> None:
        """Run the sim until the pool has ``ready`` idle ready pods and nothing in flight."""

        def settled() -> bool:
            counts = PodRecord.objects.filter(pool=pool)
            in_flight = counts.filter(state__in=(PodState.SLOT, PodState.PENDING)).exists()
            return not in_flight and counts.idle_warm().count() == ready

        wait_for(
            lambda: not PodRecord.objects.filter(pool=pool, state=PodState.SLOT).exists(),
            what="spawn tasks to create their pods",
        )
        self.sim.advance_until(settled, max_seconds=600)


def cache_latest_on_every_node(sim, gpu_type: str) -> str:
    """Run a ``:latest`` pod (IfNotPresent) on each node of a type, as the old prepuller did;
    return the digest the nodes now hold under ``:latest``."""
    core = client.CoreV1Api(cluster.api_client())
    nodes = [
        node.metadata.name
        for node in core.list_node(label_selector=f"gpudev.io/gpu-type={gpu_type}").items
    ]
    for node in nodes:
        core.create_namespaced_pod(
            "gpudev",
            {
                "metadata": {"name": f"old-prepull-{node}"},
                "spec": {
                    "nodeName": node,
                    "containers": [
                        {
                            "name": "pull",
                            "image": f"{sim.image_repo}:latest",
                            "imagePullPolicy": "IfNotPresent",
                        }
                    ],
                },
            },
        )
    sim.advance_until(
        lambda: all(
            core.read_namespaced_pod(f"old-prepull-{node}", "gpudev").status.phase == "Running"
            for node in nodes
        ),
        max_seconds=300,
    )
    pod = core.read_namespaced_pod(f"old-prepull-{nodes[0]}", "gpudev")
    return pod.status.container_statuses[0].image_id.rpartition("@")[2]


def test_rebuild_moves_every_idle_warm_pod_to_the_new_digest_once(engine, alice):
    """PR #202: nodes that cached the old ``:latest`` cannot hold the pool on the old image."""
    sim, ticker = engine.sim, Ticker(engine.sim)
    pool = pool_of("h100", target=4)
    old_digest = cache_latest_on_every_node(sim, "h100")
    ticker.tick()
    ticker.settle(pool, ready=4)
    claimed = PodRecord.objects.filter(pool=pool).first()
    claimed.claim(reservation_for(alice, pool), now=ticker.now, actor="alice")
    assert set(PodRecord.objects.filter(pool=pool).values_list("running_digest", flat=True)) == {
        old_digest
    }

    new_digest, immutable_tag = engine.push_image()
    rotations_per_tick, rotated = [], []
    for _ in range(12):
        stale = [e for e in ticker.tick() if e.reason.startswith("stale digest")]
        rotations_per_tick.append(len(stale))
        rotated += [e.pod_name for e in stale]
        ticker.settle(pool, ready=4)  # the claimed pod no longer counts: the pool refills
        idle = PodRecord.objects.filter(pool=pool).idle_warm()
        if all(pod.running_digest == new_digest for pod in idle):
            break

    idle = list(PodRecord.objects.filter(pool=pool).idle_warm())
    assert len(idle) == 4
    assert {pod.running_digest for pod in idle} == {new_digest}
    assert {pod.image_ref for pod in idle} == {f"{sim.image_repo}:{immutable_tag}"}
    assert max(rotations_per_tick) == 1, "at most one rotation per pool per tick"
    assert len(rotated) == len(set(rotated)) == 3, "each stale pod recycled once, no thrash"
    claimed.refresh_from_db()
    assert claimed.state == PodState.CLAIMED
    assert claimed.running_digest == old_digest
    assert cluster.read_pod(claimed.name) is not None, "the claimed pod is never touched"


def test_nothing_rotates_while_the_registry_is_down(engine):
    sim, ticker = engine.sim, Ticker(engine.sim)
    pool = pool_of("h100", target=2)
    ticker.tick()
    ticker.settle(pool, ready=2)
    engine.push_image()
    sim.faults.registry_down = True
    for _ in range(3):
        assert ticker.tick() == []
    sim.faults.registry_down = False
    assert [e.reason[:12] for e in ticker.tick()] == ["stale digest"]


def test_orphaned_placeholders_are_found_and_cleaned_exactly(engine):
    """PR #199: 449 live warm mappings against 24 live warm pods; 425 are orphans."""
    now = timezone.now()
    pool = pool_of("h100", target=24)
    live = []
    for index in range(24):
        record = pod_record(pool, f"gpudev-h100-default-live{index:02d}")
        record.name_lease = lease_warm_placeholder(pool, record.name, now=now)
        record.save()
        live.append(record.name_lease.name)
    leaked = [
        lease_warm_placeholder(pool, f"gpudev-h100-default-gone{index:03d}", now=now).name
        for index in range(425)
    ]
    assert DomainMapping.objects.live(now).filter(holder=LeaseHolder.WARM).count() == 449

    # While leaked, a user asking for a leaked name is pushed to a suffix.
    taken = allocate_name(
        holder=LeaseHolder.RESERVATION,
        expires_at=now + timedelta(hours=1),
        now=now,
        requested=leaked[0],
    )
    assert taken.name == f"{leaked[0]}-2"
    taken.release(now=now)

    preview = find_orphans(now=now)
    assert sorted(o.name for o in preview) == sorted(leaked)
    result = clean_up([o.lease_id for o in preview], now=now, actor="olga")
    assert result.released == sorted(leaked)
    assert sorted(DomainMapping.objects.live(now).values_list("name", flat=True)) == sorted(live)
    assert AuditEvent.objects.filter(action="lease_cleanup", actor="olga").count() == 425
    again = allocate_name(
        holder=LeaseHolder.RESERVATION,
        expires_at=now + timedelta(hours=1),
        now=now,
        requested=leaked[0],
    )
    assert again.name == leaked[0], "the freed name is used as asked, no suffix"


def test_recycling_a_warm_pod_frees_pod_service_and_name_together(engine):
    ticker = Ticker(engine.sim)
    pool = pool_of("h100", target=1)
    ticker.tick()
    ticker.settle(pool, ready=1)
    record = PodRecord.objects.select_related("name_lease", "pool").get(pool=pool)
    name = record.name_lease.name
    assert (
        cluster.read_pod(record.name)["metadata"]["annotations"][cluster.ANNOTATION_NAME_LEASE]
        == name
    )

    reconciler.recycle_pod(record, reason="operator asked", now=ticker.now, actor="olga")

    assert not DomainMapping.objects.live(ticker.now).filter(name=name).exists()
    core = client.CoreV1Api(cluster.api_client())
    assert not core.list_namespaced_service(
        "gpudev", field_selector=f"metadata.name={cluster.ssh_service_name(record.name)}"
    ).items
    engine.sim.advance_until(lambda: cluster.read_pod(record.name) is None, max_seconds=120)
    reused = allocate_name(
        holder=LeaseHolder.RESERVATION,
        expires_at=ticker.now + timedelta(hours=1),
        now=ticker.now,
        requested=name,
    )
    assert reused.name == name


def _run_beats(until, *, beats: int = 2) -> None:
    """Tick from ``beats`` threads at once, every half second, until ``until()`` holds."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.is_set():
                reconciler.reconcile()
                stop.wait(0.5)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(beats)]
    for thread in threads:
        thread.start()
    try:
        wait_for(until, timeout=40, what="the pool to reach its target")
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _restart_with_slow_nodes(engine_factory, settings, *, spawn_timeout: float):
    """An empty h100 pool of 4 after a restart, on a cluster with no h100 node yet, where each
    new node takes 3 minutes to appear; the sim runs 60x, and the product's timeouts are scaled
    alike (POD_READY_TIMEOUT 300 s → 5 s)."""
    engine = engine_factory(speed=60, nodes={"h100": 0})
    engine.sim.set_provisioning("h100", delay=180, max_nodes=1)
    settings.POD_READY_TIMEOUT = 5
    settings.WARM_SPAWN_TIMEOUT = spawn_timeout
    settings.STUCK_SPAWN_CUTOFF = max(spawn_timeout, 6) + 1
    settings.SPAWN_BACKOFF_BASE = 1
    engine.background.start_worker()  # a second worker on the same queue
    return engine, pool_of("h100", target=4)


def test_pool_refills_after_a_restart_while_nodes_take_minutes(engine_factory, settings):
    """PR #671: with a spawn deadline above pod-ready, the pool reaches its target even though
    every spawn waits minutes for a node; two beats, two workers and redelivered tasks never
    spawn a slot twice."""
    _, pool = _restart_with_slow_nodes(engine_factory, settings, spawn_timeout=6)
    _run_beats(lambda: PodRecord.objects.filter(pool=pool).idle_warm().count() == 4)

    for slot in PodRecord.objects.filter(pool=pool):
        spawn_warm_pod.delay(slot.pk)  # a redelivered task finds its slot already spawned
    time.sleep(1)
    items, _ = cluster.list_our_pods()
    assert len([p for p in items if p["metadata"]["labels"]["gpudev.io/pool"] == pool.slug]) == 4
    assert AuditEvent.objects.filter(action="pod_spawn", pool=pool).count() == 4
    assert AuditEvent.objects.filter(action="pod_created", pool=pool).count() == 4
    assert not AuditEvent.objects.filter(action="pod_failed", pool=pool).exists()


def test_a_spawn_deadline_shorter_than_node_provisioning_fails_every_spawn(
    engine_factory, settings
):
    """The incident itself: a 30 s deadline (0.5 s here) cancels every spawn that has to wait
    for a new node, so the pool stays empty; start-up checks refuse such settings."""
    _, pool = _restart_with_slow_nodes(engine_factory, settings, spawn_timeout=0.5)
    reconciler.reconcile()
    failed = wait_for(
        lambda: AuditEvent.objects.filter(action="pod_failed", pool=pool).count() == 4,
        what="every spawn to fail",
    )
    assert failed
    assert PodRecord.objects.filter(pool=pool).idle_warm().count() == 0
    reasons = AuditEvent.objects.filter(action="pod_failed", pool=pool).values_list(
        "reason", flat=True
    )
    assert all("not ready after" in reason for reason in reasons)


def test_new_pods_and_the_prepuller_run_the_immutable_ref(engine):
    ticker = Ticker(engine.sim)
    pool = pool_of("h100", target=1)
    images.refresh_and_prepull(now=ticker.now)
    ticker.tick()
    ticker.settle(pool, ready=1)
    release = images.current_release()
    assert ":latest-" in release.immutable_ref
    pod = cluster.read_pod(PodRecord.objects.get(pool=pool).name)
    assert pod["spec"]["containers"][0]["image"] == release.immutable_ref
    prepuller = cluster.read_daemonset(images.PREPULLER_NAME)
    assert prepuller["spec"]["template"]["spec"]["initContainers"][0]["image"] == (
        release.immutable_ref
    )
    assert prepuller["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "25%"

    _, new_tag = engine.push_image()
    images.refresh_and_prepull(now=ticker.now)
    prepuller = cluster.read_daemonset(images.PREPULLER_NAME)
    assert prepuller["spec"]["template"]["spec"]["initContainers"][0]["image"] == (
        f"{engine.sim.image_repo}:{new_tag}"
    )
