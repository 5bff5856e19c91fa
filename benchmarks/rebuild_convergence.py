"""Rebuild convergence on clustersim's ``seed`` preset (24 GPU nodes, a 27 GB image at 80 MB/s).

The scaled-up sibling of ``tests/engine/test_incidents.py``'s rebuild replay, on a stepped clock:

1. Every GPU node has cached the old image as ``:latest`` (the old prepuller's way); h100, h200
   and b200 pools are full of warm pods on that image, and one h100 pod is claimed by a user.
2. A rebuild is pushed (30 % of the bytes change, so a node holding the old image pulls ~8 GB,
   101 s). From then on the product runs as beat runs it: a reconcile tick every 20 s and the
   image task (registry, prepuller) every 60 s, each at a phase drawn per run; spawn tasks run
   on an in-process Celery worker over Redis.
3. **Converged** when every pool has its target of idle warm pods, all on the new digest, and
   nothing in flight. The bound the design promises: one pull time + one tick per pod of the
   largest pool (rotation replaces one pod per pool per tick).

The **naive** comparison runs the same cluster the way the reference system did: warm pods on
``:latest`` with ``imagePullPolicy: IfNotPresent``, and a rotation that each tick deletes one ready
pod per pool whose digest differs from the registry's and creates a replacement. It is counted
over the same sim time the product took, and over a longer horizon.

Scale: the number of warm pods, from 3 (1/1/1) over osdc's 7 (3/2/2) to 24 (9/8/7, a pod per
GPU node of the three types).
"""

import random
import time
from datetime import timedelta

FIGURE = "rebuild convergence"
FULL_SCALE = "preset seed · 24 warm pods (h100/h200/b200 9/8/7)"
UNIT = "sim s"
TICK_SECONDS = 20
IMAGE_TASK_SECONDS = 60
CHANGED_FRACTION = 0.3
NAIVE_HORIZON_FACTOR = 3
TARGETS = {0.125: (1, 1, 1), 0.3: (3, 2, 2), 1.0: (9, 8, 7)}
POOL_TYPES = ("h100", "h200", "b200")


def size(scale: float) -> dict[str, int]:
    targets = TARGETS[scale]
    return {"warm_pods": sum(targets), **dict(zip(POOL_TYPES, targets, strict=True))}


def run(scale: float, *, quick: bool = False) -> dict:
    """Converge ``runs`` rebuilds with the product, and one with the naive rotation."""
    targets = dict(zip(POOL_TYPES, TARGETS[scale], strict=True))
    # One run per step: a run takes a minute of real time at full scale (the 15-minute budget).
    runs = 1
    product = [converge_with_product(targets, seed=seed) for seed in range(1, runs + 1)]
    horizon = max(p["converged_after_s"] for p in product)
    naive = rotate_naively(targets, seed=1, checkpoints=(horizon, horizon * NAIVE_HORIZON_FACTOR))
    return {
        "size": size(scale),
        "samples": {"ours": [p["converged_after_s"] for p in product]},
        "counts": {
            "bound_s": product[0]["bound_s"],
            "pull_s": product[0]["pull_s"],
            "ours": product,
            "naive": naive,
        },
    }


# --- The product ------------------------------------------------------------------------


