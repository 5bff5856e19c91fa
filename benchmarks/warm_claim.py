"""Warm claim: 50 users POST a reservation at the same instant; 10 ready warm pods wait.

The site runs under uvicorn in its own process on PostgreSQL and Redis, as a web replica does.
Each user has a signed-in session and an SSH key; each round all of them POST ``/reserve/`` for
one h100 GPU at once (aiohttp, one connection each). The first ten get a warm pod: their POST
returns with the reservation already active, its name moved to it, in one transaction (the
pod is stamped by a Celery task after commit, which is not part of the figure). The rest find no
warm pod and no node with room, and are queued. Timed: from sending the POST to its answer.
"""

import asyncio
import time
from datetime import timedelta

FIGURE = "warm claim, POST to active"
FULL_SCALE = "10 ready warm pods · 50 concurrent users"
TARGET_P95_S = 0.150
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzjCLSMcRPByZewKuweKU5RnPQRZaL2a03p1VI9XFBP bench"


def size(scale: float) -> dict[str, int]:
    return {"warm_pods": max(round(10 * scale), 1), "users": max(round(50 * scale), 1)}


def run(scale: float, *, quick: bool = False) -> dict:
    """Run rounds of simultaneous reservations at ``scale`` of 10 pods / 50 users."""
    from django.contrib.auth.models import User

    from benchmarks import harness
    from pool.models import Pool
    from reservations.models import SshKey
    from reservations.sshkeys import parse_public_key

    counts = size(scale)
    harness.reset_database()
    _current_release()
    pool = Pool.objects.select_related("gpu_type").get(gpu_type__name="h100", profile="default")
    Pool.objects.filter(pk=pool.pk).update(target=counts["warm_pods"], gpus_per_pod=1)
    users = [User.objects.create_user(f"dev{i:03d}") for i in range(counts["users"])]
    fingerprint = parse_public_key(KEY).fingerprint
    SshKey.objects.bulk_create(
        SshKey(user=user, title="laptop", public_key=KEY, fingerprint=fingerprint) for user in users
    )
    sessions = [harness.session_cookies(user) for user in users]
    rounds = 2 if quick else 3
    warm, queued, every, held = [], [], [], []
    server_memory = {}
    for _ in range(rounds):
        # A fresh web process per round: under ASGI each request runs in a thread of its own
        # with its own database connection, which stays open (idle) after the request; two
        # bursts in one process would exhaust PostgreSQL's connections (see the notes).
        with harness.serve_site() as (url, server_pid):
            _prepare_round(pool, counts["warm_pods"])
            asyncio.run(_all_at_once(url, sessions[:1], gpu_type="l4"))  # warm-up: load code
            _prepare_round(pool, counts["warm_pods"])
            answers = asyncio.run(_all_at_once(url, sessions))
            held.append(_connections_held())
            server_memory = harness.process_memory_of(server_pid)
        statuses = _statuses([reservation for _, reservation in answers])
        for seconds, reservation in answers:
            every.append(seconds)
            (warm if statuses.get(reservation) == "active" else queued).append(seconds)
        if sum(status == "active" for status in statuses.values()) != counts["warm_pods"]:
            raise RuntimeError(f"expected {counts['warm_pods']} warm claims: {statuses}")
    alone = _one_at_a_time(pool, sessions[0], counts["warm_pods"], batches=1 if quick else 3)
    profile = _profile_one_claim(pool, users[0], counts["warm_pods"])
    return {
        "size": counts,
        "samples": {
            "warm claims": warm,
            "every POST": every,
            "queued": queued,
            "warm claim, one user at a time": alone,
        },
        "counts": {
            "rounds": rounds,
            "idle_connections_after_burst": max(held),
            "one_claim_in_process": profile,
        },
        "memory": {**harness.memory_reading(), "web_server": server_memory},
    }


def _one_at_a_time(pool, session: dict, warm_pods: int, *, batches: int) -> list[float]:
    """Time warm claims made one after another by one user: the uncontended cost."""
    from benchmarks import harness

    seconds = []
    with harness.serve_site() as (url, _):
        asyncio.run(_all_at_once(url, [session], gpu_type="l4"))
        for _ in range(batches):
            _prepare_round(pool, warm_pods)
            for _ in range(warm_pods):
                ((took, _),) = asyncio.run(_all_at_once(url, [session]))
                seconds.append(took)
    return seconds


