"""Fixtures of the ops dashboard tests: an operator's client and image releases."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from pool.models import ImageRelease

OLD_DIGEST = "sha256:" + "ab12" * 16
NEW_DIGEST = "sha256:" + "cd34" * 16


def release(digest: str, *, current: bool, minutes_ago: float = 0) -> ImageRelease:
    """Record a release of the tracked repository, seen ``minutes_ago``."""
    if current:
        ImageRelease.objects.filter(repo=settings.IMAGE_REPOSITORY).update(is_current=False)
    return ImageRelease.objects.create(
        repo=settings.IMAGE_REPOSITORY,
        tag="latest",
        digest=digest,
        immutable_ref=f"{settings.IMAGE_REPOSITORY}:latest-{digest[7:15]}",
        first_seen_at=timezone.now() - timedelta(minutes=minutes_ago),
        is_current=current,
    )


@pytest.fixture
def current_release(db) -> ImageRelease:
    """The current release (cd34…), pushed 9 minutes ago, after an older one (ab12…)."""
    release(OLD_DIGEST, current=False, minutes_ago=600)
    return release(NEW_DIGEST, current=True, minutes_ago=9)


@pytest.fixture
def ops(olga) -> Client:
    """A client signed in as olga the operator."""
    client = Client()
    client.force_login(olga)
    return client
