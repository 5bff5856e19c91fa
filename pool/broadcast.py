"""The one sender of live updates: typed messages to Channels groups, sent after commit.

Tasks, the watcher and views call these functions; consumers (one per audience) turn each
message into the same template partial the page renders. A failed send is logged and dropped:
a live update is never worth failing the change it reports.
"""

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from contextlib import suppress
from functools import partial

from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

OPS_GROUP = "ops"


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def pods_changed(names: Iterable[str]) -> None:
    """Our pods changed (created, progressed, ready, claimed, gone)."""
    _after_commit(OPS_GROUP, {"type": "pods.changed", "names": sorted(set(names))})


def pools_changed(pool_ids: Iterable[int]) -> None:
    """A pool's counts, settings or recent reconciler actions changed."""
    _after_commit(OPS_GROUP, {"type": "pools.changed", "pool_ids": sorted(set(pool_ids))})


def nodes_changed(names: Iterable[str]) -> None:
    """Nodes appeared, went, or changed readiness, GPUs or cached images."""
    _after_commit(OPS_GROUP, {"type": "nodes.changed", "names": sorted(set(names))})


def images_changed() -> None:
    """A new image release, or the prepuller made progress."""
    _after_commit(OPS_GROUP, {"type": "images.changed"})


def names_changed() -> None:
    """Name leases were taken, moved or released."""
    _after_commit(OPS_GROUP, {"type": "names.changed"})


def reservation_changed(user_id: int, reservation_id) -> None:
    """One of a user's reservations changed (status, progress, expiry)."""
    _after_commit(user_group(user_id), {"type": "reservation.changed", "id": str(reservation_id)})


def _after_commit(group: str, message: dict) -> None:
    transaction.on_commit(lambda: _send(group, message), robust=True)


def _send(group: str, message: dict) -> None:
    """Hand the message to this process's sender loop and return at once.

    A send is one Redis round trip on a connection the loop keeps; ``async_to_sync`` per
    message would start a thread, an event loop and a new Redis connection each time, which
    cost a claim or a reconcile tick ~10 ms per message. Consumers render from the database,
    so two messages overtaking each other on the way changes nothing they show.
    """
    future = asyncio.run_coroutine_threadsafe(
        get_channel_layer().group_send(group, message), _sender.loop()
    )
    future.add_done_callback(partial(_log_failure, group, message["type"]))


def _log_failure(group: str, kind: str, future: Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("broadcast to %s failed: %s", group, kind, exc_info=future.exception())


class _Sender:
    """An event loop on a daemon thread of this process, started on first use (and again in
    a forked child, where the parent's thread does not exist); drained at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                thread = threading.Thread(
                    target=self._loop.run_forever, name="broadcast", daemon=True
                )
                thread.start()
            return self._loop

    def drain(self, timeout: float = 2.0) -> None:
        """Wait (a little) for the messages still on their way."""
        with self._lock:
            loop = self._loop if self._pid == os.getpid() else None
        if loop is None or not loop.is_running():
            return

        async def pending_sends() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        with suppress(Exception):
            asyncio.run_coroutine_threadsafe(pending_sends(), loop).result(timeout + 1)


_sender = _Sender()
atexit.register(_sender.drain)
