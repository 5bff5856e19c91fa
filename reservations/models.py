"""Reservations, the SSH names they lease, and users' SSH keys."""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from pool.audit import SYSTEM
from pool.lifecycle import IllegalTransition, transition


class ReservationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    STARTING = "starting", "Starting"
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"

    @property
    def colour(self) -> str:
        return _RESERVATION_COLOURS[self]

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


_RESERVATION_COLOURS = {
    ReservationStatus.QUEUED: "grey",
    ReservationStatus.STARTING: "blue",
    ReservationStatus.ACTIVE: "green",
    ReservationStatus.EXPIRED: "grey",
    ReservationStatus.CANCELLED: "grey",
    ReservationStatus.FAILED: "red",
}
OPEN_STATUSES = (ReservationStatus.QUEUED, ReservationStatus.STARTING, ReservationStatus.ACTIVE)
TERMINAL_STATUSES = (
    ReservationStatus.EXPIRED,
    ReservationStatus.CANCELLED,
    ReservationStatus.FAILED,
)


class ExtensionRefused(ValueError):
    """An extension would take a reservation past its total limit."""


class Reservation(models.Model):
    """A user's claim on a GPU dev server for a while."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reservations"
    )
    pool = models.ForeignKey("pool.Pool", on_delete=models.PROTECT, related_name="reservations")
    gpu_count = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=10,
        choices=ReservationStatus.choices,
        default=ReservationStatus.QUEUED,
        db_index=True,
    )
    duration = models.DurationField(help_text="How long the user asked for, from activation.")
    requested_name = models.CharField(max_length=63, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    pod_name = models.CharField(max_length=63, blank=True)
    warm_claimed = models.BooleanField(default=False)
    host_label = models.CharField(max_length=32, blank=True)
    failure_reason = models.TextField(blank=True)
    stamped_at = models.DateTimeField(
        null=True, blank=True, help_text="When the pod was seen carrying the user's keys."
    )
    warning = models.CharField(
        max_length=300, blank=True, help_text="A problem the user should know of; still usable."
    )
    expiry_warned = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Minutes before expiry of the last warning sent."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "status"], name="reservation_user_status")]

    def __str__(self) -> str:
        return f"{self.short_id} ({self.user})"

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    @property
    def status_enum(self) -> ReservationStatus:
        return ReservationStatus(self.status)

    @property
    def requested_hours(self) -> float:
        return self.duration.total_seconds() / 3600

    def time_left(self, now: datetime) -> timedelta | None:
        if self.expires_at is None or self.status != ReservationStatus.ACTIVE:
            return None
        return max(self.expires_at - now, timedelta(0))

    def _move(self, *, allowed_from, to, actor, action, reason="", extra_filter=None, **changes):
        transition(
            self,
            field="status",
            allowed_from=allowed_from,
            to=to,
            actor=actor,
            action=action,
            reason=reason,
            extra_filter=extra_filter,
            audit={"pool": self.pool, "pod_name": self.pod_name, "reservation": self},
            **changes,
        )

    def start(self, pod_name: str, *, actor: str = SYSTEM) -> None:
        """Record that a cold pod is being started for this queued reservation."""
        self._move(
            allowed_from=[ReservationStatus.QUEUED],
            to=ReservationStatus.STARTING,
            actor=actor,
            action="reservation_start",
            reason=f"cold start on {pod_name}",
            pod_name=pod_name,
        )

    def activate(self, *, now: datetime, pod_name: str, warm: bool, actor: str = SYSTEM) -> None:
        """Make the reservation usable from ``now`` for its requested duration."""
        self._move(
            allowed_from=[ReservationStatus.QUEUED, ReservationStatus.STARTING],
            to=ReservationStatus.ACTIVE,
            actor=actor,
            action="reservation_active",
            reason=f"{'warm claim' if warm else 'cold start'} of {pod_name}",
            ready_at=now,
            expires_at=now + self.duration,
            pod_name=pod_name,
            warm_claimed=warm,
            host_label=f"gpu-dev-{self.short_id}",
        )

    def extend(self, by: timedelta, *, actor: str) -> None:
        """Push the expiry back by ``by``, up to RESERVATION_MAX_TOTAL_HOURS from activation."""
        if self.status != ReservationStatus.ACTIVE or self.expires_at is None:
            raise IllegalTransition(f"Reservation {self.short_id} is {self.status}, not active.")
        new_expiry = self.expires_at + by
        cap = self.ready_at + timedelta(hours=settings.RESERVATION_MAX_TOTAL_HOURS)
        if by <= timedelta(0) or new_expiry > cap:
            left = max(cap - self.expires_at, timedelta(0))
            raise ExtensionRefused(
                f"Reservations last at most {settings.RESERVATION_MAX_TOTAL_HOURS:g} hours in all; "
                f"this one can be extended by {_hours_minutes(left)} more."
            )
        self._move(
            allowed_from=[ReservationStatus.ACTIVE],
            to=ReservationStatus.ACTIVE,
            actor=actor,
            action="reservation_extend",
            reason=f"extended by {_hours_minutes(by)} to {new_expiry:%Y-%m-%d %H:%M} UTC",
            extra_filter={"expires_at": self.expires_at},
            expires_at=new_expiry,
            expiry_warned=None,
        )

    def cancel(self, *, now: datetime, actor: str, reason: str = "cancelled") -> None:
        """End an open reservation at the user's (or the queue timeout's) request."""
        self._move(
            allowed_from=OPEN_STATUSES,
            to=ReservationStatus.CANCELLED,
            actor=actor,
            action="reservation_cancel",
            reason=reason,
            ended_at=now,
        )

    def expire(self, *, now: datetime, actor: str = SYSTEM) -> None:
        """End an active reservation whose time is up."""
        self._move(
            allowed_from=[ReservationStatus.ACTIVE],
            to=ReservationStatus.EXPIRED,
            actor=actor,
            action="reservation_expire",
            reason="its time is up",
            ended_at=now,
        )

    def fail(self, reason: str, *, now: datetime, actor: str = SYSTEM) -> None:
        """End an open reservation that cannot be served, saying why."""
        self._move(
            allowed_from=OPEN_STATUSES,
            to=ReservationStatus.FAILED,
            actor=actor,
            action="reservation_fail",
            reason=reason,
            ended_at=now,
            failure_reason=reason,
        )


def _hours_minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LeaseHolder(models.TextChoices):
    WARM = "warm", "Warm placeholder"
    RESERVATION = "reservation", "Reservation"


class DomainMappingQuerySet(models.QuerySet):
    def live(self, now: datetime) -> "DomainMappingQuerySet":
        """Leases that hold their name: unreleased and unexpired."""
        return self.filter(released_at__isnull=True, expires_at__gt=now)

    def lapsed(self, now: datetime) -> "DomainMappingQuerySet":
        """Leases past their expiry that nobody has released yet: their names are free."""
        return self.filter(released_at__isnull=True, expires_at__lte=now)


class DomainMapping(models.Model):
    """A lease on an SSH name (``<name>.<SSH_DOMAIN>``), held by a warm pod or a reservation.

    A name is taken while its lease is unreleased and unexpired. ``base`` and ``suffix`` split
    ``bright-fox-3`` into ``bright-fox`` and 3 (1 for no suffix), and ``from_catalogue`` marks
    bases from our word lists, so allocation can ask about base names without scanning every
    lease.
    """

    name = models.CharField(max_length=63)
    base = models.CharField(max_length=63)
    suffix = models.PositiveIntegerField(default=1)
    from_catalogue = models.BooleanField(default=False)
    holder = models.CharField(max_length=12, choices=LeaseHolder.choices)
    pod_name = models.CharField(max_length=63, blank=True)
    reservation = models.ForeignKey(
        Reservation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="name_leases",
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    objects = DomainMappingQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "name lease"
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(released_at__isnull=True),
                name="one_unreleased_lease_per_name",
            )
        ]
        indexes = [
            models.Index(
                fields=["suffix", "expires_at"],
                condition=Q(released_at__isnull=True, from_catalogue=True),
                name="lease_unreleased_catalogue",
            ),
            models.Index(
                fields=["base", "suffix"],
                condition=Q(released_at__isnull=True),
                name="lease_unreleased_by_base",
            ),
            models.Index(
                fields=["holder", "expires_at"],
                condition=Q(released_at__isnull=True),
                name="lease_unreleased_by_holder",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{settings.SSH_DOMAIN}"

    def is_live(self, now: datetime) -> bool:
        return self.released_at is None and self.expires_at > now

    def release(self, *, now: datetime) -> bool:
        """Free the name at once; return False if it was already released."""
        released = DomainMapping.objects.filter(pk=self.pk, released_at__isnull=True).update(
            released_at=now
        )
        self.released_at = self.released_at or now
        return released == 1

    def transfer_to(self, reservation: Reservation, *, expires_at: datetime) -> None:
        """Hand a warm pod's placeholder lease to the reservation that claimed the pod."""
        moved = DomainMapping.objects.filter(
            pk=self.pk, holder=LeaseHolder.WARM, released_at__isnull=True
        ).update(holder=LeaseHolder.RESERVATION, reservation=reservation, expires_at=expires_at)
        if moved != 1:
            raise IllegalTransition(f"Name lease {self.name} is not a live warm placeholder.")
        self.holder, self.reservation, self.expires_at = (
            LeaseHolder.RESERVATION,
            reservation,
            expires_at,
        )


class SshKey(models.Model):
    """An SSH public key a user reaches their dev servers with."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys"
    )
    title = models.CharField(max_length=100, blank=True)
    public_key = models.TextField()
    fingerprint = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "SSH key"
        constraints = [
            models.UniqueConstraint(fields=["user", "fingerprint"], name="one_key_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.title or self.fingerprint} ({self.user})"
