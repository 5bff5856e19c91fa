"""What each GPU type can offer now, and honest estimates of how long a request will wait.

Room is counted from the mirror: free GPUs (allocatable minus used) on ready nodes of the type, less
the GPUs of our pods that are not on a node yet, so a burst of requests does not promise the
same GPUs twice. With ``WARM_POD_PRIORITY_CLASS`` set, the scheduler preempts idle warm pods for
real work, so their GPUs count as free too (osdc #222 queued whole-node requests behind them).

Estimates say what they are based on:

- a ready idle warm pod of the pool: seconds;
- room on a node: the median time recent cold starts of the type took from slot to ready
  (or "a few minutes" with no history);
- queued: when enough active reservations of the type are due to end to free the GPUs the
  queue ahead needs, plus a cold start; reservations may be extended or end early.
"""

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, F, IntegerField, Q, Sum, When

from pool.models import GpuType, NodeRecord, PodKind, PodRecord, PodState
from reservations.models import Reservation, ReservationStatus

COLD_START_SAMPLE = 20
COLD_START_HISTORY = timedelta(days=7)

_POD_GPUS = Case(
    When(reservation__isnull=False, then=F("reservation__gpu_count")),
    default=F("pool__gpus_per_pod"),
    output_field=IntegerField(),
)


@dataclass(frozen=True)
class Room:
    """Free GPUs of one type: on its best ready node, and in all after unplaced pods."""

    ready_nodes: int
    largest_on_a_node: int
    total: int

    def fits(self, gpu_count: int) -> bool:
        """Return whether a pod of ``gpu_count`` GPUs (0: a CPU pod) would find a node now."""
        if gpu_count == 0:
            return self.ready_nodes > 0
        return min(self.largest_on_a_node, self.total) >= gpu_count


def room_for(gpu_type: GpuType) -> Room:
    """Count the free GPUs of ``gpu_type`` from the node and pod mirrors."""
    free = {
        node.name: node.gpus_free
        for node in NodeRecord.objects.filter(gpu_type=gpu_type, ready=True).only(
            "name", "gpus_allocatable", "gpus_used"
        )
    }
    if settings.WARM_POD_PRIORITY_CLASS:
        preemptible = (
            PodRecord.objects.idle_warm()
            .filter(node_name__in=free)
            .values("node_name")
            .annotate(gpus=Sum("pool__gpus_per_pod"))
            .values_list("node_name", "gpus")
        )
        for name, gpus in preemptible:
            free[name] += gpus or 0
    unplaced = (
        PodRecord.objects.filter(
            pool__gpu_type=gpu_type,
            state__in=(PodState.SLOT, PodState.PENDING),
            node_name="",
        ).aggregate(gpus=Sum(_POD_GPUS))["gpus"]
        or 0
    )
    return Room(
        ready_nodes=len(free),
        largest_on_a_node=max(free.values(), default=0),
        total=sum(free.values()) - unplaced,
    )


def typical_cold_start(gpu_type: GpuType, now: datetime) -> timedelta | None:
    """Return the median time from slot to ready of the type's recent cold starts, if any."""
    rows = (
        PodRecord.objects.filter(
            pool__gpu_type=gpu_type,
            kind=PodKind.RESERVATION,
            ready_at__isnull=False,
            created_at__gte=now - COLD_START_HISTORY,
        )
        .order_by("-ready_at")
        .values_list("created_at", "ready_at")[:COLD_START_SAMPLE]
    )
    took = [(ready - created).total_seconds() for created, ready in rows if ready >= created]
    return timedelta(seconds=statistics.median(took)) if took else None


def _queued_of_type(gpu_type_id: int):
    return Reservation.objects.filter(
        status=ReservationStatus.QUEUED, pool__gpu_type_id=gpu_type_id
    )


def _ahead_of(reservation: Reservation) -> Q:
    return Q(created_at__lt=reservation.created_at) | Q(
        created_at=reservation.created_at, pk__lt=reservation.pk
    )


