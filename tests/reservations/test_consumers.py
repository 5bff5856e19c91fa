"""The ``/ws/me/`` socket: signed-in users only, and only their own reservations' cards."""

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from gpudev_site.asgi import application
from pool import broadcast
from reservations.consumers import UNAUTHENTICATED, MyReservationsConsumer
from tests.factories import pool_of, reservation_for

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.asyncio,
]

ORIGIN = (b"origin", b"http://localhost")


@database_sync_to_async
def reservations_of(*users):
    pool = pool_of("h100")
    return [reservation_for(user, pool) for user in users]


@database_sync_to_async
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest_asyncio.fixture(autouse=True)
async def _close_connections():
    """Close the connections the consumers' database thread opened, so the test database can
    be dropped at the end."""
    yield
    await database_sync_to_async(connections.close_all)()


async def socket_of(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(MyReservationsConsumer.as_asgi(), "/ws/me/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_anonymous_socket_is_refused():
    communicator = WebsocketCommunicator(application, "/ws/me/", headers=[ORIGIN])
    connected, code = await communicator.connect()
    assert not connected
    assert code == UNAUTHENTICATED
    await communicator.disconnect()


async def test_signed_in_socket_through_the_site_is_accepted(alice):
    cookie = await session_cookie(alice)
    communicator = WebsocketCommunicator(
        application, "/ws/me/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


async def test_socket_from_a_foreign_origin_is_refused(alice):
    cookie = await session_cookie(alice)
    communicator = WebsocketCommunicator(
        application, "/ws/me/", headers=[(b"origin", b"https://evil.example"), (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_alice_gets_her_card_and_not_bobs(alice, bob):
    hers, his = await reservations_of(alice, bob)
    socket = await socket_of(alice)

    await database_sync_to_async(broadcast.reservation_changed)(bob.pk, his.pk)
    assert await socket.receive_nothing(timeout=0.3)

    await database_sync_to_async(broadcast.reservation_changed)(alice.pk, hers.pk)
    html = await socket.receive_from(timeout=3)
    assert f'<article id="reservation-{hers.pk}"' in html
    assert 'hx-swap-oob="true"' in html
    assert "Queued" in html
    assert str(his.pk) not in html
    await socket.disconnect()


async def test_a_message_naming_someone_elses_reservation_renders_nothing(alice, bob):
    (his,) = await reservations_of(bob)
    socket = await socket_of(alice)
    await get_channel_layer().group_send(
        broadcast.user_group(alice.pk), {"type": "reservation.changed", "id": str(his.pk)}
    )
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()


@pytest.mark.redis
async def test_an_idle_socket_stays_open_and_still_gets_updates(alice):
    (hers,) = await reservations_of(alice)
    socket = await socket_of(alice)
    assert await socket.receive_nothing(timeout=7, interval=0.5)
    await database_sync_to_async(broadcast.reservation_changed)(alice.pk, hers.pk)
    assert f'id="reservation-{hers.pk}"' in await socket.receive_from(timeout=3)
    await socket.disconnect()