def converge_with_product(targets: dict[str, int], *, seed: int) -> dict:
    """Run one rebuild through the product; return how long it took and what it recycled."""
    from benchmarks import harness
    from clustersim import ClusterSim
    from gpudev_site.celery import app
    from gpudev_site.embedded import Background
    from pool import images
    from pool.models import AuditEvent, PodRecord, Pool

    harness.reset_database()
    app.control.purge()
    rng = random.Random(seed)
    with ClusterSim("seed", seed=seed) as sim, harness.product_on(sim):
        background = Background()
        # Each spawn task holds a worker thread until its pod is ready, and the clock only moves
        # between ticks here, so every spawn of a tick needs a thread of its own.
        background.start_worker(concurrency=2 * sum(targets.values()) + 8)
        try:
            old_digest = cache_latest_on_every_node(sim)
            pools = _pools(targets)
            images.refresh_and_prepull(now=sim.now())
            claimed = _fill(sim, pools)
            new_digest, _ = sim.push_image(changed_fraction=CHANGED_FRACTION)
            pushed = sim.now()
            last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
            tick_phase = rng.uniform(0, TICK_SECONDS)
            image_phase = rng.uniform(0, IMAGE_TASK_SECONDS)
            elapsed = 0
            # When the rotation happened: the ticks that recycled pods, and when every GPU node
            # had the new digest cached (the prepull done).
            recycling_ticks, seen, prepulled_at = [], set(), None
            while not _converged(pools, new_digest):
                if elapsed > 3600:
                    raise RuntimeError("no convergence within a sim hour")
                sim.step(1)
                elapsed += 1
                if (elapsed - image_phase) % IMAGE_TASK_SECONDS < 1:
                    images.refresh_and_prepull(now=sim.now())
                if (elapsed - tick_phase) % TICK_SECONDS < 1:
                    _tick(sim)
                    names = set(
                        AuditEvent.objects.filter(
                            id__gt=last_event or 0, action="pod_recycle"
                        ).values_list("pod_name", flat=True)
                    )
                    if names - seen:
                        recycling_ticks.append({"at_s": elapsed, "pods": sorted(names - seen)})
                        seen |= names
                if prepulled_at is None and _prepulled(new_digest):
                    prepulled_at = elapsed
                _let_spawns_catch_up(sim)
            took = (sim.now() - pushed).total_seconds()
            recycles = list(
                AuditEvent.objects.filter(id__gt=last_event or 0, action="pod_recycle").values_list(
                    "pod_name", "reason"
                )
            )
            claimed.refresh_from_db()
        finally:
            background.stop()
    per_pod: dict[str, int] = {}
    for name, _ in recycles:
        per_pod[name] = per_pod.get(name, 0) + 1
    stale_at_push = sum(targets.values())
    pull_s = sim.preset.image_size_gb * 1e9 * CHANGED_FRACTION / (sim.preset.bandwidth_mb_s * 1e6)
    return {
        "seed": seed,
        "converged_after_s": took,
        "bound_s": round(pull_s + max(targets.values()) * TICK_SECONDS),
        "pull_s": round(pull_s),
        "recycles": len(recycles),
        "stale_pods_at_push": stale_at_push,
        "pods_recycled_more_than_once": sum(count > 1 for count in per_pod.values()),
        "claimed_pod_untouched": claimed.state == "claimed"
        and claimed.running_digest == old_digest,
        "idle_on_new_digest": PodRecord.objects.filter(pool__in=pools, running_digest=new_digest)
        .idle_warm()
        .count(),
        "pools": [str(pool) for pool in Pool.objects.filter(pk__in=[p.pk for p in pools])],
        "pool_slugs": {pool.gpu_type.name: pool.slug for pool in pools},
        "tick_phase_s": round(tick_phase, 1),
        "prepulled_on_every_node_at_s": prepulled_at,
        "recycling_ticks": recycling_ticks,
    }


def _prepulled(digest: str) -> bool:
    """Whether every node of the three GPU types has ``digest`` cached, as the product saw it."""
    from pool.models import NodeRecord

    nodes = NodeRecord.objects.filter(gpu_type__name__in=POOL_TYPES)
    return nodes.exists() and not nodes.exclude(cached_digests__contains=[digest]).exists()


def _pools(targets: dict[str, int]) -> list:
    from pool.models import Pool

    pools = []
    for kind, target in targets.items():
        pool = Pool.objects.select_related("gpu_type").get(gpu_type__name=kind, profile="default")
        pool.target, pool.gpus_per_pod = target, 1
        pool.save()
        pools.append(pool)
    return pools


