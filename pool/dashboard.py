"""What the ops dashboard shows: named queries over pools, pods, images, name leases and audit.

Every helper runs a fixed number of queries however many pods, leases or events there are, so a
page, and each live update that re-renders part of it, stays fast at thousands of pods. The
views and the ops consumer both build their template context here: a pushed partial is the
page's partial, rendered from the same data.
"""

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.urls import reverse

from pool import images
from pool.models import (
    IN_FLIGHT_STATES,
    LIVE_STATES,
    RECYCLABLE_STATES,
    AuditEvent,
    ImageRelease,
    NodeRecord,
    PodKind,
    PodRecord,
    PodState,
    Pool,
    PrepullPhase,
    PrepullStatus,
)
from pool.orphans import find_orphans
from reservations.models import DomainMapping, LeaseHolder

MAX_POOL_TARGET = 500
PODS_PER_PAGE = 100
EVENTS_PER_PAGE = 50
RECENT_ACTIONS = 5
# Recent actions are looked up in this window only, so a pool card costs the same however long
# the audit log grows; a pool quiet for longer says so.
RECENT_ACTIONS_WINDOW = timedelta(days=1)
RELEASE_HISTORY = 20
LEASES_SHOWN = 200
PHASE_ORDER = [PrepullPhase.FAILED, PrepullPhase.PULLING, PrepullPhase.WAITING, PrepullPhase.DONE]
# An estimated pull never shows done before the prepuller says so.
ESTIMATE_CAP = 0.95


def current_digest(release: ImageRelease | None) -> str:
    return release.digest if release is not None else ""


# --- Pools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolCard:
    """One pool with its pod counts, rollout onto the current release and recent actions."""

    pool: Pool
    ready: int = 0
    spawning: int = 0
    claimed: int = 0
    stale: int = 0
    failed: int = 0
    draining: int = 0
    on_current: int = 0
    recent: list[AuditEvent] = field(default_factory=list)

    @property
    def is_idle(self) -> bool:
        """Target 0 and no pods at all: nothing an operator needs to watch."""
        pods = self.ready + self.spawning + self.claimed + self.failed + self.draining
        return self.pool.target == 0 and pods == 0

    @property
    def rollout_complete(self) -> bool:
        return self.ready > 0 and self.on_current == self.ready

    @property
    def rollout_percent(self) -> int:
        return int(100 * self.on_current / self.ready) if self.ready else 0

    @property
    def stats(self) -> list["Stat"]:
        """The counts a card shows, each coloured as its pods are and linked to exactly them."""
        return [
            Stat(group.label, getattr(self, name), group.colour, self.pool.pk, name)
            for name, group in CARD_GROUPS.items()
        ]


@dataclass(frozen=True)
class Stat:
    label: str
    value: int
    colour: str
    pool_id: int
    group: str

    @property
    def query(self) -> str:
        return urlencode({"pool": self.pool_id, "group": self.group})


def idle_warm_q() -> Q:
    """Ready warm pods that belong to no reservation: the pods a claim takes, rotation replaces."""
    return Q(kind=PodKind.WARM, state=PodState.READY, reservation__isnull=True)


def stale_q(digest: str) -> Q:
    """Pods whose known running digest differs from ``digest`` (nothing is stale without one)."""
    if not digest:
        return Q(pk__in=[])
    return ~Q(running_digest="") & ~Q(running_digest=digest)


def current_q(digest: str) -> Q:
    """Pods running ``digest`` (none when no release is known)."""
    return Q(running_digest=digest) if digest else Q(pk__in=[])


def stale_pods(pods: QuerySet, release: ImageRelease | None) -> QuerySet:
    """Return the pods running another image than the current release."""
    return pods.filter(stale_q(current_digest(release)))


@dataclass(frozen=True)
class CardGroup:
    """One count on a pool card: which pods it counts, and the colour of those pods."""

    label: str
    colour: str
    pods: Callable[[str], Q]
    """The pods counted, given the current release's digest."""


CARD_GROUPS = {
    "ready": CardGroup("Ready", PodState.READY.colour, lambda digest: idle_warm_q()),
    "spawning": CardGroup(
        "Spawning",
        PodState.PENDING.colour,
        lambda digest: Q(state__in=IN_FLIGHT_STATES, reservation__isnull=True),
    ),
    # Serving a reservation: warm claims and cold starts alike.
    "claimed": CardGroup(
        "Claimed",
        PodState.CLAIMED.colour,
        lambda digest: (
            Q(state=PodState.CLAIMED) | Q(reservation__isnull=False, state__in=LIVE_STATES)
        ),
    ),
    # What rotation replaces next, so coloured as the draining they are headed for.
    "stale": CardGroup(
        "Stale", PodState.DRAINING.colour, lambda digest: idle_warm_q() & stale_q(digest)
    ),
    "failed": CardGroup("Failed", PodState.FAILED.colour, lambda digest: Q(state=PodState.FAILED)),
}


