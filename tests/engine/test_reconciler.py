"""Reconcile ticks on clustersim: stranded pods, failed spawns and their backoff."""

from datetime import timedelta

import pytest
from django.utils import timezone
from kubernetes import client

from pool import cluster, reconciler
from pool.models import AuditEvent, PodRecord, Pool
from tests.factories import pool_of
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_pod_labelled_ours_without_a_record_is_deleted_after_the_grace_period(engine, settings):
    settings.STRANDED_POD_GRACE = 120
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(
        "gpudev",
        {
            "metadata": {"name": "left-behind", "labels": {cluster.MANAGED_BY: "gpudev"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    reconciler.reconcile(now=timezone.now() + timedelta(seconds=60))
    assert cluster.read_pod("left-behind") is not None, "inside its grace period"

    reconciler.reconcile(now=timezone.now() + timedelta(seconds=180))
    event = AuditEvent.objects.get(action="pod_delete_stranded")
    assert event.pod_name == "left-behind"
    assert event.reason.startswith("stranded: labelled as ours, no live record")
    engine.sim.advance_until(lambda: cluster.read_pod("left-behind") is None, max_seconds=60)


def test_ticks_between_resyncs_read_only_the_database(engine, settings):
    """A stranded pod is found by the tick that re-lists the pods, not by the cheap ticks
    in between, which plan from the records the watcher keeps."""
    settings.STRANDED_POD_GRACE = 0
    settings.RECONCILE_RESYNC_INTERVAL = 300
    start = timezone.now()
    reconciler.reconcile(now=start, resync=True)
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(
        "gpudev",
        {
            "metadata": {"name": "left-behind", "labels": {cluster.MANAGED_BY: "gpudev"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )

    reconciler.reconcile(now=start + timedelta(seconds=60))
    reconciler.reconcile(now=start + timedelta(seconds=240))
    assert not AuditEvent.objects.filter(action="pod_delete_stranded").exists()

    reconciler.reconcile(now=start + timedelta(seconds=301))
    assert AuditEvent.objects.get(action="pod_delete_stranded").pod_name == "left-behind"


def test_a_spawn_that_cannot_pull_fails_and_its_pool_backs_off(engine, settings):
    settings.POD_READY_TIMEOUT = 1
    settings.WARM_SPAWN_TIMEOUT = 2
    h100_nodes = [
        n["metadata"]["name"] for n in cluster.list_nodes()[0] if "h100" in n["metadata"]["name"]
    ]
    engine.sim.faults.fail_pulls_on(h100_nodes)
    pool = pool_of("h100", target=1)
    reconciler.reconcile()
    failed = wait_for(lambda: AuditEvent.objects.filter(action="pod_failed", pool=pool).first())
    assert "spawn failed: not ready after" in failed.reason
    wait_for(lambda: Pool.objects.get(pk=pool.pk).spawn_backoff_until is not None)
    record = PodRecord.objects.get(pool=pool)
    wait_for(lambda: PodRecord.objects.get(pk=record.pk).state in ("draining", "gone"))
    record.name_lease.refresh_from_db()
    assert record.name_lease.released_at is not None, "the failed spawn's name is freed"
    assert reconciler.reconcile() == "nothing to do", "the pool holds while backing off"
