"""Fixtures and markers shared by the whole suite."""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

pytest_plugins = ["clustersim.pytest_plugin", "tests.live"]


def pytest_collection_modifyitems(config, items):
    skips = {
        "postgres": settings.POSTGRES_SKIP_REASON,
        "redis": settings.REDIS_SKIP_REASON,
    }
    for item in items:
        for marker, reason in skips.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _clean_test_redis():
    """Remove this run's keys (locks, channel layer, task queue) from Redis when it ends."""
    yield
    if not settings.REDIS_SKIP_REASON:
        import redis

        server = redis.Redis.from_url(settings.REDIS_URL)
        for key in server.scan_iter(match=f"*{settings.TEST_KEY_PREFIX}*", count=1000):
            server.delete(key)


@pytest.fixture
def alice(db):
    """A developer."""
    return get_user_model().objects.create_user("alice", password="alice-gpudev")


@pytest.fixture
def bob(db):
    """Another developer, who must never see alice's reservations."""
    return get_user_model().objects.create_user("bob", password="bob-gpudev")


@pytest.fixture
def olga(db):
    """An operator (staff)."""
    return get_user_model().objects.create_user("olga", password="olga-gpudev", is_staff=True)
