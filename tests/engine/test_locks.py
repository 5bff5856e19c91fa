"""Row locks on PostgreSQL: a capacity decision and the reconciler never wait on each other.

A reservation's capacity decision holds its GPU type's row and then inserts rows that point at
the pool (a key-share lock on the pool's row); the reconciler and operator actions hold the
pool's row. When the pool lock also locked the GPU type, or blocked key-share, the two waited
on each other and PostgreSQL killed one of them as a deadlock in the middle of a reservation.
"""

import threading

import pytest
from django.db import connection, transaction

from pool.models import PodKind, PodState, Pool
from reservations.claims import _lock_gpu_type
from tests.factories import pod_record, pool_of

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _hold_in_thread(hold, release: threading.Event) -> tuple[threading.Thread, threading.Event]:
    """Run ``hold()`` in a transaction on its own connection and keep it open until
    ``release`` is set."""
    held = threading.Event()

    def run() -> None:
        try:
            with transaction.atomic():
                hold()
                held.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(10), "the other transaction took its locks"
    return thread, held


def _with_short_lock_timeout(call):
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")
        return call()


def test_the_pool_lock_does_not_wait_for_a_capacity_decision_in_flight():
    pool = pool_of("h100", target=2)
    release = threading.Event()

    def decide_capacity() -> None:
        _lock_gpu_type(pool.gpu_type_id)
        pod_record(pool, "cold-pod", state=PodState.SLOT, kind=PodKind.RESERVATION)

    thread, _ = _hold_in_thread(decide_capacity, release)
    try:
        locked = _with_short_lock_timeout(lambda: Pool.objects.locked(pool.pk))
    finally:
        release.set()
        thread.join()
    assert locked.target == 2


def test_a_capacity_decision_does_not_wait_for_the_pool_lock():
    pool = pool_of("h100", target=2)
    release = threading.Event()
    thread, _ = _hold_in_thread(lambda: Pool.objects.locked(pool.pk), release)
    try:

        def decide_capacity():
            _lock_gpu_type(pool.gpu_type_id)
            return pod_record(pool, "cold-pod", state=PodState.SLOT, kind=PodKind.RESERVATION)

        record = _with_short_lock_timeout(decide_capacity)
    finally:
        release.set()
        thread.join()
    assert record.pool_id == pool.pk
