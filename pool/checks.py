"""System checks for timeouts that must outlast what they wait for (the lesson of PR #671).

A warm spawn once ran under a 30 s deadline while its pod-ready wait was 5 minutes, so every
spawn that needed a new node was cancelled and the pool never refilled after a restart. Each
deadline here is checked against the work it bounds, and start-up fails when one is inverted.
"""

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_derived_timeouts(app_configs, **kwargs) -> list[Error]:
    errors = []
    if settings.WARM_SPAWN_TIMEOUT <= settings.POD_READY_TIMEOUT:
        errors.append(
            Error(
                f"WARM_SPAWN_TIMEOUT ({settings.WARM_SPAWN_TIMEOUT:g}s) must exceed "
                f"POD_READY_TIMEOUT ({settings.POD_READY_TIMEOUT:g}s): a warm spawn waits for "
                "its pod to become ready, so a shorter deadline cancels every slow spawn.",
                hint="Raise WARM_SPAWN_TIMEOUT or lower POD_READY_TIMEOUT.",
                id="gpudev.E001",
            )
        )
    if settings.STUCK_SPAWN_CUTOFF < settings.WARM_SPAWN_TIMEOUT:
        errors.append(
            Error(
                f"STUCK_SPAWN_CUTOFF ({settings.STUCK_SPAWN_CUTOFF:g}s) must be at least "
                f"WARM_SPAWN_TIMEOUT ({settings.WARM_SPAWN_TIMEOUT:g}s): the stuck-spawn sweep "
                "would otherwise cut spawns that are still inside their deadline.",
                hint="Raise STUCK_SPAWN_CUTOFF.",
                id="gpudev.E002",
            )
        )
    if settings.SPAWN_TASK_TIME_LIMIT <= settings.WARM_SPAWN_TIMEOUT:
        errors.append(
            Error(
                f"SPAWN_TASK_TIME_LIMIT ({settings.SPAWN_TASK_TIME_LIMIT:g}s) must exceed "
                f"WARM_SPAWN_TIMEOUT ({settings.WARM_SPAWN_TIMEOUT:g}s): Celery would kill the "
                "spawn task before the spawn's own deadline could fail it cleanly.",
                hint="Raise SPAWN_TASK_TIME_LIMIT.",
                id="gpudev.E003",
            )
        )
    request_budget = settings.KUBERNETES_REQUEST_TIMEOUT * (settings.KUBERNETES_REQUEST_RETRIES + 1)
    if request_budget >= settings.RECONCILE_TASK_TIME_LIMIT:
        errors.append(
            Error(
                f"RECONCILE_TASK_TIME_LIMIT ({settings.RECONCILE_TASK_TIME_LIMIT:g}s) must exceed "
                f"one Kubernetes request with its retries ({request_budget:g}s).",
                hint="Raise RECONCILE_TASK_TIME_LIMIT or lower KUBERNETES_REQUEST_TIMEOUT.",
                id="gpudev.E004",
            )
        )
    if settings.RECONCILE_TASK_TIME_LIMIT >= settings.RECONCILE_INTERVAL:
        errors.append(
            Error(
                f"RECONCILE_TASK_TIME_LIMIT ({settings.RECONCILE_TASK_TIME_LIMIT:g}s) must be "
                f"shorter than RECONCILE_INTERVAL ({settings.RECONCILE_INTERVAL:g}s), so ticks "
                "never pile up behind each other.",
                id="gpudev.E005",
            )
        )
    errors.extend(_check_beat_expiry())
    return errors


def _check_beat_expiry() -> list[Error]:
    errors = []
    for name, entry in getattr(settings, "CELERY_BEAT_SCHEDULE", {}).items():
        period = float(entry["schedule"])
        expires = entry.get("options", {}).get("expires")
        if expires is None or not 0 < float(expires) < period:
            errors.append(
                Error(
                    f"Beat entry {name!r} must expire before its next run ({period:g}s).",
                    hint="Set options.expires just under the schedule.",
                    id="gpudev.E006",
                )
            )
    return errors