def pool_counts(digest: str) -> dict[int, dict[str, int]]:
    """Return each pool's pod counts by what an operator asks of it, in one query."""
    rows = (
        PodRecord.objects.exclude(state=PodState.GONE)
        .order_by()
        .values("pool_id")
        .annotate(
            **{name: Count("pk", filter=group.pods(digest)) for name, group in CARD_GROUPS.items()},
            draining=Count("pk", filter=Q(state=PodState.DRAINING)),
            on_current=Count("pk", filter=idle_warm_q() & current_q(digest)),
        )
    )
    return {row.pop("pool_id"): row for row in rows}


def recent_actions(pool_ids: list[int], *, now: datetime) -> dict[int, list[AuditEvent]]:
    """Return the last few audit events of each pool within the recent window, in one query."""
    ranked = (
        AuditEvent.objects.filter(pool_id__in=pool_ids, created_at__gte=now - RECENT_ACTIONS_WINDOW)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("pool_id")],
                order_by=[F("created_at").desc(), F("id").desc()],
            )
        )
        .filter(rank__lte=RECENT_ACTIONS)
        .order_by("pool_id", "rank")
    )
    by_pool: dict[int, list[AuditEvent]] = {pool_id: [] for pool_id in pool_ids}
    for event in ranked:
        by_pool[event.pool_id].append(event)
    return by_pool


def pool_cards(now: datetime, release: ImageRelease | None) -> list[PoolCard]:
    """Return a card for every pool, in pool order."""
    counts = pool_counts(current_digest(release))
    pools = list(Pool.objects.select_related("gpu_type"))
    recent = recent_actions([pool.pk for pool in pools], now=now)
    return [
        PoolCard(pool=pool, recent=recent[pool.pk], **counts.get(pool.pk, {})) for pool in pools
    ]


def pools_context(*, now: datetime, show_idle: bool) -> dict:
    """Return what the pools page and its live update render."""
    release = images.current_release()
    cards = pool_cards(now, release)
    shown = cards if show_idle else [card for card in cards if not card.is_idle]
    return {
        "now": now,
        "release": release,
        "cards": shown,
        "idle_hidden": len(cards) - len(shown),
        "show_idle": show_idle,
        "max_target": MAX_POOL_TARGET,
    }


# --- Pods ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodFilters:
    """The pods an operator asked to see; empty fields do not filter."""

    pool: Pool | None = None
    state: str = ""
    stale: bool = False
    group: str = ""
    """One of CARD_GROUPS: the pods a pool card's count links to."""
    invalid: bool = False
    """A value in the URL named nothing we know: nothing matches, rather than everything."""

    def query(self, **overrides) -> dict[str, str]:
        """Return these filters (with ``overrides``) as GET parameters, empty ones left out."""
        values = {
            "pool": self.pool.pk if self.pool else "",
            "state": self.state,
            "stale": "1" if self.stale else "",
            "group": self.group,
        }
        values.update(overrides)
        return {key: str(value) for key, value in values.items() if value not in ("", None)}

    def url(self, **overrides) -> str:
        query = urlencode(self.query(**overrides))
        return f"?{query}" if query else "?"


@dataclass(frozen=True)
class FilterLink:
    label: str
    url: str
    active: bool


def pod_filter_links(filters: PodFilters) -> dict[str, list[FilterLink]]:
    """Return the state, image and pool-card-count filter links, each keeping the others."""
    states = [s for s in PodState if not s.is_terminal]
    group = CARD_GROUPS.get(filters.group)
    return {
        # A card's count is only ever set from its card; here it can only be cleared.
        "group": [FilterLink(group.label, filters.url(group=""), True)] if group else [],
        "state": [FilterLink("Any", filters.url(state=""), not filters.state)]
        + [
            FilterLink(s.label, filters.url(state=s.value), filters.state == s.value)
            for s in states
        ],
        "stale": [
            FilterLink("Any image", filters.url(stale=""), not filters.stale),
            FilterLink("Stale only", filters.url(stale="1"), filters.stale),
        ],
    }


