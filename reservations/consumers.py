"""The developer's live channel: their own reservations' cards, pushed as they change."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from pool.broadcast import user_group
from reservations import cards

UNAUTHENTICATED = 4401


class MyReservationsConsumer(AsyncWebsocketConsumer):
    """Join the signed-in user's group; turn each ``reservation.changed`` into their card.

    The card goes out as an htmx out-of-band swap (``hx-swap-oob``), which the ws extension
    puts in place of the element with the same id.
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def reservation_changed(self, event: dict) -> None:
        html = await self._render(event["id"])
        if html:
            await self.send(text_data=html)

    @database_sync_to_async
    def _render(self, reservation_id: str) -> str:
        # The card is looked up through the socket's own user: a message about anyone else's
        # reservation renders nothing.
        card = cards.card_for(self.scope["user"], reservation_id, timezone.now())
        return cards.render_card(card, oob=True) if card else ""
