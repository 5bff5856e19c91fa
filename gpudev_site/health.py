"""Probes for Kubernetes: /healthz says the process answers, /readyz that its dependencies do.

Both views are async, so a hung dependency never occupies the thread the site's sync views
share. /readyz runs its checks side by side in a small thread pool and gives each at most
``CHECK_TIMEOUT`` seconds; the probes in deploy/ allow more than that. A check that hangs past
its time keeps its pool thread until it ends, and the pool is small, so a dependency that hangs
every check makes later checks time out rather than piling up threads.
"""

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import load_backend
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from pool import cluster

CHECK_TIMEOUT = 2.0
_ERROR_LENGTH = 300

logger = logging.getLogger(__name__)
_checks_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


@require_safe
async def healthz(request) -> HttpResponse:
    """Answer 200 while the process serves requests; touch nothing else."""
    return HttpResponse("ok", content_type="text/plain")


def check_database() -> None:
    """Run ``SELECT 1`` on a new connection made with the site's database settings.

    A connection of its own, not the thread's shared one: it can carry a connect timeout, and
    a probe should see whether the database takes connections now, not whether an old one lives.
    """
    settings_dict = dict(connections.settings[DEFAULT_DB_ALIAS])
    if settings_dict["ENGINE"] == "django.db.backends.postgresql":
        options = {**settings_dict.get("OPTIONS", {})}
        options["connect_timeout"] = math.ceil(CHECK_TIMEOUT)
        settings_dict["OPTIONS"] = options
    probe = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, "readyz")
    try:
        with probe.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        probe.close()


def check_redis() -> None:
    """PING the Redis server that carries Celery, the channel layer and the locks."""
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()


def check_kubernetes() -> None:
    """Ask the Kubernetes API server for its version (raises ClusterUnavailable)."""
    cluster.ping()


def _checks() -> dict:
    checks = {"database": check_database}
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    checks["kubernetes"] = check_kubernetes
    return checks


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= _ERROR_LENGTH else text[: _ERROR_LENGTH - 1] + "…"


@require_safe
async def readyz(request) -> JsonResponse:
    """Answer 200 when the database, Redis and the Kubernetes API all answer, else 503.

    The body lists every part as "ok" or its error, and names the failing parts.
    """
    loop = asyncio.get_running_loop()
    running = {name: loop.run_in_executor(_checks_pool, check) for name, check in _checks().items()}
    await asyncio.wait(running.values(), timeout=CHECK_TIMEOUT)
    results = {}
    for name, future in running.items():
        if not future.done():
            future.cancel()
            results[name] = f"timed out after {CHECK_TIMEOUT:g}s"
        elif future.exception() is not None:
            results[name] = _describe(future.exception())
        else:
            results[name] = "ok"
    failing = [name for name, result in results.items() if result != "ok"]
    if failing:
        logger.warning(
            "not ready: %s",
            "; ".join(f"{name}: {results[name]}" for name in failing),
            extra={"reason": "readyz"},
        )
        body = {"status": "unavailable", "failing": failing, "checks": results}
        return JsonResponse(body, status=503)
    return JsonResponse({"status": "ok", "checks": results})
