"""The live ops dashboard: the watcher's changes, pushed to each open page as its own partials.

One ``OpsConsumer`` per open dashboard page. The page names itself (``screen``) and its filters
and page number in the query string of its ``ws-connect`` URL, so the consumer knows what the
browser shows, and a reconnect (the htmx ws extension's own) asks for the same view again.

1. On connect, refuse anyone but staff; join the ``ops`` group; queue a full refresh, so nothing
   that changed while the page loaded or the socket was down is missed.
2. Each typed message from ``pool.broadcast`` only records what changed.
3. One window (``OPS_PUSH_WINDOW``) after the first unsent change, render the partials of this
   page that the changes touch, with the same templates and ``pool.dashboard`` queries the view
   uses, and send them as ONE frame; htmx swaps each top-level element in place by id. Changes
   that arrive while a frame renders go into the next one, so a burst of hundreds of changes is a
   handful of frames per browser, not hundreds.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from pool import dashboard
from pool.broadcast import OPS_GROUP
from pool.forms import AuditFilterForm, PodFilterForm

logger = logging.getLogger(__name__)

# Close codes the htmx ws extension does not reconnect after.
NOT_AN_OPERATOR = 4003
# Channel layers drop a group member a day (group_expiry) after it joined; a dashboard on a wall
# screen stays open longer, so it joins again well before that.
REJOIN_SECONDS = 3600


@dataclass
class Changes:
    """What changed since the last frame."""

    full: bool = False
    pods: set[str] = field(default_factory=set)
    pools: set[int] = field(default_factory=set)
    images: bool = False
    names: bool = False
    nodes: bool = False

    def __bool__(self) -> bool:
        return bool(self.full or self.pods or self.pools or self.images or self.names or self.nodes)


class Screen:
    """One dashboard page as a browser shows it; renders the partials that changes touch."""

    template = ""

    def __init__(self, params: QueryDict) -> None:
        """Read what the page shows (filters, page number) from its URL's query string."""

    def render(self, changes: Changes) -> list[str]:
        """Return the HTML of every partial of this page that ``changes`` make out of date."""
        raise NotImplementedError

    def partial(self, name: str, context: dict) -> str:
        return render_to_string(f"{self.template}#{name}", context)


class PoolsScreen(Screen):
    template = "ops/pools.html"

    def __init__(self, params: QueryDict) -> None:
        super().__init__(params)
        self.show_idle = params.get("idle") == "1"
        self.shown: list[int] | None = None

    def render(self, changes: Changes) -> list[str]:
        if not (changes.full or changes.pools or changes.images):
            return []
        context = dashboard.pools_context(now=timezone.now(), show_idle=self.show_idle)
        shown = [card.pool.pk for card in context["cards"]]
        if changes.full or changes.images or shown != self.shown:
            # A new release changes every card; a pool turning idle (or busy) changes the grid.
            self.shown = shown
            return [
                self.partial("release-strip", context),
                self.partial("pool-cards", context),
            ]
        return [
            self.partial("pool-card", context | {"card": card})
            for card in context["cards"]
            if card.pool.pk in changes.pools
        ]


class PodsScreen(Screen):
    """One page of the filtered pod table: re-rendered when what it lists changes."""

    template = "ops/pods.html"

    def __init__(self, params: QueryDict) -> None:
        super().__init__(params)
        self.filters = PodFilterForm(params).filters()
        self.page_number = params.get("page", 1)
        self.listed: tuple[int, list[str]] | None = None

    def render(self, changes: Changes) -> list[str]:
        if not (changes.full or changes.pods or changes.images):
            return []
        context = dashboard.pods_context(
            filters=self.filters, page_number=self.page_number, now=timezone.now()
        )
        listed = (context["page"].paginator.count, [pod.name for pod in context["pods"]])
        if changes.full or changes.images or listed != self.listed:
            # New, gone or re-sorted rows (or new stale badges): the whole table.
            self.listed = listed
            return [self.partial("pod-table", context)]
        return [
            self.partial("pod-row", context | {"pod": pod})
            for pod in context["pods"]
            if pod.name in changes.pods
        ]


class ImagesScreen(Screen):
    template = "ops/images.html"

    def render(self, changes: Changes) -> list[str]:
        if not (changes.full or changes.images or changes.nodes):
            return []
        context = dashboard.images_context(now=timezone.now())
        sections = ("release-current", "prepull", "release-history")
        return [self.partial(name, context) for name in sections]


