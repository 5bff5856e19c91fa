"""The one sender of live updates: typed messages to Channels groups, sent after commit.

Tasks, the watcher and views call these functions; consumers (one per audience) turn each
message into the same template partial the page renders. A failed send is logged and dropped:
a live update is never worth failing the change it reports.
"""

import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
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
    try:
        async_to_sync(get_channel_layer().group_send)(group, message)
    except Exception:
        logger.exception("broadcast to %s failed: %s", group, message["type"])
