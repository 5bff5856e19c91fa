"""Pools of warm pods, the pods and nodes we mirror from the cluster, images, and the audit log."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from pool.audit import RECONCILER
from pool.lifecycle import transition

SHORT_DIGEST_LENGTH = 12


def short_digest(digest: str) -> str:
    """Return ``sha256:ab12cd34ef56`` for a full digest, or "unknown" for an empty one."""
    if not digest:
        return "unknown"
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:SHORT_DIGEST_LENGTH]}" if value else digest[:SHORT_DIGEST_LENGTH]


class GpuType(models.Model):
    """A kind of accelerator (or CPU-only node) that reservations ask for."""

    name = models.SlugField(max_length=40, unique=True)
    gpus_per_node = models.PositiveSmallIntegerField(
        help_text="GPUs (or MIG slices) each node of this type offers; 0 for CPU types."
    )
    is_mig = models.BooleanField(default=False, help_text="A MIG slice type of a larger GPU.")
    node_label = models.CharField(
        max_length=200, help_text="Node selector for this type, as key=value."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_cpu(self) -> bool:
        return self.gpus_per_node == 0

    def allowed_gpu_counts(self) -> list[int]:
        """Return the GPU counts a reservation of this type may ask for."""
        if self.is_cpu:
            return [0]
        counts, count = [], 1
        while count <= self.gpus_per_node:
            counts.append(count)
            count *= 2
        return counts

    def node_selector(self) -> dict[str, str]:
        key, _, value = self.node_label.partition("=")
        return {key: value}


class PoolQuerySet(models.QuerySet):
    def locked(self, pk: int) -> "Pool":
        """The pool with its row held until commit (call inside a transaction).

        Only the pool's own row, and as NO KEY UPDATE: a reservation inserted meanwhile (which
        takes KEY SHARE on its pool) does not wait, and the GPU type row, which capacity
        decisions lock first, is never locked here, so the two can never deadlock.
        """
        return (
            self.select_for_update(no_key=True, of=("self",)).select_related("gpu_type").get(pk=pk)
        )


class Pool(models.Model):
    """Warm pods of one (GPU type, profile), kept at ``target`` by the reconciler."""

    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, related_name="pools")
    profile = models.SlugField(max_length=40, default="default")
    gpus_per_pod = models.PositiveSmallIntegerField()
    cpu_request = models.CharField(max_length=16, default="4")
    memory_request = models.CharField(max_length=16, default="16Gi")
    target = models.PositiveSmallIntegerField(default=0)
    max_age_hours = models.FloatField(
        null=True, blank=True, help_text="Recycle warm pods older than this; blank: the default."
    )
    rotation_paused = models.BooleanField(default=False)
    spawn_failures = models.PositiveIntegerField(
        default=0, help_text="Warm spawns failed in a row; drives the backoff."
    )
    spawn_backoff_until = models.DateTimeField(null=True, blank=True)

    objects = PoolQuerySet.as_manager()

    class Meta:
        ordering = ["gpu_type__name", "profile"]
        constraints = [
            models.UniqueConstraint(fields=["gpu_type", "profile"], name="one_pool_per_profile")
        ]

    def __str__(self) -> str:
        return f"{self.gpu_type.name}/{self.profile}"

    @property
    def slug(self) -> str:
        return f"{self.gpu_type.name}-{self.profile}"

    def max_age(self) -> timedelta:
        hours = self.max_age_hours or settings.WARM_POD_MAX_AGE_HOURS
        return timedelta(hours=hours)


class ImageRelease(models.Model):
    """One digest the tracked tag pointed at, with the immutable ref pods are pinned to."""

    repo = models.CharField(max_length=255)
    tag = models.CharField(max_length=128)
    digest = models.CharField(max_length=80)
    immutable_ref = models.CharField(max_length=400)
    context_hash = models.CharField(max_length=64, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    is_current = models.BooleanField(default=False)
    prepuller_status = models.JSONField(
        default=dict, blank=True, help_text="The prepuller DaemonSet's rollout counts."
    )

    class Meta:
        ordering = ["-first_seen_at"]
        get_latest_by = "first_seen_at"
        constraints = [
            models.UniqueConstraint(fields=["repo", "digest"], name="one_release_per_digest"),
            models.UniqueConstraint(
                fields=["repo"], condition=Q(is_current=True), name="one_current_release"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repo}:{self.tag} {self.short_digest}"

    @property
    def short_digest(self) -> str:
        return short_digest(self.digest)


class PodKind(models.TextChoices):
    WARM = "warm", "Warm"
    RESERVATION = "reservation", "Reservation"


class PodState(models.TextChoices):
    """Where a pod of ours is in its life; ``slot`` is written before the pod exists."""

    SLOT = "slot", "Spawn slot"
    PENDING = "pending", "Starting"
    READY = "ready", "Ready"
    CLAIMED = "claimed", "Claimed"
    FAILED = "failed", "Failed"
    DRAINING = "draining", "Draining"
    GONE = "gone", "Gone"

    @property
    def colour(self) -> str:
        return _POD_STATE_COLOURS[self]

    @property
    def is_terminal(self) -> bool:
        return self == PodState.GONE


_POD_STATE_COLOURS = {
    PodState.SLOT: "grey",
    PodState.PENDING: "blue",
    PodState.READY: "green",
    PodState.CLAIMED: "purple",
    PodState.FAILED: "red",
    PodState.DRAINING: "orange",
    PodState.GONE: "grey",
}
IN_FLIGHT_STATES = (PodState.SLOT, PodState.PENDING)
LIVE_STATES = (PodState.SLOT, PodState.PENDING, PodState.READY, PodState.CLAIMED)
RECYCLABLE_STATES = (PodState.SLOT, PodState.PENDING, PodState.READY, PodState.FAILED)


class PodRecordQuerySet(models.QuerySet):
    def live(self) -> "PodRecordQuerySet":
        return self.filter(state__in=LIVE_STATES)

    def idle_warm(self) -> "PodRecordQuerySet":
        return self.filter(kind=PodKind.WARM, state=PodState.READY, reservation__isnull=True)


class PodRecord(models.Model):
    """A pod we own: the database's truth about it, mirrored from the cluster by the watcher."""

    name = models.CharField(max_length=63, unique=True)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="pods")
    kind = models.CharField(max_length=12, choices=PodKind.choices, default=PodKind.WARM)
    state = models.CharField(
        max_length=10, choices=PodState.choices, default=PodState.SLOT, db_index=True
    )
    node_name = models.CharField(max_length=253, blank=True)
    image_ref = models.CharField(max_length=400, blank=True)
    running_digest = models.CharField(max_length=80, blank=True)
    progress = models.CharField(
        max_length=200, blank=True, help_text="What the pod is doing now, as the kubelet says it."
    )
    created_at = models.DateTimeField(default=timezone.now)
    pod_created_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    reservation = models.ForeignKey(
        "reservations.Reservation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="pods",
    )
    name_lease = models.ForeignKey(
        "reservations.DomainMapping",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="pods",
    )
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PodRecordQuerySet.as_manager()

    class Meta:
        ordering = ["pool", "created_at"]
        indexes = [models.Index(fields=["pool", "state"], name="pod_pool_state")]

    def __str__(self) -> str:
        return self.name

    @property
    def state_enum(self) -> PodState:
        return PodState(self.state)

    @property
    def is_in_flight(self) -> bool:
        return self.state in IN_FLIGHT_STATES

    @property
    def short_digest(self) -> str:
        return short_digest(self.running_digest)

    def _move(self, *, allowed_from, to, actor, action, reason="", extra_filter=None, **changes):
        reservation = changes.get("reservation", self.reservation)
        transition(
            self,
            field="state",
            allowed_from=allowed_from,
            to=to,
            actor=actor,
            action=action,
            reason=reason,
            extra_filter=extra_filter,
            audit={"pool": self.pool, "pod_name": self.name, "reservation": reservation},
            **changes,
        )

    def mark_created(self, *, now: datetime, actor: str = RECONCILER) -> None:
        """Record that the pod now exists in the cluster (its slot was written before)."""
        self._move(
            allowed_from=[PodState.SLOT],
            to=PodState.PENDING,
            actor=actor,
            action="pod_created",
            reason=f"created on {self.image_ref}",
            pod_created_at=now,
        )

    def mark_ready(self, *, now: datetime, node_name: str, running_digest: str, actor: str) -> None:
        """Record that every container is ready, with the digest the kubelet really ran."""
        self._move(
            allowed_from=[PodState.SLOT, PodState.PENDING],
            to=PodState.READY,
            actor=actor,
            action="pod_ready",
            reason=f"ready on {node_name} running {short_digest(running_digest)}",
            ready_at=now,
            node_name=node_name,
            running_digest=running_digest,
            progress="",
        )

    def claim(self, reservation, *, now: datetime, actor: str) -> None:
        """Hand this ready idle warm pod to ``reservation``; refuses any other pod."""
        self._move(
            allowed_from=[PodState.READY],
            to=PodState.CLAIMED,
            actor=actor,
            action="pod_claimed",
            reason=f"claimed by reservation {reservation.short_id}",
            extra_filter={"kind": PodKind.WARM, "reservation__isnull": True},
            reservation=reservation,
            claimed_at=now,
        )

    def fail(self, reason: str, *, now: datetime, actor: str) -> None:
        """Record that the pod cannot become or stay ready."""
        self._move(
            allowed_from=[PodState.SLOT, PodState.PENDING, PodState.READY, PodState.CLAIMED],
            to=PodState.FAILED,
            actor=actor,
            action="pod_failed",
            reason=reason,
            last_error=reason,
        )

    def start_draining(self, reason: str, *, now: datetime, actor: str) -> None:
        """Begin recycling a pod that belongs to no reservation; claimed pods are refused."""
        self._move(
            allowed_from=RECYCLABLE_STATES,
            to=PodState.DRAINING,
            actor=actor,
            action="pod_recycle",
            reason=reason,
            extra_filter={"reservation__isnull": True},
            ended_at=now,
        )

    def release_from_reservation(self, reason: str, *, now: datetime, actor: str) -> None:
        """Begin deleting the pod of a reservation that has ended."""
        self._move(
            allowed_from=[*LIVE_STATES, PodState.FAILED],
            to=PodState.DRAINING,
            actor=actor,
            action="pod_release",
            reason=reason,
            extra_filter={"reservation__isnull": False},
            ended_at=now,
        )

    def mark_gone(self, reason: str, *, now: datetime, actor: str) -> None:
        """Record that the pod no longer exists in the cluster."""
        self._move(
            allowed_from=[s for s in PodState if not s.is_terminal],
            to=PodState.GONE,
            actor=actor,
            action="pod_gone",
            reason=reason,
            ended_at=self.ended_at or now,
        )


