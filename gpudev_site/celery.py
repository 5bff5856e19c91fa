"""The Celery app; its configuration and beat table live in Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpudev_site.settings")

app = Celery("gpudev")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
