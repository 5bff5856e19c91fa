"""Celery tasks of the warm-pool engine: thin wrappers, each under a single-flight lock."""

from celery import shared_task
from celery.signals import worker_init, worker_process_shutdown, worker_shutting_down
from django.conf import settings
from django.utils import timezone

from gpudev_site import metrics
from gpudev_site.locks import single_flight
from pool import images, reconciler, spawner


@shared_task
def reconcile_pools() -> str:
    """Run one reconcile tick over every pool."""
    with single_flight("reconcile-pools", timeout=settings.RECONCILE_TASK_TIME_LIMIT) as mine:
        if not mine:
            return "skipped: another tick is running"
        return reconciler.reconcile()


@shared_task
def refresh_image_release() -> str:
    """Follow the tracked tag's digest and keep the prepuller on the current release."""
    with single_flight("refresh-image-release", timeout=settings.IMAGE_REFRESH_INTERVAL) as mine:
        if not mine:
            return "skipped: another refresh is running"
        return images.refresh_and_prepull(now=timezone.now())


@shared_task(
    acks_late=True,
    soft_time_limit=settings.SPAWN_TASK_TIME_LIMIT,
    time_limit=settings.SPAWN_TASK_TIME_LIMIT + 30,
)
def spawn_warm_pod(record_id: int) -> str:
    """Create the pod for one spawn slot and wait until it is ready (or give up)."""
    return spawner.spawn_warm_pod(record_id)


@worker_shutting_down.connect
def _stop_spawn_waits(**kwargs) -> None:
    spawner.interrupt_waits()


@worker_init.connect
def _serve_worker_metrics(**kwargs) -> None:
    if settings.METRICS_PORT:
        metrics.worker_metrics_server(settings.METRICS_PORT)


@worker_process_shutdown.connect
def _forget_worker_process(pid=None, **kwargs) -> None:
    metrics.forget_process(pid)