class NodeRecord(models.Model):
    """A cluster node as the watcher last saw it."""

    name = models.CharField(max_length=253, unique=True)
    gpu_type = models.ForeignKey(
        GpuType, null=True, blank=True, on_delete=models.SET_NULL, related_name="nodes"
    )
    gpus_allocatable = models.PositiveSmallIntegerField(default=0)
    gpus_used = models.PositiveSmallIntegerField(default=0)
    cached_digests = models.JSONField(default=list, blank=True)
    ready = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def gpus_free(self) -> int:
        return max(self.gpus_allocatable - self.gpus_used, 0)


class PrepullPhase(models.TextChoices):
    WAITING = "waiting", "Waiting"
    PULLING = "pulling", "Pulling"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"

    @property
    def colour(self) -> str:
        return {"waiting": "grey", "pulling": "blue", "done": "green", "failed": "red"}[self]


class PrepullStatus(models.Model):
    """How far the prepuller has got pulling one release onto one node."""

    release = models.ForeignKey(ImageRelease, on_delete=models.CASCADE, related_name="prepulls")
    node_name = models.CharField(max_length=253)
    phase = models.CharField(
        max_length=8, choices=PrepullPhase.choices, default=PrepullPhase.WAITING
    )
    message = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node_name"]
        verbose_name_plural = "prepull statuses"
        constraints = [
            models.UniqueConstraint(fields=["release", "node_name"], name="one_prepull_per_node")
        ]

    def __str__(self) -> str:
        return f"{self.node_name} {self.phase}"

    @property
    def phase_enum(self) -> PrepullPhase:
        return PrepullPhase(self.phase)

    @property
    def took(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class AuditEvent(models.Model):
    """One change made by the reconciler, the watcher or an operator, with its reason."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, db_index=True)
    action = models.CharField(max_length=40, db_index=True)
    pool = models.ForeignKey(
        Pool, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    pod_name = models.CharField(max_length=63, blank=True, db_index=True)
    reservation = models.ForeignKey(
        "reservations.Reservation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
    )
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["pool", "-created_at"], name="audit_pool_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"