def _fill(sim, pools):
    """Tick until every pool is at target on the old image; claim one h100 pod for a user."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from pool.models import PodRecord
    from reservations.models import Reservation

    _tick(sim)
    for _ in range(120):
        if (
            all(
                PodRecord.objects.filter(pool=pool).idle_warm().count() == pool.target
                for pool in pools
            )
            and not PodRecord.objects.filter(state__in=("slot", "pending")).exists()
        ):
            break
        sim.step(5)
        _let_spawns_catch_up(sim)
        _tick(sim)
    else:
        raise RuntimeError("the pools did not fill before the rebuild")
    h100 = pools[0]
    pod = PodRecord.objects.filter(pool=h100).idle_warm().first()
    user = User.objects.create_user("alice")
    reservation = Reservation.objects.create(
        user=user, pool=h100, gpu_count=1, duration=timedelta(hours=8)
    )
    pod.claim(reservation, now=timezone.now(), actor="alice")
    _tick(sim)  # the claimed pod no longer counts: the pool spawns its replacement
    for _ in range(120):
        if PodRecord.objects.filter(pool=h100).idle_warm().count() == h100.target and not (
            PodRecord.objects.filter(state__in=("slot", "pending")).exists()
        ):
            return pod
        sim.step(5)
        _let_spawns_catch_up(sim)
    raise RuntimeError("the h100 pool did not refill after the claim")


def _tick(sim) -> None:
    """One reconcile tick at the sim's time; wait until its spawn tasks created their pods."""
    from pool import reconciler
    from pool.models import PodRecord, PodState

    reconciler.reconcile(now=sim.now())
    deadline = time.monotonic() + 20
    while PodRecord.objects.filter(state=PodState.SLOT).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("spawn tasks did not create their pods")
        time.sleep(0.01)


def _let_spawns_catch_up(sim) -> None:
    """Wait (real time) until every spawn whose pod the sim has made ready has recorded it."""
    from pool.models import PodRecord, PodState

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = PodRecord.objects.filter(state=PodState.PENDING).values_list("name", flat=True)
        if not any(_ready_in_sim(sim, name) for name in pending):
            return
        time.sleep(0.01)


def _ready_in_sim(sim, name: str) -> bool:
    from clustersim.resources import PODS
    from pool import mirror

    with sim.lock:
        pod = sim.store.get(PODS, "gpudev", name)
    return pod is not None and mirror.is_ready(pod)


def _converged(pools, digest: str) -> bool:
    from pool.models import PodRecord, PodState

    if PodRecord.objects.filter(
        pool__in=pools, state__in=(PodState.SLOT, PodState.PENDING)
    ).exists():
        return False
    return all(
        list(
            PodRecord.objects.filter(pool=pool).idle_warm().values_list("running_digest", flat=True)
        )
        == [digest] * pool.target
        for pool in pools
    )


# --- Both worlds ----------------------------------------------------------------------------


def cache_latest_on_every_node(sim) -> str:
    """Run a ``:latest`` pod (IfNotPresent) on every GPU node, as the old prepuller did; return
    the digest the nodes now hold under ``:latest``."""
    from clustersim.resources import NODES, PODS

    with sim.lock:
        nodes = [
            node["metadata"]["name"]
            for node in sim.store.objects(NODES)
            if node["metadata"]["labels"]["gpudev.io/gpu-type"] in POOL_TYPES
        ]
    core = _core(sim)
    for node in nodes:
        core.create_namespaced_pod(
            "gpudev",
            {
                "metadata": {"name": f"old-prepull-{node}", "labels": {"app": "old-prepull"}},
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

    def running() -> bool:
        with sim.lock:
            return all(
                (sim.store.get(PODS, "gpudev", f"old-prepull-{node}") or {})
                .get("status", {})
                .get("phase")
                == "Running"
                for node in nodes
            )

    sim.advance_until(running, max_seconds=900, interval=5)
    with sim.lock:
        pod = sim.store.get(PODS, "gpudev", f"old-prepull-{nodes[0]}")
    return pod["status"]["containerStatuses"][0]["imageID"].rpartition("@")[2]


def _core(sim):
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=sim.kubeconfig_path))


