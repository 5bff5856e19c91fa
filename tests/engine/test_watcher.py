"""The watcher keeps the mirror in step with clustersim, re-lists when it must, and hands over."""

from datetime import timedelta

import pytest
from django.utils import timezone
from kubernetes import client

from pool import cluster, images, reconciler
from pool.models import ImageRelease, NodeRecord, PodRecord, PodState, PrepullPhase
from pool.watcher import LeaderElection
from tests.factories import pool_of
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def watch_while_stepping(sim, condition, *, max_seconds: int = 300) -> None:
    """Step the sim a second at a time, giving the watcher a moment to catch up after each."""
    for _ in range(max_seconds):
        if wait_for_briefly(condition):
            return
        sim.step(1)
    raise AssertionError(f"not met within {max_seconds} sim-seconds")


def wait_for_briefly(condition) -> bool:
    try:
        wait_for(condition, timeout=0.2)
    except AssertionError:
        return False
    return True


def test_nodes_are_mirrored_with_their_gpu_type_and_gpus(engine):
    engine.start_watcher()
    names = {node["metadata"]["name"] for node in cluster.list_nodes()[0]}
    wait_for(lambda: set(NodeRecord.objects.values_list("name", flat=True)) == names)
    h100 = NodeRecord.objects.filter(gpu_type__name="h100")
    assert h100.count() == 2
    assert {node.gpus_allocatable for node in h100} == {8}
    assert all(node.ready for node in h100)

    (added,) = engine.sim.add_nodes("h100")
    wait_for(lambda: NodeRecord.objects.filter(name=added, gpu_type__name="h100").exists())


def test_a_pod_deleted_behind_our_back_is_marked_gone_and_replaced(engine):
    engine.start_watcher()
    pool = pool_of("h100", target=1)
    reconciler.reconcile()
    engine.sim.advance_until(
        lambda: PodRecord.objects.filter(pool=pool, state=PodState.READY).exists(), 300
    )
    record = PodRecord.objects.get(pool=pool)
    wait_for(lambda: NodeRecord.objects.get(name=record.node_name).gpus_used == 1)

    client.CoreV1Api(cluster.api_client()).delete_namespaced_pod(
        record.name, "gpudev", grace_period_seconds=0
    )
    wait_for(lambda: PodRecord.objects.get(pk=record.pk).state == PodState.GONE)
    wait_for(lambda: NodeRecord.objects.get(name=record.node_name).gpus_used == 0)
    reconciler.reconcile()
    wait_for(lambda: PodRecord.objects.filter(pool=pool).exclude(pk=record.pk).exists())


def test_prepuller_progress_is_mirrored_per_node_until_every_node_holds_the_image(engine):
    engine.start_watcher()
    wait_for(lambda: NodeRecord.objects.count() == 4)
    images.refresh_and_prepull(now=timezone.now())
    release = images.current_release()
    watch_while_stepping(engine.sim, lambda: release.prepulls.filter(phase=PrepullPhase.PULLING))
    watch_while_stepping(
        engine.sim, lambda: release.prepulls.filter(phase=PrepullPhase.DONE).count() == 4
    )
    assert images.prepull_summary(release)["done"] == 4
    assert all(status.took is not None for status in release.prepulls.all())
    watch_while_stepping(
        engine.sim,
        lambda: ImageRelease.objects.get(pk=release.pk).prepuller_status.get("numberReady") == 4,
    )


def test_a_watch_from_an_expired_version_is_refused_so_the_watcher_relists(engine_factory):
    engine = engine_factory(watch_history=5)
    _, version = cluster.list_nodes()
    engine.sim.add_nodes("cpu-x86", 10)
    with pytest.raises(cluster.WatchExpired):
        list(cluster.watch_nodes(version, timeout_seconds=2))


def test_the_mirror_converges_after_watch_streams_are_cut(engine_factory):
    engine = engine_factory(watch_history=5)
    engine.start_watcher()
    wait_for(lambda: NodeRecord.objects.count() == 4)
    for _ in range(3):
        engine.sim.faults.cut_watches()
        engine.sim.add_nodes("cpu-x86", 4)
    names = {node["metadata"]["name"] for node in cluster.list_nodes()[0]}
    wait_for(lambda: set(NodeRecord.objects.values_list("name", flat=True)) == names)


def test_only_one_watcher_leads_and_a_standby_takes_over_when_it_stops(engine):
    first = engine.background.start_watcher("first", lease_seconds=2, renew_seconds=0.2)
    wait_for(first.leading.is_set)
    second = engine.background.start_watcher("second", lease_seconds=2, renew_seconds=0.2)
    assert not second.leading.wait(1), "a standby must not lead while the leader renews"
    first.stop()
    wait_for(second.leading.is_set, what="the standby to take over")
    assert cluster.read_lease("gpudev-watcher")["spec"]["holderIdentity"] == "second"


def test_a_lease_whose_holder_stopped_renewing_is_taken_after_it_expires(engine):
    now = timezone.now()
    leader, standby = LeaderElection("leader", lease_seconds=15), LeaderElection("standby")
    assert leader.try_acquire(now)
    assert not standby.try_acquire(now + timedelta(seconds=10))
    assert leader.try_acquire(now + timedelta(seconds=12))
    assert not standby.try_acquire(now + timedelta(seconds=20))
    assert standby.try_acquire(now + timedelta(seconds=28))
    assert not leader.try_acquire(now + timedelta(seconds=29))
    assert cluster.read_lease("gpudev-watcher")["spec"]["holderIdentity"] == "standby"
