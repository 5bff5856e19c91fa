"""One reconcile tick over every pool, against clustersim, at 1,000 nodes / 5,000 pods.

The state: ten pools (one per simulated node type), 80 % of each pool's pods idle and warm at
target, 20 % claimed by reservations, every pod running the current release; 100,000 name leases
(one live per pod, the rest released history). The pods are copies of one pod per pool that
clustersim really ran, so the tick lists what a real list returns.

* **steady**: ``reconcile(now=…)`` on the settled state, where nothing is to be done: what a
  tick costs every ``RECONCILE_INTERVAL`` (20 s), planning from the database the watcher keeps.
* **steady, re-listing the pods**: the same tick when it also re-lists every pod from the API
  (the backstop for missed watch events and the stranded-pod sweep), once every
  ``RECONCILE_RESYNC_INTERVAL`` (300 s).
* **busy**: a rebuild was just pushed, so the tick records the new release (and seeds a prepull
  row per node), rotates one stale pod per pool and writes one spawn slot per pool. The state is
  put back after each busy tick, so every sample does the same work.
* **naive**: the per-pod way a simpler reconciler works: list the pods, then for each one ask the
  registry for the tag's digest and read its row (``naive_tick`` below).

Kubernetes calls are counted by the API client the product uses (a counting subclass handed to
``pool.cluster``), registry calls by boto3's event hooks, SQL queries by Django's
``CaptureQueriesContext``.
"""

import time
from collections import Counter
from datetime import timedelta

FIGURE = "reconcile tick, all pools"
FULL_SCALE = "1,000 nodes · 5,000 pods · 100,000 name leases"
TARGET_P95_S = 0.300
POOL_TYPES = (
    "t4",
    "l4",
    "a10g",
    "a100",
    "h100",
    "h200",
    "b200",
    "h100-mig-1g",
    "cpu-x86",
    "cpu-arm",
)
CLAIMED_EVERY = 5  # one pod in five serves a reservation


def size(scale: float) -> dict[str, int]:
    return {
        "nodes": round(1000 * scale),
        "pods": round(5000 * scale),
        "leases": round(100_000 * scale),
    }


def run(scale: float, *, quick: bool = False) -> dict:
    """Measure steady, busy and naive ticks at ``scale`` of 1,000 nodes / 5,000 pods."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from benchmarks import harness
    from clustersim import ClusterSim
    from clustersim.presets import Preset
    from pool import reconciler

    counts = size(scale)
    harness.reset_database()
    per_type = max(counts["nodes"] // len(POOL_TYPES), 1)
    preset = Preset(
        "bench-tick",
        nodes=dict.fromkeys(POOL_TYPES, per_type),
        image_size_gb=1,
        bandwidth_mb_s=1000,
    )
    repeats = 5 if quick else 9
    with ClusterSim(preset, seed=1) as sim, harness.product_on(sim) as api:
        registry_calls = harness.RegistryCalls()
        state = _build(sim, counts)
        harness.analyse()

        def measured(call) -> dict:
            api.calls.clear()
            api.seconds = 0.0
            registry_before = registry_calls.count
            with CaptureQueriesContext(connection) as queries:
                profile = harness.query_profile(call)
            return {
                "sql_queries": len(queries),
                "kubernetes_calls": sum(api.calls.values()),
                "kubernetes_calls_by_path": dict(api.calls),
                "registry_calls": registry_calls.count - registry_before,
                # Where this tick's time went (the Kubernetes time includes reading the body).
                "total_s": profile["total_s"],
                "sql_s": profile["sql_s"],
                "kubernetes_s": api.seconds,
                "slowest_queries": profile["slowest"],
            }

        def steady(*, resync: bool = False) -> None:
            summary = reconciler.reconcile(now=timezone.now(), resync=resync)
            assert summary == "nothing to do", summary

        def relisting() -> None:
            steady(resync=True)

        steady_counts = measured(steady)
        steady_s = harness.timed(steady, repeats=repeats)
        relist_counts = measured(relisting)
        relist_s = harness.timed(relisting, repeats=max(repeats // 2, 3))

        busy_s, busy_counts = [], None
        for _ in range(max(repeats // 3, 3)):
            sim.push_image()
            started = timezone.now()
            began = time.perf_counter()
            found = measured(lambda at=started: reconciler.reconcile(now=at, resync=False))
            busy_s.append(time.perf_counter() - began)
            busy_counts = busy_counts or found
            _undo_busy_tick(sim, state)

        # The naive tick asks the registry once per pod, so it takes seconds to minutes; it is
        # timed and counted in the same runs, without a warm-up (the steady ticks warmed up).
        # Only at full scale: it takes minutes there (the 15-minute budget).
        naive_repeats = 1 if scale >= 1 else 0
        naive_s, naive_counts = [], None
        for _ in range(naive_repeats):
            began = time.perf_counter()
            found = measured(lambda: naive_tick(now=timezone.now()))
            naive_s.append(time.perf_counter() - began)
            naive_counts = naive_counts or found
        memory = harness.memory_reading()
    return {
        "size": counts,
        "samples": {
            "steady": steady_s,
            "steady, re-listing the pods": relist_s,
            "busy": busy_s,
            "naive": naive_s,
        },
        "counts": {
            "steady": steady_counts,
            "steady, re-listing the pods": relist_counts,
            "busy": busy_counts,
            "naive": naive_counts,
        },
        "memory": memory,
    }


def naive_tick(*, now) -> int:
    """Reconcile pod by pod, as a simpler system does: list the pods, then for each pod ask the
    registry where the tag points and read the pod's row. Return how many pods are stale."""
    from django.conf import settings

    from pool import cluster, mirror, registry
    from pool.models import PodKind, PodRecord, PodState

    items, _ = cluster.list_our_pods()
    stale = 0
    for pod in items:
        found = registry.current_digest(settings.IMAGE_REPOSITORY, settings.IMAGE_TAG)
        record = (
            PodRecord.objects.select_related("pool", "reservation")
            .filter(name=pod["metadata"]["name"])
            .first()
        )
        if record is None or found is None:
            continue
        mirror.observe_pod(pod, now=now, record=record)
        if (
            record.kind == PodKind.WARM
            and record.state == PodState.READY
            and record.reservation_id is None
            and mirror.running_digest(pod) != found.digest
        ):
            stale += 1
    return stale