# --- The naive rotation -----------------------------------------------------------------------


def rotate_naively(targets: dict[str, int], *, seed: int, checkpoints: tuple[float, ...]) -> dict:
    """Run the reference system's rotation after a rebuild; count stale pods and recycles at
    each checkpoint (sim seconds after the push)."""
    from clustersim import ClusterSim

    rng = random.Random(seed)
    with ClusterSim("seed", seed=seed) as sim:
        core = _core(sim)
        cache_latest_on_every_node(sim)
        counter = {"made": 0}
        for kind, target in targets.items():
            for _ in range(target):
                _naive_pod(core, sim, kind, counter)
        sim.advance_until(lambda: _naive_all_ready(sim, targets), max_seconds=900, interval=5)
        new_digest, _ = sim.push_image(changed_fraction=CHANGED_FRACTION)
        tick_phase = rng.uniform(0, TICK_SECONDS)
        recycles, report, elapsed = 0, [], 0
        for checkpoint in sorted(checkpoints):
            while elapsed < checkpoint:
                sim.step(1)
                elapsed += 1
                if (elapsed - tick_phase) % TICK_SECONDS < 1:
                    recycles += _naive_tick(core, sim, targets, new_digest, counter)
            pods = _naive_pods(sim)
            report.append(
                {
                    "after_s": round(checkpoint),
                    "recycles": recycles,
                    "stale_ready_pods": sum(
                        1
                        for pod in pods
                        if _digest(pod) and _digest(pod) != new_digest and _ready(pod)
                    ),
                    "ready_on_new_digest": sum(
                        1 for pod in pods if _digest(pod) == new_digest and _ready(pod)
                    ),
                    "warm_pods": sum(targets.values()),
                }
            )
    return {"checkpoints": report}


def _naive_pod(core, sim, kind: str, counter: dict) -> None:
    counter["made"] += 1
    core.create_namespaced_pod(
        "gpudev",
        {
            "metadata": {
                "name": f"naive-{kind}-{counter['made']:04d}",
                "labels": {"naive-pool": kind},
            },
            "spec": {
                "nodeSelector": {"gpudev.io/gpu-type": kind},
                "containers": [
                    {
                        "name": "devserver",
                        "image": f"{sim.image_repo}:latest",
                        "imagePullPolicy": "IfNotPresent",
                        "resources": {
                            "requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"},
                            "limits": {"nvidia.com/gpu": "1"},
                        },
                    }
                ],
            },
        },
    )


def _naive_tick(core, sim, targets: dict[str, int], registry_digest: str, counter: dict) -> int:
    """Per pool: delete one ready pod whose digest is not the registry's; top up to target."""
    recycled = 0
    pods = _naive_pods(sim)
    for kind, target in targets.items():
        mine = [
            p
            for p in pods
            if p["metadata"]["labels"].get("naive-pool") == kind
            and not p["metadata"].get("deletionTimestamp")
        ]
        stale = [p for p in mine if _ready(p) and _digest(p) and _digest(p) != registry_digest]
        if stale:
            core.delete_namespaced_pod(stale[0]["metadata"]["name"], "gpudev")
            mine.remove(stale[0])
            recycled += 1
        for _ in range(target - len(mine)):
            _naive_pod(core, sim, kind, counter)
    return recycled


def _naive_pods(sim) -> list[dict]:
    from clustersim.resources import PODS

    with sim.lock:
        return [
            pod
            for pod in sim.store.objects(PODS, "gpudev")
            if "naive-pool" in pod["metadata"].get("labels", {})
        ]


def _naive_all_ready(sim, targets: dict[str, int]) -> bool:
    return sum(_ready(pod) for pod in _naive_pods(sim)) == sum(targets.values())


def _ready(pod: dict) -> bool:
    from pool import mirror

    return mirror.is_ready(pod) and not pod["metadata"].get("deletionTimestamp")


def _digest(pod: dict) -> str:
    from pool import mirror

    return mirror.running_digest(pod)