def pod_rows(filters: PodFilters, release: ImageRelease | None) -> QuerySet:
    """Return the pods we own that match ``filters``, with everything a row shows joined in."""
    digest = current_digest(release)
    pods = (
        PodRecord.objects.exclude(state=PodState.GONE)
        .select_related("pool__gpu_type", "name_lease", "reservation__user")
        .annotate(
            is_stale=ExpressionWrapper(stale_q(digest), output_field=BooleanField()),
            can_recycle=ExpressionWrapper(
                Q(kind=PodKind.WARM, reservation__isnull=True, state__in=RECYCLABLE_STATES),
                output_field=BooleanField(),
            ),
        )
        .order_by("pool__gpu_type__name", "pool__profile", "created_at", "pk")
    )
    if filters.invalid:
        return pods.none()
    if filters.pool is not None:
        pods = pods.filter(pool=filters.pool)
    if filters.state:
        pods = pods.filter(state=filters.state)
    if filters.stale:
        pods = stale_pods(pods, release)
    if filters.group:
        pods = pods.filter(CARD_GROUPS[filters.group].pods(digest))
    return pods


@dataclass(frozen=True)
class PageLink:
    number: int
    url: str
    current: bool = False


@dataclass(frozen=True)
class Pager:
    """Links to the first, last and nearby pages (None marks a gap), and to either side."""

    links: list[PageLink | None]
    previous: str = ""
    next: str = ""


def pager(page: Page, url_for: Callable[[int], str]) -> Pager:
    """Return the links that move through ``page``'s paginator, built by ``url_for(number)``."""
    links: list[PageLink | None] = [
        None
        if number == Paginator.ELLIPSIS
        else PageLink(number, url_for(number), number == page.number)
        for number in page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
    ]
    return Pager(
        links,
        previous=url_for(page.previous_page_number()) if page.has_previous() else "",
        next=url_for(page.next_page_number()) if page.has_next() else "",
    )


def pods_context(*, filters: PodFilters, page_number: int | str, now: datetime) -> dict:
    """Return what the pods page and its live update render: one page of the filtered pods."""
    release = images.current_release()
    paginator = Paginator(pod_rows(filters, release), PODS_PER_PAGE)
    page = paginator.get_page(page_number)
    return {
        "now": now,
        "release": release,
        "filters": filters,
        "page": page,
        "pods": list(page.object_list),
        "pager": pager(page, lambda number: filters.url(page=number)),
        "filter_links": pod_filter_links(filters),
        "pods_url": reverse("ops:pods") + filters.url(page=page.number),
    }


# --- Images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepullRow:
    """The prepuller on one node: its phase and, while pulling, an estimate of how far it is."""

    node_name: str
    gpu_type: str
    phase: PrepullPhase
    holds_image: bool
    message: str = ""
    started_at: datetime | None = None
    took: timedelta | None = None
    percent: int | None = None
    """Estimated percent done; None while pulling with no pull time to estimate from."""
    remaining: float = 0
    """Seconds until the estimate reaches its cap, for the bar to move on its own."""


def typical_pull_time(release: ImageRelease | None) -> timedelta | None:
    """Return the median time nodes took to pull ``release``, or None before any finished."""
    if release is None:
        return None
    took = [
        (finished - started).total_seconds()
        for started, finished in release.prepulls.filter(
            started_at__isnull=False, finished_at__isnull=False
        ).values_list("started_at", "finished_at")
    ]
    return timedelta(seconds=statistics.median(took)) if took else None


def estimate(
    status: PrepullStatus | None, typical: timedelta | None, now: datetime
) -> tuple[int | None, float]:
    """Return (percent, seconds until the cap) of a pull; percent None when it cannot be told."""
    if status is None or status.phase == PrepullPhase.WAITING:
        return 0, 0
    if status.phase == PrepullPhase.DONE:
        return 100, 0
    if status.phase == PrepullPhase.FAILED:
        return 0, 0
    if typical is None or status.started_at is None or typical.total_seconds() <= 0:
        return None, 0
    elapsed = max((now - status.started_at).total_seconds(), 0)
    fraction = min(elapsed / typical.total_seconds(), ESTIMATE_CAP)
    remaining = max(typical.total_seconds() * ESTIMATE_CAP - elapsed, 0)
    return int(fraction * 100), remaining


def prepull_rows(
    release: ImageRelease | None, typical: timedelta | None, now: datetime
) -> list[PrepullRow]:
    """Return the prepuller's progress on every typed node (and any node it reported from).

    Failed nodes come first, then those pulling, waiting and done, each in node-name order.
    """
    nodes = {
        node.name: node
        for node in NodeRecord.objects.filter(gpu_type__isnull=False).select_related("gpu_type")
    }
    statuses = {s.node_name: s for s in release.prepulls.all()} if release is not None else {}
    digest = current_digest(release)
    rows = []
    for name in sorted(set(nodes) | set(statuses), key=natural_order):
        node, status = nodes.get(name), statuses.get(name)
        percent, remaining = estimate(status, typical, now)
        rows.append(
            PrepullRow(
                node_name=name,
                gpu_type=node.gpu_type.name if node is not None else "",
                phase=PrepullPhase(status.phase) if status else PrepullPhase.WAITING,
                holds_image=bool(digest) and node is not None and digest in node.cached_digests,
                message=status.message if status else "",
                started_at=status.started_at if status else None,
                took=status.took if status else None,
                percent=percent,
                remaining=remaining,
            )
        )
    # What needs a look first: failures, then pulls under way, then the rest.
    return sorted(rows, key=lambda row: PHASE_ORDER.index(row.phase))


