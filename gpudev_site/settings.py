"""Settings for gpudev, read from the environment.

With nothing set, this is the embedded default: SQLite (WAL) under ``GPUDEV_DATA_DIR``, the
in-memory channel layer and Celery on the in-process ``memory://`` transport, so one
``manage.py demo`` process runs everything. Production sets ``DATABASE_URL`` (PostgreSQL),
``REDIS_URL`` (Celery broker, channel layer, locks), ``SECRET_KEY`` and a kubeconfig or the
in-cluster service account. README.md lists every setting.
"""

import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gpudev_site.env import env_bool, env_float, env_int, env_list, env_secret, env_str
from gpudev_site.logging import LOG_FORMATS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("GPUDEV_DATA_DIR", str(BASE_DIR / "var")))

DATABASE_URL = env_secret("DATABASE_URL")
REDIS_URL = env_secret("REDIS_URL")
EMBEDDED = DATABASE_URL is None


def _embedded_secret_key() -> str:
    """Return a key kept in the data directory, made on first use (embedded default only)."""
    path = DATA_DIR / "secret-key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_secret("SECRET_KEY")
if SECRET_KEY is None:
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required with DATABASE_URL.")
    SECRET_KEY = _embedded_secret_key()

DEBUG = env_bool("DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind TLS-terminating ingress in production; off for the embedded default on plain http.
SECURE = env_bool("SECURE_COOKIES", default=not EMBEDDED)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "template_partials",
    "gpudev_site",
    "pool",
    "reservations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "gpudev_site.urls"
ASGI_APPLICATION = "gpudev_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if EMBEDDED:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "gpudev.sqlite3",
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
else:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL.")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 gives up on a read after 5 s by default, exactly as long as
            # channels_redis blocks waiting for a message: every idle WebSocket would drop.
            # capacity: a watcher burst (a rebuild moving hundreds of pods) must not overflow a
            # consumer's channel before it drains.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": "gpudev",
                "capacity": 1000,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "gpudev",
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "gpudev_site.channel_layers.ThreadSafeInMemoryChannelLayer"}
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# collectstatic target for production images; the embedded default serves from the source tree.
STATIC_ROOT = env_str("STATIC_ROOT", None if EMBEDDED else str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if EMBEDDED
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# The embedded default serves static files straight from the source tree, no collectstatic.
WHITENOISE_USE_FINDERS = EMBEDDED

# --- Celery: one broker, one beat table ---------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- The cluster ----------------------------------------------------------------------------
# Empty KUBECONFIG means the in-cluster service account when running in a pod, otherwise the
# embedded clustersim that ``manage.py demo`` starts and points this setting at.
KUBECONFIG = env_str("KUBECONFIG", "")
KUBERNETES_NAMESPACE = env_str("KUBERNETES_NAMESPACE", "gpudev")
KUBERNETES_REQUEST_TIMEOUT = env_float("KUBERNETES_REQUEST_TIMEOUT", 5.0, minimum=0.1)
KUBERNETES_REQUEST_RETRIES = env_int("KUBERNETES_REQUEST_RETRIES", 1, minimum=0)
GPU_RESOURCE_NAME = env_str("GPU_RESOURCE_NAME", "nvidia.com/gpu")
WARM_POD_PRIORITY_CLASS = env_str("WARM_POD_PRIORITY_CLASS", "")
DEVSERVER_PRIORITY_CLASS = env_str("DEVSERVER_PRIORITY_CLASS", "")
DEVSERVER_POD_TEMPLATE = env_str(
    "DEVSERVER_POD_TEMPLATE", str(BASE_DIR / "deploy" / "templates" / "devserver-pod.yaml")
)
PREPULLER_TEMPLATE = env_str(
    "PREPULLER_TEMPLATE", str(BASE_DIR / "deploy" / "templates" / "prepuller-daemonset.yaml")
)
PREPULLER_MAX_UNAVAILABLE = env_str("PREPULLER_MAX_UNAVAILABLE", "25%")
if not re.fullmatch(r"[1-9][0-9]*%?", PREPULLER_MAX_UNAVAILABLE):
    raise ImproperlyConfigured(
        f"PREPULLER_MAX_UNAVAILABLE={PREPULLER_MAX_UNAVAILABLE!r} must be a count or a percent."
    )
SSH_SERVICE_TYPE = env_str("SSH_SERVICE_TYPE", "NodePort")
if SSH_SERVICE_TYPE not in {"NodePort", "ClusterIP", "LoadBalancer"}:
    raise ImproperlyConfigured(f"SSH_SERVICE_TYPE={SSH_SERVICE_TYPE!r} is not a Service type.")
SSH_DOMAIN = env_str("SSH_DOMAIN", "devservers.localhost")

# --- The image --------------------------------------------------------------------------------
IMAGE_REPOSITORY = env_str(
    "IMAGE_REPOSITORY", "123456789012.dkr.ecr.us-east-1.amazonaws.com/gpu-dev"
)
IMAGE_TAG = env_str("IMAGE_TAG", "latest")
REGISTRY_KIND = env_str("REGISTRY_KIND", "ecr")
if REGISTRY_KIND not in {"ecr", "oci"}:
    raise ImproperlyConfigured(f"REGISTRY_KIND={REGISTRY_KIND!r} must be ecr or oci.")
ECR_ENDPOINT_URL = env_str("ECR_ENDPOINT_URL", "")
REGISTRY_TOKEN = env_secret("REGISTRY_TOKEN", "")

# --- Warm pools and their timeouts (each derived from the one it waits on; see pool/checks.py)
WARM_POD_MAX_AGE_HOURS = env_float("WARM_POD_MAX_AGE_HOURS", 12.0, minimum=0.01)
# A warm pod's placeholder name lease outlives the pod by this margin, so a missed delete
# self-heals within hours instead of holding the name for days (PR #199).
PLACEHOLDER_LEASE_MARGIN_HOURS = env_float("PLACEHOLDER_LEASE_MARGIN_HOURS", 2.0, minimum=0)
POD_READY_TIMEOUT = env_float("POD_READY_TIMEOUT", 300.0, minimum=1)
WARM_SPAWN_TIMEOUT = env_float("WARM_SPAWN_TIMEOUT", 360.0, minimum=1)
STUCK_SPAWN_CUTOFF = env_float("STUCK_SPAWN_CUTOFF", WARM_SPAWN_TIMEOUT + 60, minimum=1)
SPAWN_TASK_TIME_LIMIT = env_float("SPAWN_TASK_TIME_LIMIT", WARM_SPAWN_TIMEOUT + 30, minimum=1)
STRANDED_POD_GRACE = env_float("STRANDED_POD_GRACE", 120.0, minimum=0)
SPAWN_BACKOFF_BASE = env_float("SPAWN_BACKOFF_BASE", 30.0, minimum=1)
SPAWN_BACKOFF_MAX = env_float("SPAWN_BACKOFF_MAX", 600.0, minimum=1)
RECONCILE_INTERVAL = env_float("RECONCILE_INTERVAL", 20.0, minimum=1)
# A tick re-lists our pods (the backstop for watch events the watcher missed, and the stranded
# pod sweep) at most this often; the ticks in between plan from the database alone.
RECONCILE_RESYNC_INTERVAL = env_float("RECONCILE_RESYNC_INTERVAL", 300.0, minimum=0)
RECONCILE_TASK_TIME_LIMIT = env_float("RECONCILE_TASK_TIME_LIMIT", 15.0, minimum=1)
IMAGE_REFRESH_INTERVAL = env_float("IMAGE_REFRESH_INTERVAL", 60.0, minimum=1)
EXPIRY_INTERVAL = env_float("EXPIRY_INTERVAL", 30.0, minimum=1)
LEASE_PURGE_INTERVAL = env_float("LEASE_PURGE_INTERVAL", 300.0, minimum=1)

# --- The ops dashboard ------------------------------------------------------------------------
# Changes reaching an open dashboard within this many seconds go out as one WebSocket frame.
OPS_PUSH_WINDOW = env_float("OPS_PUSH_WINDOW", 0.15, minimum=0.01)

# --- Reservations -----------------------------------------------------------------------------
RESERVATION_MIN_MINUTES = env_int("RESERVATION_MIN_MINUTES", 5, minimum=1)
RESERVATION_MAX_HOURS = env_float("RESERVATION_MAX_HOURS", 24.0, minimum=0.1)
RESERVATION_MAX_TOTAL_HOURS = env_float("RESERVATION_MAX_TOTAL_HOURS", 48.0, minimum=0.1)
QUEUE_TIMEOUT_HOURS = env_float("QUEUE_TIMEOUT_HOURS", 48.0, minimum=0.1)
# A cold start pulls a large image, maybe on a node that is still being provisioned.
COLD_START_TIMEOUT = env_float("COLD_START_TIMEOUT", 3600.0, minimum=60)
QUEUE_RETRY_INTERVAL = env_float("QUEUE_RETRY_INTERVAL", 15.0, minimum=1)


# --- The beat table: every periodic task, each expiring just before its next run -------------
def _every(seconds: float, task: str) -> dict:
    return {"task": task, "schedule": seconds, "options": {"expires": seconds * 0.9}}


CELERY_BEAT_SCHEDULE = {
    "reconcile-pools": _every(RECONCILE_INTERVAL, "pool.tasks.reconcile_pools"),
    "refresh-image-release": _every(IMAGE_REFRESH_INTERVAL, "pool.tasks.refresh_image_release"),
    "expire-reservations": _every(EXPIRY_INTERVAL, "reservations.tasks.expire_reservations"),
    "purge-expired-leases": _every(LEASE_PURGE_INTERVAL, "reservations.tasks.purge_expired_leases"),
    "advance-queue": _every(QUEUE_RETRY_INTERVAL, "reservations.tasks.advance_queue"),
}

# --- Metrics ---------------------------------------------------------------------------------
# /metrics needs this bearer token (it is refused outside the embedded default without one).
METRICS_TOKEN = env_secret("METRICS_TOKEN", "")
# The worker and watcher processes serve their own metrics on this port (0: off).
METRICS_PORT = env_int("METRICS_PORT", 0, minimum=0)

# --- Logging ------------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# JSON lines for a log collector in production; text for a person at the embedded default.
LOG_FORMAT = env_str("LOG_FORMAT", "text" if EMBEDDED else "json")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be text or json.")
LOGGING = logging_config(LOG_LEVEL, LOG_FORMAT)
# Celery would otherwise replace the root logger's handlers with its own text format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
