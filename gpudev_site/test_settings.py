"""Settings for the test suite: real PostgreSQL and Redis whenever they answer.

The suite runs on PostgreSQL and Redis when they are reachable (``TEST_DATABASE_URL`` and
``TEST_REDIS_URL``, defaulting to the local servers), and otherwise on SQLite and the in-memory
layers, where tests marked ``postgres`` or ``redis`` are skipped with the probe's reason.

Each run gets its own database, cache and channel-layer prefixes and Celery queue (named after
the run), so runs side by side on one machine never share state.
"""

import os
import tempfile

import psycopg
import redis

RUN_ID = os.environ.get("GPUDEV_TEST_RUN_ID") or str(os.getpid())
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/gpudev_{RUN_ID}"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _probe_postgres() -> str:
    try:
        admin_url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
        psycopg.connect(admin_url, connect_timeout=2).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {TEST_DATABASE_URL} is not reachable: {exc}".strip()
    return ""


def _probe_redis() -> str:
    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {TEST_REDIS_URL} is not reachable: {exc}"
    return ""


POSTGRES_SKIP_REASON = _probe_postgres()
REDIS_SKIP_REASON = _probe_redis()

if not POSTGRES_SKIP_REASON:
    os.environ["DATABASE_URL"] = TEST_DATABASE_URL
    os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
else:
    os.environ.pop("DATABASE_URL", None)
if not REDIS_SKIP_REASON:
    os.environ["REDIS_URL"] = TEST_REDIS_URL
else:
    os.environ.pop("REDIS_URL", None)
os.environ["SECURE_COOKIES"] = "false"
os.environ.setdefault("GPUDEV_DATA_DIR", tempfile.mkdtemp(prefix="gpudev-test-"))

from gpudev_site.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Every tick re-lists the pods, so a test's ticks see the cluster without a watcher running;
# tests of the interval itself set it.
RECONCILE_RESYNC_INTERVAL = 0
# Threads of the live server, consumers and the worker close their connections after each use,
# so none outlives a test and blocks the database reset.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
if not POSTGRES_SKIP_REASON:
    # A test that leaves a lock behind fails the next one with "lock timeout" within a minute,
    # naming the statement, instead of hanging the run on the database reset.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (  # noqa: F405
        "-c lock_timeout=60s -c idle_in_transaction_session_timeout=180s"
    )
TEST_KEY_PREFIX = f"gpudev-test-{RUN_ID}"
if REDIS_URL:  # noqa: F405
    CACHES["default"]["KEY_PREFIX"] = TEST_KEY_PREFIX  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = TEST_KEY_PREFIX  # noqa: F405
CELERY_TASK_DEFAULT_QUEUE = TEST_KEY_PREFIX
# Tests serve static files from the source tree, as the embedded default does.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None
