"""How a reservation is shown: its card, rendered by the page and pushed over the WebSocket.

The page and ``consumers.MyReservationsConsumer`` both call ``render_card``, so a live update is
exactly what a reload would show.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from django.db.models import Prefetch, Q
from django.template.loader import render_to_string

from pool import images
from pool.models import PodRecord, PodState
from reservations import capacity
from reservations.expiry import expiry_warning
from reservations.forms import EXTENSION_CHOICES_MINUTES, minutes_text
from reservations.models import OPEN_STATUSES, DomainMapping, Reservation, ReservationStatus

CARD_TEMPLATE = "home.html#reservation-card"
RECENTLY_ENDED = timedelta(hours=24)
STEPS = ("Scheduling", "Pulling image", "Starting", "Ready")
_PULLING = ("ContainerCreating", "PodInitializing", "Init:")


@dataclass(frozen=True)
class PullEstimate:
    """How far an image pull probably is, from the prepuller's typical pull time."""

    typical: timedelta
    elapsed: timedelta

    @property
    def percent(self) -> int:
        return min(95, int(100 * self.elapsed / self.typical)) if self.typical else 95

    @property
    def typical_text(self) -> str:
        return capacity.duration_text(self.typical)


@dataclass
class ReservationCard:
    """One reservation with what its card shows: name, pod progress, queue place, time left."""

    reservation: Reservation
    now: datetime

    @property
    def status(self) -> ReservationStatus:
        return self.reservation.status_enum

    @cached_property
    def pod(self) -> PodRecord | None:
        live = [p for p in self.reservation.pods.all() if p.state != PodState.GONE]
        return max(live, key=lambda p: p.created_at, default=None)

    @cached_property
    def lease(self) -> DomainMapping | None:
        """The name lease the reservation holds, or (once ended) the one it held last."""
        leases = list(self.reservation.name_leases.all())
        live = [lease for lease in leases if lease.released_at is None]
        return (live or leases or [None])[0]

    @property
    def fqdn(self) -> str:
        return self.lease.fqdn if self.lease else ""

    @property
    def ssh_command(self) -> str:
        return f"ssh {self.fqdn}" if self.fqdn else ""

    @property
    def time_left(self) -> timedelta | None:
        return self.reservation.time_left(self.now)

    @property
    def time_left_text(self) -> str:
        return capacity.duration_text(self.time_left) if self.time_left is not None else ""

    @property
    def expiry_warning(self) -> int | None:
        return expiry_warning(self.time_left)

    @property
    def extensions(self) -> list[tuple[int, str]]:
        """The extensions offered, as (minutes, label)."""
        return [(m, minutes_text(m)) for m in EXTENSION_CHOICES_MINUTES]

    @property
    def duration_text(self) -> str:
        return minutes_text(int(self.reservation.duration.total_seconds() // 60))

    @cached_property
    def queue_position(self) -> int | None:
        if self.status != ReservationStatus.QUEUED:
            return None
        return capacity.queue_position(self.reservation)

    @cached_property
    def queue_estimate(self) -> datetime | None:
        if self.status != ReservationStatus.QUEUED:
            return None
        return capacity.queue_start_estimate(self.reservation, self.now)

    @property
    def queue_wait(self) -> str:
        if self.queue_estimate is None:
            return ""
        return capacity.duration_text(self.queue_estimate - self.now)

    @cached_property
    def waiting_for_image(self) -> bool:
        return self.status == ReservationStatus.QUEUED and images.current_release() is None

    @property
    def step(self) -> int:
        """Index into STEPS of what the reservation's pod is doing."""
        if self.status == ReservationStatus.ACTIVE:
            return 3
        if self.pod is None or not self.pod.node_name:
            return 0
        return 2 if self.pod.progress == "Starting" else 1

    @property
    def steps(self) -> list[tuple[str, str]]:
        """Each step's name and whether it is done, current or still to come."""
        return [
            (name, "done" if i < self.step else "current" if i == self.step else "todo")
            for i, name in enumerate(STEPS)
        ]

    @property
    def progress(self) -> str:
        """What the pod is doing, in words."""
        pod = self.pod
        if pod is None or pod.state == PodState.SLOT:
            return "Creating the pod"
        if pod.progress.startswith("Unschedulable"):
            return f"Waiting for a node with room ({pod.progress.partition(': ')[2]})"
        if pod.progress.startswith(_PULLING):
            return f"Pulling the image on {pod.node_name}"
        if pod.progress in ("", "Pending"):
            return "Waiting for the scheduler"
        return pod.progress

    @cached_property
    def pull(self) -> PullEstimate | None:
        if self.step != 1 or self.pod is None or not self.pod.node_name:
            return None
        release = images.current_release()
        typical = images.prepull_summary(release)["typical"]
        if typical is None:
            return None
        started = self.pod.pod_created_at or self.pod.created_at
        return PullEstimate(typical=typical, elapsed=max(self.now - started, timedelta(0)))


def _with_card_data(reservations):
    return reservations.select_related("pool__gpu_type").prefetch_related(
        "pods",
        Prefetch("name_leases", queryset=DomainMapping.objects.order_by("-created_at")),
    )


def cards_for(user, now: datetime) -> list[ReservationCard]:
    """Return the user's open reservations and those ended in the last day, newest first."""
    mine = Reservation.objects.filter(user=user).filter(
        Q(status__in=OPEN_STATUSES) | Q(ended_at__gte=now - RECENTLY_ENDED)
    )
    return [ReservationCard(r, now) for r in _with_card_data(mine)]


def card_for(user, reservation_id, now: datetime) -> ReservationCard | None:
    """Return the card of one of ``user``'s reservations; None for anyone else's."""
    reservation = _with_card_data(Reservation.objects.filter(user=user, pk=reservation_id)).first()
    return ReservationCard(reservation, now) if reservation else None


def render_card(card: ReservationCard, *, oob: bool = False, error: str = "") -> str:
    """Render the card partial; ``oob`` marks it for htmx to swap in by id."""
    return render_to_string(CARD_TEMPLATE, {"card": card, "oob": oob, "error": error})
