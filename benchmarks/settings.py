"""Settings for the benchmarks: the production code paths on PostgreSQL and Redis.

The database (``BENCH_DATABASE_URL``, default ``gpudev_bench`` on the local server) belongs to
the benchmarks alone: ``python -m benchmarks`` creates it and drops it afterwards. Redis keys
(cache, locks, channel layer, Celery queue) carry the ``gpudev-bench`` prefix on their own
database (``BENCH_REDIS_URL``, default db 10), and only those keys are ever deleted.
"""

import os
import tempfile

BENCH_DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gpudev_bench"
)
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
BENCH_KEY_PREFIX = "gpudev-bench"

os.environ["DATABASE_URL"] = BENCH_DATABASE_URL
os.environ["REDIS_URL"] = BENCH_REDIS_URL
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-for-production-0123456789")
os.environ["SECURE_COOKIES"] = "false"
os.environ.setdefault("LOG_LEVEL", "ERROR")
os.environ.setdefault("LOG_FORMAT", "text")
os.environ.setdefault("GPUDEV_DATA_DIR", tempfile.mkdtemp(prefix="gpudev-bench-"))

from gpudev_site.settings import *  # noqa: E402, F403

CACHES["default"]["KEY_PREFIX"] = BENCH_KEY_PREFIX  # noqa: F405
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = BENCH_KEY_PREFIX  # noqa: F405
CELERY_TASK_DEFAULT_QUEUE = BENCH_KEY_PREFIX
# Users are made by the thousand; the hash is not what is measured.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Served from the source tree, as the embedded default does, so no collectstatic is needed.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None
