"""Decide what each warm pool needs, from a snapshot and ``now``; no I/O.

``plan(snapshot, now)`` returns actions, each with the reason an operator reads in the audit log.
The executor (``pool.reconciler``) applies them. Per pool, in order:

1. Never act on a pod that is claimed or belongs to a reservation.
2. Recycle failed warm pods, and in-flight spawns past the stuck-spawn cutoff.
3. Recycle ready idle warm pods older than the pool's max age.
4. Recycle the surplus over target: in-flight spawns before ready pods, oldest first.
5. Rotate at most one ready idle warm pod whose running digest differs from the current release:
   never when either digest is unknown, while rotation is paused, or while another spawn of the
   pool is still in flight (so a rebuild never drains the pool faster than it refills).
6. Spawn the deficit, counting ready and in-flight pods, unless the pool is backing off.

Stranded pods (labelled as ours, with no live record) are deleted after a grace period.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pool.models import PodKind, PodState, short_digest


class Verb(StrEnum):
    SPAWN = "spawn"
    RECYCLE = "recycle"
    ROTATE = "rotate"
    DELETE_STRANDED = "delete_stranded"
    HOLD = "hold"


@dataclass(frozen=True)
class PodView:
    name: str
    kind: str
    state: str
    created_at: datetime
    running_digest: str = ""
    reservation_id: object = None

    @property
    def is_ours_to_touch(self) -> bool:
        """Warm and belonging to no reservation: the only pods the reconciler may act on."""
        return (
            self.kind == PodKind.WARM
            and self.reservation_id is None
            and self.state != PodState.CLAIMED
        )

    @property
    def in_flight(self) -> bool:
        return self.state in (PodState.SLOT, PodState.PENDING)


@dataclass(frozen=True)
class PoolView:
    id: int
    name: str
    target: int
    max_age: timedelta
    rotation_paused: bool = False
    backoff_until: datetime | None = None
    pods: tuple[PodView, ...] = ()


@dataclass(frozen=True)
class ClusterPod:
    """A pod labelled as ours, as the cluster lists it."""

    name: str
    created_at: datetime


@dataclass(frozen=True)
class Snapshot:
    pools: tuple[PoolView, ...]
    current_digest: str
    """The current release's digest; empty when the registry cannot say right now."""
    has_release: bool
    """Whether any image release is known, i.e. whether new pods have an image to run."""
    stuck_spawn_cutoff: timedelta
    cluster_pods: tuple[ClusterPod, ...] | None = None
    """Pods labelled as ours in the cluster; None when the list failed (no stranded sweep)."""
    live_pod_names: frozenset[str] = field(default_factory=frozenset)
    stranded_grace: timedelta = timedelta(minutes=2)


@dataclass(frozen=True)
class Action:
    verb: Verb
    reason: str
    pool_id: int | None = None
    pod_name: str = ""
    count: int = 0
    failure: bool = False
    """A recycle of a spawn that failed or got stuck: the pool backs off before retrying."""
    cause: str = ""
    """Why a pod is recycled, in one word: failed, stuck, age, surplus or stale."""


def plan(snapshot: Snapshot, now: datetime) -> list[Action]:
    """Return every action the pools need now, each with its reason."""
    actions: list[Action] = []
    for pool in snapshot.pools:
        actions.extend(_plan_pool(pool, snapshot, now))
    actions.extend(_plan_stranded(snapshot, now))
    return actions


def _plan_pool(pool: PoolView, snapshot: Snapshot, now: datetime) -> list[Action]:
    actions: list[Action] = []
    candidates = [pod for pod in pool.pods if pod.is_ours_to_touch]
    removed: set[str] = set()

    def recycle(pod: PodView, reason: str, cause: str) -> None:
        actions.append(
            Action(
                Verb.RECYCLE,
                reason,
                pool_id=pool.id,
                pod_name=pod.name,
                failure=cause in ("failed", "stuck"),
                cause=cause,
            )
        )
        removed.add(pod.name)

    for pod in candidates:
        if pod.state == PodState.FAILED:
            recycle(pod, "pod failed", "failed")
        elif pod.in_flight and now - pod.created_at > snapshot.stuck_spawn_cutoff:
            recycle(
                pod,
                f"spawn stuck {_duration(now - pod.created_at)} "
                f"> cutoff {_duration(snapshot.stuck_spawn_cutoff)}",
                "stuck",
            )
        elif pod.state == PodState.READY and now - pod.created_at > pool.max_age:
            recycle(
                pod, f"age {_duration(now - pod.created_at)} > {_duration(pool.max_age)}", "age"
            )

    counted = [p for p in candidates if p.name not in removed and p.state in _COUNTED]
    surplus = len(counted) - pool.target
    if surplus > 0:
        # Pending before ready (a spawn not yet useful costs least to drop), oldest first.
        order = sorted(counted, key=lambda p: (p.state == PodState.READY, p.created_at))
        for pod in order[:surplus]:
            recycle(pod, f"surplus: {len(counted)} warm pods > target {pool.target}", "surplus")
        counted = order[surplus:]

    rotation = _plan_rotation(pool, counted, snapshot)
    if rotation is not None:
        actions.append(rotation)
        counted = [p for p in counted if p.name != rotation.pod_name]

    deficit = pool.target - len(counted)
    if deficit > 0:
        if not snapshot.has_release:
            actions.append(Action(Verb.HOLD, "no image release known yet", pool_id=pool.id))
        elif pool.backoff_until is not None and pool.backoff_until > now:
            actions.append(
                Action(
                    Verb.HOLD,
                    f"spawn backoff for {_duration(pool.backoff_until - now)} after failures",
                    pool_id=pool.id,
                )
            )
        else:
            actions.append(
                Action(
                    Verb.SPAWN,
                    f"deficit {deficit} of {pool.target}",
                    pool_id=pool.id,
                    count=deficit,
                )
            )
    return actions


_COUNTED = (PodState.SLOT, PodState.PENDING, PodState.READY)


def _plan_rotation(pool: PoolView, counted: list[PodView], snapshot: Snapshot) -> Action | None:
    if pool.rotation_paused or not snapshot.current_digest:
        return None
    if any(pod.in_flight for pod in counted):
        return None
    stale = [
        pod
        for pod in counted
        if pod.state == PodState.READY
        and pod.running_digest
        and pod.running_digest != snapshot.current_digest
    ]
    if not stale:
        return None
    oldest = min(stale, key=lambda pod: pod.created_at)
    return Action(
        Verb.ROTATE,
        f"stale digest {short_digest(oldest.running_digest)} "
        f"≠ current {short_digest(snapshot.current_digest)}",
        pool_id=pool.id,
        pod_name=oldest.name,
        cause="stale",
    )


def _plan_stranded(snapshot: Snapshot, now: datetime) -> list[Action]:
    if snapshot.cluster_pods is None:
        return []
    return [
        Action(
            Verb.DELETE_STRANDED,
            f"stranded: labelled as ours, no live record, {_duration(now - pod.created_at)} old",
            pod_name=pod.name,
        )
        for pod in snapshot.cluster_pods
        if pod.name not in snapshot.live_pod_names
        and now - pod.created_at > snapshot.stranded_grace
    ]


def _duration(delta: timedelta) -> str:
    """Format as ``12h03m``, ``6m00s`` or ``45s``, as operators read it in the audit log."""
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
