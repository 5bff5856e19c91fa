"""The in-memory channel layer, made safe to send to from other threads.

Channels' ``InMemoryChannelLayer`` keeps asyncio queues bound to the web server's event loop.
In the embedded default, Celery tasks and the watcher run in threads of the same process with
loops of their own, and a send from there would touch those queues from the wrong loop (and not
wake the server). This layer runs every send on the loop its consumers live on. With Redis
(``REDIS_URL``) the product uses channels-redis instead, and this class is not involved.
"""

import asyncio

from channels.layers import InMemoryChannelLayer


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):
    _home_loop: asyncio.AbstractEventLoop | None = None

    async def group_add(self, group: str, channel: str) -> None:
        self._home_loop = asyncio.get_running_loop()
        await super().group_add(group, channel)

    async def receive(self, channel: str) -> dict:
        self._home_loop = asyncio.get_running_loop()
        return await super().receive(channel)

    async def send(self, channel: str, message: dict) -> None:
        await self._on_home_loop(super().send(channel, message))

    async def group_send(self, group: str, message: dict) -> None:
        await self._on_home_loop(super().group_send(group, message))

    async def _on_home_loop(self, coroutine) -> None:
        home = self._home_loop
        if home is None or not home.is_running() or home is asyncio.get_running_loop():
            await coroutine
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, home))
