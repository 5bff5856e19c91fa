"""Single-flight locks for periodic tasks, so a second beat or worker does nothing.

The lock is a cache key added with ``cache.add`` (atomic ``SET NX`` on Redis; per process on the
embedded default, which is one process). Its timeout bounds how long a crashed holder blocks the
next run; callers pass one longer than the work's own time limit.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache


@contextmanager
def single_flight(name: str, *, timeout: float = 60) -> Iterator[bool]:
    """Yield True if this caller holds lock ``name``, False if someone else does."""
    key = f"lock:{name}"
    token = uuid.uuid4().hex
    acquired = cache.add(key, token, timeout=timeout)
    try:
        yield acquired
    finally:
        if acquired and cache.get(key) == token:
            cache.delete(key)
