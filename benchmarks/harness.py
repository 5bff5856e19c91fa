"""What the benchmarks share: Django on the benchmark settings, a clean database, timings,
memory readings, call counters, and fast ways to build large states.

Large states are written straight into PostgreSQL (``INSERT … SELECT generate_series``) and into
clustersim's store (copies of one pod that clustersim really ran), because spawning 5,000 pods
through Celery or inserting a million leases one ORM call at a time would measure the set-up,
not the product.
"""

import contextlib
import copy
import gc
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from urllib.parse import urlsplit

import boto3
from kubernetes import client

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "clustersim",
    "AWS_SECRET_ACCESS_KEY": "clustersim",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Tables that hold what migrations seed or Django owns; everything else is emptied per run.
_NAMED = re.compile(r"/(pods|services|daemonsets|leases|nodes)/[^/]+")
_KEPT_TABLES = {"django_migrations", "django_content_type", "auth_permission", "pool_gputype"}


def setup_django() -> None:
    """Configure Django with ``benchmarks.settings`` (PostgreSQL, Redis) and boto3's fake keys."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    for name, value in AWS_ENV.items():
        os.environ.setdefault(name, value)
    import django

    django.setup()


def reset_database() -> None:
    """Empty every table but the seeded GPU types, and give each type its default pool back."""
    from django.db import connection

    from pool.models import GpuType, Pool

    tables = [t for t in connection.introspection.table_names() if t not in _KEPT_TABLES]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    Pool.objects.bulk_create(
        Pool(gpu_type=kind, profile="default", gpus_per_pod=1 if kind.gpus_per_node else 0)
        for kind in GpuType.objects.all()
    )


def analyse() -> None:
    """Refresh the planner's statistics after a bulk load, as autovacuum would shortly."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# --- Timing ---------------------------------------------------------------------------------


def timed(call: Callable[[], object], *, repeats: int, warmup: int = 1) -> list[float]:
    """Return the wall seconds of ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def count_queries(call: Callable[[], object]) -> int:
    """Return how many SQL queries one ``call()`` runs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        call()
    return len(queries)


def query_profile(call: Callable[[], object]) -> dict:
    """Run ``call()`` once and time each SQL query it runs (wall time, this process's view).

    Returns the request's total seconds, the queries' total, and the queries slowest first
    (seconds and the statement's first 160 characters), so a report can say where time went.
    """
    from django.db import connection

    queries: list[tuple[float, str]] = []

    def timing(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append((time.perf_counter() - began, " ".join(str(sql).split())[:160]))

    started = time.perf_counter()
    with connection.execute_wrapper(timing):
        call()
    total = time.perf_counter() - started
    queries.sort(reverse=True)
    return {
        "total_s": total,
        "sql_s": sum(seconds for seconds, _ in queries),
        "queries": len(queries),
        "slowest": [{"s": seconds, "sql": sql} for seconds, sql in queries[:3]],
    }


def settle_heap() -> None:
    """Collect, then exempt everything alive now (the simulated cluster, the set-up's rows)
    from later collections, as if it lived in another process, as it does in production."""
    gc.collect()
    gc.freeze()


# --- Memory ---------------------------------------------------------------------------------


def _status_mb(pid: int | str) -> dict[str, float]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def process_memory() -> dict[str, float]:
    """This process's resident set now and at its peak, in MB."""
    return _status_mb("self")


def postgres_backend_memory() -> dict[str, float] | None:
    """The resident set of this process's PostgreSQL backend, in MB (None if not readable).

    ``RssAnon`` is the backend's private memory; ``VmRSS`` also counts the shared buffers it
    touched, which all backends share.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        return _status_mb(pid)
    except OSError:
        return None


def memory_reading() -> dict:
    return {"python": process_memory(), "postgres_backend": postgres_backend_memory()}


# --- Counting what a tick asks of the cluster and the registry ------------------------------


class CountingApiClient(client.ApiClient):
    """The official client, counting each API request it makes by method and path."""

    def __init__(self, configuration: client.Configuration) -> None:
        super().__init__(configuration)
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0  # wall time spent in API requests (sending, waiting, reading)

    def call_api(self, method, url, *args, **kwargs):
        path = _NAMED.sub(r"/\1/{name}", urlsplit(url).path)
        self.calls[f"{method} {path}"] += 1
        began = time.perf_counter()
        try:
            return super().call_api(method, url, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began


class RegistryCalls:
    """Count the ECR API calls boto3 makes in this process (the product makes a client a call)."""

    def __init__(self) -> None:
        self.count = 0
        boto3._get_default_session().events.register("before-call.ecr", self._seen)

    def _seen(self, **kwargs) -> None:
        self.count += 1


@contextlib.contextmanager
def product_on(sim) -> Iterator[CountingApiClient]:
    """Point the product at ``sim`` and yield the (counting) API client it will use.

    ``pool.cluster`` builds one client per kubeconfig and keeps it; the benchmark hands it a
    counting one built from the same configuration, so the product's own calls are counted
    without changing any of its code.
    """
    from django.test.utils import override_settings

    from gpudev_site.embedded import clustersim_settings
    from pool import cluster

    with override_settings(**clustersim_settings(sim)):
        configured = cluster._build_client(sim.kubeconfig_path)
        counting = CountingApiClient(configured.configuration)
        with cluster._clients_lock:
            cluster._clients[sim.kubeconfig_path] = counting
        try:
            yield counting
        finally:
            with cluster._clients_lock:
                cluster._clients.pop(sim.kubeconfig_path, None)


# --- Building large states ------------------------------------------------------------------


def insert_leases(
    count: int,
    *,
    start: int,
    created_at: datetime,
    expires_at: datetime,
    released_at: datetime | None,
    holder: str = "warm",
) -> None:
    """Insert ``count`` name leases numbered from ``start``: catalogue names, then ``-2`` … .

    Lease ``i`` is catalogue name ``i % catalogue size`` with suffix ``i // size + 1``, so
    leases with distinct numbers never share a name.
    """
    from django.db import connection

    from reservations.naming import CATALOGUE_SIZE, catalogue_name

    catalogue = [catalogue_name(i) for i in range(CATALOGUE_SIZE)]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH catalogue AS (
                SELECT name, ordinality - 1 AS position
                FROM unnest(%(catalogue)s::text[]) WITH ORDINALITY AS c(name)
            )
            INSERT INTO reservations_domainmapping
                (name, base, suffix, from_catalogue, holder, pod_name,
                 created_at, expires_at, released_at)
            SELECT CASE WHEN suffix = 1 THEN base ELSE base || '-' || suffix END,
                   base, suffix, true, %(holder)s, '', %(created)s, %(expires)s, %(released)s
            FROM (
                SELECT catalogue.name AS base, (i / %(size)s + 1)::int AS suffix
                FROM generate_series(%(start)s::bigint, %(stop)s::bigint - 1) AS i
                JOIN catalogue ON catalogue.position = i %% %(size)s
                ORDER BY i
            ) AS leases
            """,
            {
                "holder": holder,
                "created": created_at,
                "expires": expires_at,
                "released": released_at,
                "catalogue": catalogue,
                "size": len(catalogue),
                "start": start,
                "stop": start + count,
            },
        )