def natural_order(name: str) -> list:
    """Sort ``h100-2`` before ``h100-10``, as people count nodes."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def images_context(*, now: datetime) -> dict:
    """Return what the images page and its live update render."""
    release = images.current_release()
    history = list(ImageRelease.objects.filter(repo=settings.IMAGE_REPOSITORY)[:RELEASE_HISTORY])
    summary = images.prepull_summary(release)
    # A release's first pulls are estimated from the one before it.
    typical, typical_from = summary["typical"], release
    if typical is None:
        previous = next((r for r in history if release is None or r.pk != release.pk), None)
        typical, typical_from = typical_pull_time(previous), previous
    rows = prepull_rows(release, typical, now)
    return {
        "now": now,
        "release": release,
        "history": history,
        "summary": summary,
        "typical": typical,
        "typical_from": typical_from if typical is not None else None,
        "prepulls": rows,
        "failed_nodes": [row for row in rows if row.phase == PrepullPhase.FAILED],
        "rollout": release.prepuller_status if release is not None else {},
    }


# --- Name leases --------------------------------------------------------------------------------


def lease_counts(now: datetime) -> dict[str, int]:
    """Count unreleased leases: held by reservations, warm placeholders, and past expiry."""
    live = Q(expires_at__gt=now)
    return DomainMapping.objects.filter(released_at__isnull=True).aggregate(
        active=Count("pk", filter=live & Q(holder=LeaseHolder.RESERVATION)),
        warm=Count("pk", filter=live & Q(holder=LeaseHolder.WARM)),
        expired=Count("pk", filter=~live),
    )


def names_context(*, now: datetime) -> dict:
    """Return what the names page and its live update render."""
    unreleased = DomainMapping.objects.filter(released_at__isnull=True).order_by("name")
    live = unreleased.filter(expires_at__gt=now)
    orphans = find_orphans(now=now)
    return {
        "now": now,
        "counts": lease_counts(now) | {"orphans": len(orphans)},
        "orphans": orphans,
        "active": list(
            live.filter(holder=LeaseHolder.RESERVATION).select_related("reservation__user")[
                :LEASES_SHOWN
            ]
        ),
        "warm": list(live.filter(holder=LeaseHolder.WARM)[:LEASES_SHOWN]),
        "expired": list(unreleased.filter(expires_at__lte=now)[:LEASES_SHOWN]),
        "leases_shown": LEASES_SHOWN,
    }


# --- Audit log ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    pool: Pool | None = None
    pod: str = ""
    actor: str = ""
    action: str = ""
    invalid: bool = False
    """A value in the URL named nothing we know: nothing matches, rather than everything."""

    def query(self, **overrides) -> dict[str, str]:
        values = {
            "pool": self.pool.pk if self.pool else "",
            "pod": self.pod,
            "actor": self.actor,
            "action": self.action,
        }
        values.update(overrides)
        return {key: str(value) for key, value in values.items() if value not in ("", None)}

    def url(self, **overrides) -> str:
        query = urlencode(self.query(**overrides))
        return f"?{query}" if query else "?"


def audit_events(filters: AuditFilters) -> QuerySet:
    """Return the audit log, newest first, narrowed by ``filters``."""
    events = AuditEvent.objects.select_related("pool__gpu_type")
    if filters.invalid:
        return events.none()
    if filters.pool is not None:
        events = events.filter(pool=filters.pool)
    if filters.pod:
        events = events.filter(pod_name=filters.pod)
    if filters.actor:
        events = events.filter(actor=filters.actor)
    if filters.action:
        events = events.filter(action=filters.action)
    return events


def audit_context(*, filters: AuditFilters, page_number: int | str, now: datetime) -> dict:
    """Return what the audit page and its live update render: one page of matching events."""
    page = Paginator(audit_events(filters), EVENTS_PER_PAGE).get_page(page_number)
    return {
        "now": now,
        "filters": filters,
        "page": page,
        "events": list(page.object_list),
        "pager": pager(page, lambda number: filters.url(page=number)),
    }
