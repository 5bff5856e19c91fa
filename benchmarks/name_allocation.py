"""Allocate an SSH name with 1,000,000 leases in the table.

* **ours**: ``reservations.naming.allocate_name`` for a warm placeholder, as a spawn does.
* **naive**: the reference system's way: load every unexpired lease name, then try a random
  catalogue name, ``-2``, ``-3`` … until one is free, and insert it.

The main state holds 1,000,000 live leases (unreleased, unexpired), the worst case for both:
every catalogue name is taken ~50 times over, so ours takes its suffix path and the naive way
loads a million names. At full scale a second state is measured too, the usual one: the same
million rows, but only 10,000 live (half the catalogue) and the rest released history.
"""

import random
from datetime import timedelta

FIGURE = "name allocation"
FULL_SCALE = "1,000,000 live leases"
TARGET_P95_S = 0.005
LIVE_IN_HISTORY_STATE = 10_000


def size(scale: float) -> dict[str, int]:
    return {"leases": round(1_000_000 * scale)}


def run(scale: float, *, quick: bool = False) -> dict:
    """Time ours and the naive allocation over ``scale`` x 1,000,000 live leases."""
    from django.utils import timezone

    from benchmarks import harness

    counts = size(scale)
    harness.reset_database()
    now = timezone.now()
    harness.insert_leases(
        counts["leases"],
        start=0,
        created_at=now - timedelta(hours=1),
        expires_at=now + timedelta(days=7),
        released_at=None,
    )
    harness.analyse()
    harness.settle_heap()
    repeats = 50 if quick else 100
    naive_repeats = 3 if quick else (3 if scale >= 1 else 10)
    samples = {
        "ours": harness.timed(lambda: allocate(now), repeats=repeats, warmup=5),
        "naive": harness.timed(lambda: naive_allocate(now), repeats=naive_repeats),
    }
    queries = harness.count_queries(lambda: allocate(now))
    profiles = [harness.query_profile(lambda: allocate(now)) for _ in range(5)]
    naive_queries = harness.count_queries(lambda: naive_allocate(now))
    memory = harness.memory_reading()
    result = {
        "size": counts,
        "samples": samples,
        "counts": {
            "sql_queries": {"ours": queries, "naive": naive_queries},
            # Where one allocation's time goes: the median of five profiled allocations.
            "profile": sorted(profiles, key=lambda profile: profile["total_s"])[2],
        },
        "memory": memory,
    }
    if scale >= 1 and not quick:
        _make_most_history(now)
        result["samples"]["ours, 10,000 live + 990,000 released"] = harness.timed(
            lambda: allocate(now), repeats=repeats, warmup=5
        )
        result["samples"]["naive, 10,000 live + 990,000 released"] = harness.timed(
            lambda: naive_allocate(now), repeats=5
        )
    return result


def allocate(now) -> str:
    from reservations.models import LeaseHolder
    from reservations.naming import allocate_name

    lease = allocate_name(
        holder=LeaseHolder.WARM,
        expires_at=now + timedelta(hours=14),
        now=now,
        pod_name="gpudev-h100-default-bench",
    )
    return lease.name


def naive_allocate(now) -> str:
    """Load every unexpired lease's name, then walk base, base-2, … to the first free one."""
    from reservations.models import DomainMapping, LeaseHolder
    from reservations.naming import CATALOGUE_SIZE, catalogue_name

    taken = set(
        DomainMapping.objects.filter(released_at__isnull=True, expires_at__gt=now).values_list(
            "name", flat=True
        )
    )
    base = catalogue_name(random.randrange(CATALOGUE_SIZE))
    name, suffix = base, 1
    while name in taken:
        suffix += 1
        name = f"{base}-{suffix}"
    DomainMapping.objects.create(
        name=name,
        base=base,
        suffix=suffix,
        from_catalogue=True,
        holder=LeaseHolder.WARM,
        pod_name="gpudev-h100-default-bench",
        created_at=now,
        expires_at=now + timedelta(hours=14),
    )
    return name


def _make_most_history(now) -> None:
    """Replace the leases with LIVE_IN_HISTORY_STATE live ones and the rest released."""
    from benchmarks import harness

    total = size(1)["leases"]
    harness.reset_database()
    harness.insert_leases(
        LIVE_IN_HISTORY_STATE,
        start=0,
        created_at=now - timedelta(hours=1),
        expires_at=now + timedelta(days=7),
        released_at=None,
    )
    harness.insert_leases(
        total - LIVE_IN_HISTORY_STATE,
        start=LIVE_IN_HISTORY_STATE,
        created_at=now - timedelta(days=30),
        expires_at=now - timedelta(days=29),
        released_at=now - timedelta(days=29),
    )
    harness.analyse()