def queue_position(reservation: Reservation) -> int:
    """Return the reservation's place in its GPU type's queue, first come first served."""
    ahead = _queued_of_type(reservation.pool.gpu_type_id).filter(_ahead_of(reservation))
    return ahead.count() + 1


def queue_start_estimate(reservation: Reservation, now: datetime) -> datetime | None:
    """Return when a queued reservation should start; None when nothing known frees room."""
    gpu_type = reservation.pool.gpu_type
    ahead = _queued_of_type(gpu_type.pk).filter(_ahead_of(reservation))
    return _start_estimate(
        gpu_type,
        units_needed=_units(ahead) + max(reservation.gpu_count, 1),
        now=now,
    )


def _units(reservations) -> int:
    """Count the GPUs the reservations ask for; a CPU reservation counts as one unit."""
    rows = reservations.values_list("gpu_count", flat=True)
    return sum(max(count, 1) for count in rows)


def _start_estimate(gpu_type: GpuType, *, units_needed: int, now: datetime) -> datetime | None:
    room = room_for(gpu_type)
    free = room.ready_nodes if gpu_type.is_cpu else max(room.total, 0)
    cold_start = typical_cold_start(gpu_type, now) or timedelta(minutes=3)
    if units_needed <= free:
        return now + cold_start
    freed = free
    ending = (
        Reservation.objects.filter(status=ReservationStatus.ACTIVE, pool__gpu_type=gpu_type)
        .order_by("expires_at")
        .values_list("expires_at", "gpu_count")
    )
    for expires_at, gpu_count in ending:
        freed += max(gpu_count, 1)
        if freed >= units_needed:
            return max(expires_at, now) + cold_start
    return None


@dataclass(frozen=True)
class TypeOverview:
    """One row of the capacity panel beside the reserve form."""

    gpu_type: GpuType
    warm_ready: int
    room: Room
    queued: int
    wait: str


def overview(now: datetime) -> list[TypeOverview]:
    """Return, per GPU type: warm pods ready, free GPUs, queue length and the expected wait."""
    warm = Counter(PodRecord.objects.idle_warm().values_list("pool__gpu_type_id", flat=True))
    queued = Counter(
        Reservation.objects.filter(status=ReservationStatus.QUEUED).values_list(
            "pool__gpu_type_id", flat=True
        )
    )
    rows = []
    for gpu_type in GpuType.objects.all():
        room = room_for(gpu_type)
        rows.append(
            TypeOverview(
                gpu_type=gpu_type,
                warm_ready=warm[gpu_type.pk],
                room=room,
                queued=queued[gpu_type.pk],
                wait=_wait_text(gpu_type, room, warm[gpu_type.pk], queued[gpu_type.pk], now),
            )
        )
    # Types the cluster can serve now come first; the rest are listed for completeness.
    return sorted(rows, key=lambda row: (row.room.ready_nodes == 0, row.gpu_type.name))


def suggested_type(rows: list[TypeOverview]) -> GpuType | None:
    """Return the type to offer first: one with a warm pod ready, else one with room."""
    for row in rows:
        if row.warm_ready:
            return row.gpu_type
    for row in rows:
        if row.room.fits(row.gpu_type.allowed_gpu_counts()[0]):
            return row.gpu_type
    return None


def _wait_text(gpu_type: GpuType, room: Room, warm: int, queued: int, now: datetime) -> str:
    smallest = gpu_type.allowed_gpu_counts()[0]
    if warm:
        return "seconds (warm pod ready)"
    if not queued and room.fits(smallest):
        typical = typical_cold_start(gpu_type, now)
        return f"about {duration_text(typical)} (cold start)" if typical else "a few minutes"
    if room.ready_nodes == 0 and not NodeRecord.objects.filter(gpu_type=gpu_type).exists():
        return "no nodes of this type"
    start = _start_estimate(
        gpu_type,
        units_needed=queued * max(smallest, 1) + max(smallest, 1),
        now=now,
    )
    if start is None:
        return "unknown (queued)"
    return f"about {duration_text(start - now)} (queued)"


def duration_text(delta: timedelta) -> str:
    """Say a duration the way a person would: ``45 s``, ``7 min``, ``2 h 05 min``."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
