"""The ops consumer: who may connect, what a change pushes, and how bursts are coalesced."""

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from gpudev_site.asgi import application
from pool import broadcast
from pool.consumers import OpsConsumer
from pool.models import PodState
from tests.factories import pod_record, pool_of

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.asyncio,
]

QUIET = 0.6


@pytest_asyncio.fixture(autouse=True)
async def close_consumer_connections():
    """Close the connection the consumer's database thread opened, so the test database can go."""
    yield
    await sync_to_async(connections.close_all)()


async def open_socket(user, query: str = "screen=pods") -> WebsocketCommunicator:
    """Connect the consumer as ``user`` and read the full refresh it sends on connect."""
    communicator = WebsocketCommunicator(OpsConsumer.as_asgi(), f"/ws/ops/?{query}")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_from(timeout=5)
    return communicator


async def frames_until_quiet(communicator: WebsocketCommunicator) -> list[str]:
    """Return every frame received until none arrives for QUIET seconds."""
    frames = []
    while not await communicator.receive_nothing(timeout=QUIET):
        frames.append(await communicator.receive_from())
    return frames


def session_headers(user=None) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://localhost")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


async def test_anonymous_socket_is_refused():
    communicator = WebsocketCommunicator(
        application, "/ws/ops/?screen=pods", headers=session_headers()
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_developer_socket_is_refused(alice):
    headers = await sync_to_async(session_headers)(alice)
    communicator = WebsocketCommunicator(application, "/ws/ops/?screen=pods", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_operator_socket_gets_the_visible_table_on_connect(olga):
    pool = await sync_to_async(pool_of)("h100", target=1)
    await sync_to_async(pod_record)(pool, "gpudev-h100-default-000001")
    headers = await sync_to_async(session_headers)(olga)
    communicator = WebsocketCommunicator(application, "/ws/ops/?screen=pods", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    frame = await communicator.receive_from(timeout=5)
    assert 'id="pod-table"' in frame
    assert 'id="pod-gpudev-h100-default-000001"' in frame
    await communicator.disconnect()


async def test_pod_change_reaches_operator_as_its_row(olga):
    pool = await sync_to_async(pool_of)("h100", target=1)
    pod = await sync_to_async(pod_record)(
        pool, "gpudev-h100-default-000001", state=PodState.PENDING
    )
    communicator = await open_socket(olga)

    def becomes_ready():
        pod.mark_ready(now=pod.created_at, node_name="node-7", running_digest="", actor="watcher")
        broadcast.pods_changed([pod.name])

    await sync_to_async(becomes_ready)()
    frame = await communicator.receive_from(timeout=5)
    assert frame.lstrip().startswith('<tr id="pod-gpudev-h100-default-000001"')
    assert '<span class="badge green">Ready</span>' in frame
    assert "node-7" in frame
    await communicator.disconnect()


async def test_new_pod_matching_the_filter_redraws_the_table(olga):
    pool = await sync_to_async(pool_of)("h100", target=1)
    communicator = await open_socket(olga, f"screen=pods&pool={pool.pk}")

    def spawned():
        pod_record(pool, "gpudev-h100-default-000002", state=PodState.SLOT)
        broadcast.pods_changed(["gpudev-h100-default-000002"])

    await sync_to_async(spawned)()
    frame = await communicator.receive_from(timeout=5)
    assert 'id="pod-table"' in frame
    assert 'id="pod-gpudev-h100-default-000002"' in frame
    await communicator.disconnect()


async def test_pod_outside_the_filter_pushes_nothing(olga):
    h100, a10g = await sync_to_async(pool_of)("h100"), await sync_to_async(pool_of)("a10g")
    communicator = await open_socket(olga, f"screen=pods&pool={h100.pk}")

    def spawned_elsewhere():
        pod_record(a10g, "gpudev-a10g-default-000003", state=PodState.SLOT)
        broadcast.pods_changed(["gpudev-a10g-default-000003"])

    await sync_to_async(spawned_elsewhere)()
    assert await frames_until_quiet(communicator) == []
    await communicator.disconnect()


async def test_burst_of_200_changes_is_coalesced_into_a_few_frames(olga):
    pool = await sync_to_async(pool_of)("h100", target=200)

    def make_pods():
        return [
            pod_record(pool, f"gpudev-h100-default-{i:06d}", state=PodState.PENDING)
            for i in range(200)
        ]

    pods = await sync_to_async(make_pods)()
    communicator = await open_socket(olga)

    def all_ready():
        for pod in pods:
            pod.mark_ready(now=pod.created_at, node_name="node-1", running_digest="", actor="w")
            broadcast.pods_changed([pod.name])

    await sync_to_async(all_ready)()
    frames = await frames_until_quiet(communicator)
    assert 1 <= len(frames) < 5
    last = frames[-1]
    # However the burst was cut into frames, the last one leaves every row ready.
    received = "".join(frames)
    for pod in pods[:100]:
        assert f'id="pod-{pod.name}"' in received
    assert "Starting" not in last
    await communicator.disconnect()


async def test_reconnect_gets_what_changed_while_the_socket_was_down(olga):
    pool = await sync_to_async(pool_of)("h100", target=1)
    pod = await sync_to_async(pod_record)(
        pool, "gpudev-h100-default-000001", state=PodState.PENDING
    )
    first = await open_socket(olga)
    await first.disconnect()

    def ready_while_down():
        pod.mark_ready(now=pod.created_at, node_name="node-7", running_digest="", actor="watcher")
        broadcast.pods_changed([pod.name])

    await sync_to_async(ready_while_down)()
    again = WebsocketCommunicator(OpsConsumer.as_asgi(), "/ws/ops/?screen=pods")
    again.scope["user"] = olga
    assert (await again.connect())[0]
    frame = await again.receive_from(timeout=5)
    assert 'id="pod-table"' in frame
    assert '<span class="badge green">Ready</span>' in frame
    await again.disconnect()


async def test_pool_change_pushes_that_pools_card(olga):
    h100 = await sync_to_async(pool_of)("h100", target=1)
    await sync_to_async(pool_of)("a10g", target=1)
    communicator = await open_socket(olga, "screen=pools")

    def retarget():
        Pool = type(h100)
        Pool.objects.filter(pk=h100.pk).update(target=7)
        broadcast.pools_changed([h100.pk])

    await sync_to_async(retarget)()
    frame = await communicator.receive_from(timeout=5)
    assert frame.lstrip().startswith(f'<article id="pool-{h100.pk}"')
    assert "<dd>7</dd>" in frame
    assert frame.count("<article") == 1
    await communicator.disconnect()


async def test_operator_who_loses_staff_stops_receiving(olga):
    communicator = await open_socket(olga, "screen=names")

    def demote():
        type(olga).objects.filter(pk=olga.pk).update(is_staff=False)
        broadcast.names_changed()

    await sync_to_async(demote)()
    output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4003}
    await communicator.disconnect()


async def test_unknown_screen_is_refused(olga):
    communicator = WebsocketCommunicator(OpsConsumer.as_asgi(), "/ws/ops/?screen=nope")
    communicator.scope["user"] = olga
    assert not (await communicator.connect())[0]
    await communicator.disconnect()
