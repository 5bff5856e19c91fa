"""Server time of the ops pods page with 5,000 pods.

``GET /ops/pods/`` through Django's test client in this process, signed in as an operator:
middleware, session, the view's queries and the template, without the network. The pods are
spread over ten pools; one in five is claimed by a reservation with its own name lease, and
one in three runs an old digest (so the stale badge and filter have work). Two pages are
timed: the first page unfiltered, and page 10 of ready stale pods (a filter that has to skip
rows).
"""

from datetime import timedelta

FIGURE = "pods page server time"
FULL_SCALE = "5,000 pods"
TARGET_P95_S = 0.150
PAGES = {
    "first page": "/ops/pods/",
    "page 10, ready and stale": "/ops/pods/?state=ready&stale=1&page=10",
}


def size(scale: float) -> dict[str, int]:
    return {"pods": round(5000 * scale)}


def run(scale: float, *, quick: bool = False) -> dict:
    """Time the pods page at ``scale`` x 5,000 pods."""
    from django.contrib.auth.models import User
    from django.test import Client

    from benchmarks import harness

    counts = size(scale)
    harness.reset_database()
    fill_pods(counts["pods"])
    harness.analyse()
    operator = User.objects.create_user("olga", is_staff=True)
    browser = Client(HTTP_HOST="localhost")
    browser.force_login(operator)
    harness.settle_heap()
    repeats = 10 if quick else 40
    samples, queries, profiles = {}, {}, {}
    for label, url in PAGES.items():

        def get(url=url) -> None:
            response = browser.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code}")

        samples[label] = harness.timed(get, repeats=repeats, warmup=2)
        queries[label] = harness.count_queries(get)
        found = sorted((harness.query_profile(get) for _ in range(5)), key=lambda p: p["total_s"])
        profiles[label] = found[2]
    return {
        "size": counts,
        "samples": samples,
        "counts": {"sql_queries": queries, "profile": profiles},
        "memory": harness.memory_reading(),
    }


def fill_pods(count: int) -> None:
    """Write ``count`` pods over ten pools, with releases, reservations and name leases."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.utils import timezone

    from benchmarks import harness
    from pool.models import ImageRelease, PodKind, PodRecord, PodState, Pool
    from reservations.models import LeaseHolder, Reservation, ReservationStatus

    now = timezone.now()
    old, new = "sha256:" + "ab12" * 16, "sha256:" + "cd34" * 16
    for digest, current, age in ((old, False, 600), (new, True, 9)):
        ImageRelease.objects.create(
            repo=settings.IMAGE_REPOSITORY,
            tag="latest",
            digest=digest,
            immutable_ref=f"{settings.IMAGE_REPOSITORY}:latest-{digest[7:15]}",
            first_seen_at=now - timedelta(minutes=age),
            is_current=current,
        )
    pools = list(Pool.objects.select_related("gpu_type").exclude(gpu_type__gpus_per_node=0)[:10])
    users = User.objects.bulk_create(User(username=f"dev{i:03d}") for i in range(50))
    harness.insert_leases(
        count,
        start=0,
        created_at=now,
        expires_at=now + timedelta(hours=14),
        released_at=None,
        holder=LeaseHolder.WARM,
    )
    records, reservations = [], []
    for index in range(count):
        pool = pools[index % len(pools)]
        claimed = index % 5 == 4
        created = now - timedelta(seconds=count - index)
        reservation = None
        if claimed:
            reservation = Reservation(
                user=users[index % len(users)],
                pool=pool,
                gpu_count=1,
                duration=timedelta(hours=8),
                status=ReservationStatus.ACTIVE,
                created_at=created,
                ready_at=created,
                expires_at=created + timedelta(hours=8),
                pod_name=f"gpudev-{pool.slug}-{index:06d}",
                warm_claimed=True,
            )
            reservations.append(reservation)
        records.append(
            PodRecord(
                pool=pool,
                name=f"gpudev-{pool.slug}-{index:06d}",
                kind=PodKind.WARM,
                state=PodState.CLAIMED if claimed else PodState.READY,
                reservation=reservation,
                running_digest=old if index % 3 == 0 else new,
                node_name=f"{pool.gpu_type.name}-{index % 100 + 1}",
                created_at=created,
                ready_at=created,
                name_lease_id=index + 1,
            )
        )
    Reservation.objects.bulk_create(reservations, batch_size=2000)
    PodRecord.objects.bulk_create(records, batch_size=2000)
    per_pool = count // len(pools)
    Pool.objects.filter(pk__in=[p.pk for p in pools]).update(target=per_pool * 4 // 5)