def _build(sim, counts: dict[str, int]) -> dict:
    """Write the settled state: nodes, pools at target, pods, reservations and leases."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from benchmarks import harness
    from clustersim.resources import NODES
    from pool import images, podspec
    from pool.models import GpuType, NodeRecord, PodKind, PodRecord, PodState, Pool
    from reservations.models import LeaseHolder, Reservation, ReservationStatus

    now = timezone.now()
    release, _ = images.refresh_release(now=now)
    pools = list(
        Pool.objects.select_related("gpu_type").filter(
            gpu_type__name__in=POOL_TYPES, profile="default"
        )
    )
    for pool in pools:
        pool.gpus_per_pod = 1 if pool.gpu_type.gpus_per_node else 0
    # One pod per pool really runs in clustersim; the others are copies of it.
    templates = {}
    for pool in pools:
        name = f"gpudev-{pool.slug}-000000"
        manifest = podspec.devserver_pod(
            name=name,
            pool=pool,
            kind=PodKind.WARM,
            image_ref=release.immutable_ref,
            gpu_count=pool.gpus_per_pod,
            annotations={},
        )
        from pool import cluster

        cluster.create_pod(manifest)
        templates[pool.pk] = name
    with sim.lock:
        nodes_by_type: dict[str, list[str]] = {}
        for node in sim.store.objects(NODES):
            kind = node["metadata"]["labels"]["gpudev.io/gpu-type"]
            nodes_by_type.setdefault(kind, []).append(node["metadata"]["name"])
    sim.advance_until(lambda: _all_ready(templates.values()), max_seconds=120)
    from clustersim.resources import PODS

    with sim.lock:
        stored = {pk: sim.store.get(PODS, "gpudev", name) for pk, name in templates.items()}
    digest = release.digest

    users = User.objects.bulk_create(User(username=f"dev{i:03d}") for i in range(100))
    per_pool = max(counts["pods"] // len(pools), 1)
    claimed_count = per_pool // CLAIMED_EVERY
    warm_count = per_pool - claimed_count
    total_warm, total_claimed = warm_count * len(pools), claimed_count * len(pools)
    harness.insert_leases(
        total_warm,
        start=0,
        created_at=now,
        expires_at=now + timedelta(hours=14),
        released_at=None,
        holder=LeaseHolder.WARM,
    )
    harness.insert_leases(
        total_claimed,
        start=total_warm,
        created_at=now,
        expires_at=now + timedelta(hours=10),
        released_at=None,
        holder=LeaseHolder.RESERVATION,
    )
    history = counts["leases"] - total_warm - total_claimed
    if history > 0:
        harness.insert_leases(
            history,
            start=total_warm + total_claimed,
            created_at=now - timedelta(days=30),
            expires_at=now - timedelta(days=29),
            released_at=now - timedelta(days=29),
        )

    records, reservations = [], []
    warm_lease, claimed_lease = 1, total_warm + 1
    with sim.lock:
        for pool in pools:
            nodes = nodes_by_type[pool.gpu_type.name]
            template = stored[pool.pk]
            for index in range(per_pool):
                name = templates[pool.pk] if index == 0 else f"gpudev-{pool.slug}-{index:06d}"
                node = template["spec"]["nodeName"] if index == 0 else nodes[index % len(nodes)]
                claimed = index % CLAIMED_EVERY == CLAIMED_EVERY - 1
                created = now - timedelta(seconds=30 + index)
                reservation = None
                if claimed:
                    reservation = Reservation(
                        user=users[len(reservations) % len(users)],
                        pool=pool,
                        gpu_count=pool.gpus_per_pod,
                        duration=timedelta(hours=8),
                        status=ReservationStatus.ACTIVE,
                        created_at=created,
                        ready_at=created,
                        expires_at=created + timedelta(hours=8),
                        pod_name=name,
                        warm_claimed=True,
                    )
                    reservations.append(reservation)
                    lease_id, claimed_lease = claimed_lease, claimed_lease + 1
                else:
                    lease_id, warm_lease = warm_lease, warm_lease + 1
                records.append(
                    PodRecord(
                        name=name,
                        pool=pool,
                        kind=PodKind.WARM,
                        state=PodState.CLAIMED if claimed else PodState.READY,
                        node_name=node,
                        image_ref=release.immutable_ref,
                        running_digest=digest,
                        created_at=created,
                        pod_created_at=created,
                        ready_at=created,
                        claimed_at=created if claimed else None,
                        reservation=reservation,
                        name_lease_id=lease_id,
                    )
                )
                if index:
                    labels = {"gpudev.io/warm-state": "claimed" if claimed else "idle"}
                    harness.copy_pod(sim, template, name=name, node=node, labels=labels)
    Reservation.objects.bulk_create(reservations, batch_size=2000)
    PodRecord.objects.bulk_create(records, batch_size=2000)
    for pool in pools:
        pool.target = warm_count
    Pool.objects.bulk_update(pools, ["target", "gpus_per_pod"])

    types = {kind.name: kind for kind in GpuType.objects.all()}
    NodeRecord.objects.bulk_create(
        NodeRecord(
            name=node,
            gpu_type=types[kind],
            gpus_allocatable=types[kind].gpus_per_node,
            cached_digests=[digest],
            ready=True,
        )
        for kind, nodes in nodes_by_type.items()
        for node in nodes
    )
    originals = {}
    with sim.lock:
        for record in records:
            originals[record.name] = sim.store.get(PODS, "gpudev", record.name)
    return {"originals": originals}


def _all_ready(names) -> bool:
    from pool import cluster, mirror

    return all(mirror.is_ready(cluster.read_pod(name) or {}) for name in names)


def _undo_busy_tick(sim, state: dict) -> None:
    """Put back what a busy tick changed: drop its spawn slots, un-drain the rotated pods and
    their names, and restore their pods in the sim (still terminating on a stopped clock)."""
    from clustersim.resources import PODS
    from pool.models import PodRecord, PodState
    from reservations.models import DomainMapping

    PodRecord.objects.filter(state=PodState.SLOT).delete()
    drained = list(PodRecord.objects.filter(state=PodState.DRAINING))
    DomainMapping.objects.filter(pk__in=[r.name_lease_id for r in drained]).update(released_at=None)
    PodRecord.objects.filter(pk__in=[r.pk for r in drained]).update(
        state=PodState.READY, ended_at=None
    )
    with sim.lock:
        for record in drained:
            original = state["originals"][record.name]
            current = sim.store.get(PODS, "gpudev", record.name)
            if current is None:
                sim.store.create(PODS, dict(original))
            else:
                restored = dict(original)
                restored["metadata"] = {
                    **original["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                }
                sim.store.update(PODS, restored)


def summary_counts(found: dict) -> Counter:
    return Counter(found)