class NamesScreen(Screen):
    template = "ops/names.html"

    def render(self, changes: Changes) -> list[str]:
        # A pod that goes can orphan its name, so pod changes count too.
        if not (changes.full or changes.names or changes.pods):
            return []
        context = dashboard.names_context(now=timezone.now())
        return [self.partial(name, context) for name in ("name-counts", "orphans", "leases")]


class AuditScreen(Screen):
    """The audit log: only its first page moves, since new events arrive at the top."""

    template = "ops/audit.html"

    def __init__(self, params: QueryDict) -> None:
        super().__init__(params)
        self.filters = AuditFilterForm(params).filters()
        self.page_number = params.get("page", "1")

    def render(self, changes: Changes) -> list[str]:
        if not changes or (self.page_number != "1" and not changes.full):
            return []
        context = dashboard.audit_context(
            filters=self.filters, page_number=self.page_number, now=timezone.now()
        )
        return [self.partial("audit-table", context)]


SCREENS: dict[str, type[Screen]] = {
    "pools": PoolsScreen,
    "pods": PodsScreen,
    "images": ImagesScreen,
    "names": NamesScreen,
    "audit": AuditScreen,
}


def is_operator(user) -> bool:
    return user is not None and user.is_authenticated and user.is_active and user.is_staff


def still_operator(user_id: int) -> bool:
    """Whether the user is still active staff (a demoted operator stops receiving pushes)."""
    return get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).exists()


class OpsConsumer(AsyncWebsocketConsumer):
    """Keep one open ops dashboard page live."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not is_operator(user):
            await self.close()
            return
        self.user_id = user.pk
        query = QueryDict(self.scope.get("query_string", b"").decode("latin-1"))
        screen = SCREENS.get(query.get("screen", ""))
        if screen is None:
            await self.close()
            return
        self.screen = await database_sync_to_async(screen)(query)
        self.changes = Changes(full=True)
        self.pusher: asyncio.Task | None = None
        await self.channel_layer.group_add(OPS_GROUP, self.channel_name)
        self.membership = asyncio.create_task(self._stay_in_group())
        await self.accept()
        self._schedule()

    async def disconnect(self, code: int) -> None:
        for task in (getattr(self, "pusher", None), getattr(self, "membership", None)):
            if task is not None:
                task.cancel()
        if hasattr(self, "screen"):
            await self.channel_layer.group_discard(OPS_GROUP, self.channel_name)

    async def _stay_in_group(self) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            await self.channel_layer.group_add(OPS_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Ignore what the browser sends: the view it shows is fixed by its URL."""

    # --- One handler per message type of pool.broadcast -----------------------------------

    async def pods_changed(self, message: dict) -> None:
        self.changes.pods.update(message["names"])
        self._schedule()

    async def pools_changed(self, message: dict) -> None:
        self.changes.pools.update(message["pool_ids"])
        self._schedule()

    async def nodes_changed(self, message: dict) -> None:
        self.changes.nodes = True
        self._schedule()

    async def images_changed(self, message: dict) -> None:
        self.changes.images = True
        self._schedule()

    async def names_changed(self, message: dict) -> None:
        self.changes.names = True
        self._schedule()

    # --- Coalescing -----------------------------------------------------------------------

    def _schedule(self) -> None:
        if self.pusher is None:
            self.pusher = asyncio.create_task(self._push_while_changing())

    async def _push_while_changing(self) -> None:
        try:
            while self.changes:
                await asyncio.sleep(settings.OPS_PUSH_WINDOW)
                changes, self.changes = self.changes, Changes()
                await self._push(changes)
        finally:
            self.pusher = None

    async def _push(self, changes: Changes) -> None:
        try:
            html = await database_sync_to_async(self._render)(changes)
        except Exception:
            # Rendering one frame must not end the page's updates; the next change retries.
            logger.exception("ops push failed for %s", type(self.screen).__name__)
            return
        if html is None:
            await self.close(code=NOT_AN_OPERATOR)
        elif html:
            await self.send(text_data=html)

    def _render(self, changes: Changes) -> str | None:
        """Return one frame of partials, "" when nothing shown changed, None for a non-operator."""
        if not still_operator(self.user_id):
            return None
        return "\n".join(self.screen.render(changes))