def run_one_pod(sim, manifest: dict, *, max_seconds: float = 600) -> dict:
    """Create ``manifest`` through the API, step the sim until it is ready; return it as stored."""
    from clustersim.resources import PODS
    from pool import cluster, mirror

    cluster.create_pod(manifest)
    name = manifest["metadata"]["name"]
    sim.advance_until(lambda: mirror.is_ready(cluster.read_pod(name) or {}), max_seconds)
    with sim.lock:
        return copy.deepcopy(sim.store.get(PODS, manifest["metadata"]["namespace"], name))


def copy_pod(sim, template: dict, *, name: str, node: str, labels: dict[str, str]) -> dict:
    """Write a copy of a running ``template`` pod into the sim's store (the caller holds the
    sim's lock); return the copy."""
    from clustersim.resources import PODS
    from pool import cluster

    pod = copy.deepcopy(template)
    metadata = pod["metadata"]
    metadata["name"] = name
    metadata["uid"] = sim.rest.new_uid()
    metadata["labels"] = {**metadata["labels"], **labels, cluster.LABEL_POD: name}
    metadata.pop("resourceVersion", None)
    pod["spec"]["nodeName"] = node
    pod["spec"]["hostname"] = name
    return sim.store.create(PODS, pod)


# --- The site, served as production serves it -------------------------------------------------


@contextlib.contextmanager
def serve_site() -> Iterator[tuple[str, int]]:
    """Run the ASGI site under uvicorn in its own process; yield its URL and process id."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "gpudev_site.asgi:application",
            "--host=127.0.0.1",
            f"--port={port}",
            "--lifespan=off",
            "--log-level=warning",
            "--no-access-log",
            "--timeout-graceful-shutdown=5",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.settings"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def process_memory_of(pid: int) -> dict[str, float]:
    """Another process's resident set now and at its peak, in MB."""
    return _status_mb(pid)


def session_cookies(user) -> dict[str, str]:
    """Cookies of a signed-in session for ``user``, with a CSRF secret to echo in a header."""
    from django.middleware.csrf import _get_new_csrf_string
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    return {"sessionid": browser.cookies["sessionid"].value, "csrftoken": _get_new_csrf_string()}