def _profile_one_claim(pool, user, warm_pods: int) -> dict:
    """One warm claim through Django's test client in this process (no server, no network):
    its SQL queries and how much of its time they take."""
    from django.test import Client

    from benchmarks import harness

    browser = Client(HTTP_HOST="localhost")
    browser.force_login(user)
    form = {"gpu_type": "h100", "gpu_count": "1", "profile": "default", "duration": "120"}

    def post(gpu_type: str = "h100") -> None:
        response = browser.post("/reserve/", {**form, "gpu_type": gpu_type})
        if response.status_code != 302:
            raise RuntimeError(f"POST /reserve/ answered {response.status_code}")

    _prepare_round(pool, warm_pods)
    post("l4")  # warm-up: load code (queued, no l4 pods)
    _prepare_round(pool, warm_pods)
    return harness.query_profile(post)


def _connections_held() -> int:
    """PostgreSQL connections to the benchmark database other than this process's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _current_release() -> None:
    from django.conf import settings

    from pool.models import ImageRelease

    digest = "sha256:" + "cd34" * 16
    ImageRelease.objects.create(
        repo=settings.IMAGE_REPOSITORY,
        tag="latest",
        digest=digest,
        immutable_ref=f"{settings.IMAGE_REPOSITORY}:latest-{digest[7:15]}",
        is_current=True,
    )


def _prepare_round(pool, warm_pods: int) -> None:
    """Forget the last round's reservations; put ``warm_pods`` ready idle pods in the pool."""
    from django.utils import timezone

    from pool.models import PodKind, PodRecord, PodState
    from reservations.models import DomainMapping, Reservation
    from reservations.naming import lease_warm_placeholder

    PodRecord.objects.all().delete()
    Reservation.objects.all().delete()
    DomainMapping.objects.all().delete()
    now = timezone.now()
    for index in range(warm_pods):
        name = f"gpudev-{pool.slug}-{index:06d}"
        PodRecord.objects.create(
            name=name,
            pool=pool,
            kind=PodKind.WARM,
            state=PodState.READY,
            node_name=f"h100-{index + 1}",
            running_digest="sha256:" + "cd34" * 16,
            created_at=now - timedelta(minutes=5),
            ready_at=now - timedelta(minutes=4),
            name_lease=lease_warm_placeholder(pool, name, now=now),
        )


async def _all_at_once(
    url: str, sessions: list[dict], *, gpu_type: str = "h100"
) -> list[tuple[float, str]]:
    """POST a reservation from every session at once; return (seconds, reservation id) each."""
    import aiohttp

    form = {"gpu_type": gpu_type, "gpu_count": "1", "profile": "default", "duration": "120"}
    clients = [
        aiohttp.ClientSession(cookies=cookies, connector=aiohttp.TCPConnector(limit=1))
        for cookies in sessions
    ]
    try:
        # Open every connection first, so the timed POSTs do not include connecting.
        await asyncio.gather(*(c.get(f"{url}/healthz") for c in clients))
        start = asyncio.Event()

        async def reserve(client, cookies) -> tuple[float, str]:
            await start.wait()
            began = time.perf_counter()
            async with client.post(
                f"{url}/reserve/",
                data=form,
                headers={"X-CSRFToken": cookies["csrftoken"]},
                allow_redirects=False,
            ) as response:
                await response.read()
                seconds = time.perf_counter() - began
                if response.status != 302:
                    raise RuntimeError(f"POST /reserve/ answered {response.status}")
                return seconds, response.headers["Location"].rpartition("#reservation-")[2]

        tasks = [
            asyncio.create_task(reserve(c, cookies))
            for c, cookies in zip(clients, sessions, strict=True)
        ]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def _statuses(reservation_ids: list[str]) -> dict[str, str]:
    from reservations.models import Reservation

    return {
        str(pk): status
        for pk, status in Reservation.objects.filter(pk__in=reservation_ids).values_list(
            "pk", "status"
        )
    }
