"""Orphaned name leases: live leases that nothing live holds any more (PR #199).

A warm placeholder is an orphan when no live warm pod holds it; a reservation's lease is one
when its reservation has ended or is gone. ``find_orphans`` is the dry run; ``clean_up``
releases exactly the leases it is given that are *still* orphans when it runs, and keeps any
that became live in between.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef

from gpudev_site import metrics
from pool import audit, broadcast
from pool.models import LIVE_STATES, PodRecord
from reservations.models import TERMINAL_STATUSES, DomainMapping, LeaseHolder


@dataclass(frozen=True)
class Orphan:
    lease_id: int
    name: str
    holder: str
    reason: str
    pod_name: str = ""


@dataclass(frozen=True)
class CleanupResult:
    released: list[str]
    kept: list[str]


def find_orphans(*, now: datetime, lease_ids: Iterable[int] | None = None) -> list[Orphan]:
    """Return every live lease no live pod or open reservation holds, with why."""
    leases = DomainMapping.objects.live(now).select_related("reservation")
    if lease_ids is not None:
        leases = leases.filter(pk__in=list(lease_ids))
    held_by_live_pod = PodRecord.objects.filter(name_lease=OuterRef("pk"), state__in=LIVE_STATES)
    warm = leases.filter(holder=LeaseHolder.WARM).annotate(held=Exists(held_by_live_pod))
    orphans = [
        Orphan(lease.pk, lease.name, lease.holder, _warm_reason(lease), lease.pod_name)
        for lease in warm.filter(held=False)
    ]
    for lease in leases.filter(holder=LeaseHolder.RESERVATION):
        reservation = lease.reservation
        if reservation is None:
            reason = "its reservation is gone"
        elif reservation.status in TERMINAL_STATUSES:
            reason = f"reservation {reservation.short_id} {reservation.status}"
        else:
            continue
        orphans.append(Orphan(lease.pk, lease.name, lease.holder, reason, lease.pod_name))
    return sorted(orphans, key=lambda orphan: orphan.name)


def _warm_reason(lease: DomainMapping) -> str:
    if lease.pod_name:
        return f"warm placeholder; pod {lease.pod_name} is gone or holds another name"
    return "warm placeholder held by no pod"


def clean_up(lease_ids: Iterable[int], *, now: datetime, actor: str) -> CleanupResult:
    """Release the given leases that are still orphans now; keep the rest."""
    wanted = set(lease_ids)
    with transaction.atomic():
        orphans = find_orphans(now=now, lease_ids=wanted)
        released = []
        for orphan in orphans:
            if DomainMapping.objects.filter(pk=orphan.lease_id, released_at__isnull=True).update(
                released_at=now
            ):
                released.append(orphan.name)
                audit.record(
                    actor=actor,
                    action="lease_cleanup",
                    reason=f"orphaned name {orphan.name}: {orphan.reason}",
                    pod_name=orphan.pod_name,
                )
        kept_ids = wanted - {orphan.lease_id for orphan in orphans}
        kept = sorted(DomainMapping.objects.filter(pk__in=kept_ids).values_list("name", flat=True))
        if released:
            broadcast.names_changed()
            metrics.ORPHAN_CLEANUPS.inc(len(released))
    return CleanupResult(released=sorted(released), kept=kept)
