"""Keep PodRecord, NodeRecord and PrepullStatus in step with what the cluster says.

The watcher feeds every watch event through here, and a re-list (after ``410 Gone``, a cut
stream, or each reconcile tick as a backstop) feeds the whole list. Each function changes only
what differs and returns the names it changed, for the broadcast.
"""

import logging
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, IntegerField, Sum, When

from gpudev_site import metrics
from pool import audit, broadcast
from pool.lifecycle import IllegalTransition
from pool.models import (
    LIVE_STATES,
    GpuType,
    ImageRelease,
    NodeRecord,
    PodRecord,
    PodState,
    PrepullPhase,
    PrepullStatus,
)

logger = logging.getLogger(__name__)

IMAGE_REF_ANNOTATION = "gpudev.io/image-ref"
_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


# --- Reading pod objects ----------------------------------------------------------


def is_ready(pod: dict) -> bool:
    """Whether the pod is Running with its Ready condition True."""
    status = pod.get("status", {})
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def running_digest(pod: dict) -> str:
    """The digest of the image the first container really runs (from its imageID)."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    image_id = statuses[0].get("imageID", "") if statuses else ""
    _, _, digest = image_id.rpartition("@")
    return digest if digest.startswith("sha256:") else ""


def describe(pod: dict) -> str:
    """Say what the pod is doing now, the way the kubelet reports it."""
    metadata, status = pod.get("metadata", {}), pod.get("status", {})
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"Unschedulable: {condition.get('message') or condition.get('reason', '')}"
    if is_ready(pod):
        return "Ready"
    init_statuses = status.get("initContainerStatuses") or []
    for index, init in enumerate(init_statuses):
        if (init.get("state") or {}).get("terminated", {}).get("exitCode") == 0:
            continue
        waiting = (init.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in _PULL_FAILURES:
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip()
        return f"Init:{index}/{len(init_statuses)}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            message = waiting.get("message", "")
            return f"{waiting.get('reason', 'Waiting')}: {message}".strip(": ")
        if (container.get("state") or {}).get("running"):
            return "Starting"
    if pod.get("spec", {}).get("nodeName"):
        return f"Scheduled on {pod['spec']['nodeName']}"
    return "Pending"


def pull_failed(pod: dict) -> bool:
    statuses = (pod.get("status", {}).get("initContainerStatuses") or []) + (
        pod.get("status", {}).get("containerStatuses") or []
    )
    return any(
        ((s.get("state") or {}).get("waiting") or {}).get("reason") in _PULL_FAILURES
        for s in statuses
    )


# --- Our pods ----------------------------------------------------------


def observe_pod(pod: dict, *, now: datetime, record: PodRecord | None = None) -> bool:
    """Bring the pod's record in line with the pod; return whether anything changed."""
    name = pod["metadata"]["name"]
    if record is None:
        record = PodRecord.objects.select_related("pool", "reservation").filter(name=name).first()
    if record is None or record.state == PodState.GONE:
        return False
    node = pod.get("spec", {}).get("nodeName") or ""
    digest = running_digest(pod)
    progress = describe(pod)
    phase = pod.get("status", {}).get("phase")
    try:
        if is_ready(pod) and record.state in (PodState.SLOT, PodState.PENDING):
            record.mark_ready(now=now, node_name=node, running_digest=digest, actor=audit.WATCHER)
            _reservation_pod_ready(record, now=now)
            return True
        if phase in ("Failed", "Succeeded") and record.state in LIVE_STATES:
            reason = f"pod {phase.lower()}: {progress}"
            record.fail(reason, now=now, actor=audit.WATCHER)
            _reservation_pod_lost(record, reason, now=now)
            return True
    except IllegalTransition:
        # Someone (a spawn task, a claim) moved the record first; re-read next time.
        return False
    changes = {
        field: value
        for field, value in (
            ("node_name", node),
            ("running_digest", digest or record.running_digest),
            ("progress", "" if progress == "Ready" else progress),
        )
        if getattr(record, field) != value
    }
    if not changes:
        return False
    PodRecord.objects.filter(pk=record.pk).update(**changes)
    for field, value in changes.items():
        setattr(record, field, value)
    _reservation_progressed(record)
    return True


def observe_pod_gone(name: str, *, now: datetime, record: PodRecord | None = None) -> bool:
    """Record that the pod no longer exists; fail its reservation if that was not planned."""
    if record is None:
        record = PodRecord.objects.select_related("pool", "reservation").filter(name=name).first()
    if record is None or record.state == PodState.GONE:
        return False
    planned = record.state == PodState.DRAINING
    reason = "deleted" if planned else "disappeared from the cluster"
    try:
        record.mark_gone(reason, now=now, actor=audit.WATCHER)
    except IllegalTransition:
        return False
    if not planned:
        _reservation_pod_lost(record, f"pod {name} {reason}", now=now)
    return True


def observe_pod_list(items: Iterable[dict], *, now: datetime, listed_at: datetime) -> set[str]:
    """Apply a full list of our pods; return the names whose records changed.

    A record whose pod is missing from the list is gone, unless its pod was created after the
    list was taken (``listed_at``) or not created at all yet (a spawn slot).
    """
    by_name = {pod["metadata"]["name"]: pod for pod in items}
    changed = set()
    records = PodRecord.objects.exclude(state=PodState.GONE).select_related("pool", "reservation")
    for record in records:
        pod = by_name.get(record.name)
        if pod is not None:
            if observe_pod(pod, now=now, record=record):
                changed.add(record.name)
        elif _should_exist(record, listed_at) and observe_pod_gone(
            record.name, now=now, record=record
        ):
            changed.add(record.name)
    return changed


def _should_exist(record: PodRecord, listed_at: datetime) -> bool:
    if record.state == PodState.SLOT:
        return False
    created = record.pod_created_at or record.created_at
    return created < listed_at


# --- Reservations riding on pods ---------------------------------------------------------


def _reservation_pod_ready(record: PodRecord, *, now: datetime) -> None:
    reservation = record.reservation
    if reservation is None or reservation.status != "starting":
        return
    try:
        reservation.activate(now=now, pod_name=record.name, warm=False, actor=audit.WATCHER)
    except IllegalTransition:
        return
    metrics.COLD_START.observe(max((now - reservation.created_at).total_seconds(), 0))
    broadcast.reservation_changed(reservation.user_id, reservation.pk)


def _reservation_pod_lost(record: PodRecord, reason: str, *, now: datetime) -> None:
    reservation = record.reservation
    if reservation is None or reservation.status_enum.is_terminal:
        return
    try:
        reservation.fail(reason, now=now, actor=audit.WATCHER)
    except IllegalTransition:
        return
    broadcast.reservation_changed(reservation.user_id, reservation.pk)


def _reservation_progressed(record: PodRecord) -> None:
    if record.reservation_id is not None:
        broadcast.reservation_changed(record.reservation.user_id, record.reservation_id)


# --- Nodes ----------------------------------------------------------


def _gpu_type_for(labels: dict[str, str], gpu_types: list[GpuType]) -> GpuType | None:
    for gpu_type in gpu_types:
        key, _, value = gpu_type.node_label.partition("=")
        if labels.get(key) == value:
            return gpu_type
    return None


def _node_fields(node: dict, gpu_types: list[GpuType]) -> dict:
    status = node.get("status", {})
    allocatable = status.get("allocatable") or {}
    digests = sorted(
        {
            name.rpartition("@")[2]
            for image in status.get("images") or []
            for name in image.get("names") or []
            if "@sha256:" in name
        }
    )
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return {
        "gpu_type": _gpu_type_for(node["metadata"].get("labels") or {}, gpu_types),
        "gpus_allocatable": int(allocatable.get(settings.GPU_RESOURCE_NAME, 0) or 0),
        "cached_digests": digests,
        "ready": ready,
    }


def observe_node(node: dict) -> bool:
    """Create or update the node's record; return whether anything changed."""
    name = node["metadata"]["name"]
    fields = _node_fields(node, list(GpuType.objects.all()))
    record = NodeRecord.objects.filter(name=name).first()
    if record is None:
        NodeRecord.objects.create(name=name, **fields)
        return True
    if all(getattr(record, key) == value for key, value in fields.items()):
        return False
    NodeRecord.objects.filter(pk=record.pk).update(**fields)
    return True


def observe_node_gone(name: str) -> bool:
    deleted, _ = NodeRecord.objects.filter(name=name).delete()
    return deleted > 0


def observe_node_list(items: Iterable[dict]) -> set[str]:
    """Apply a full list of nodes; return the names that changed, appeared or went."""
    gpu_types = list(GpuType.objects.all())
    records = {record.name: record for record in NodeRecord.objects.all()}
    changed = set()
    listed = set()
    for node in items:
        name = node["metadata"]["name"]
        listed.add(name)
        fields = _node_fields(node, gpu_types)
        record = records.get(name)
        if record is None:
            NodeRecord.objects.create(name=name, **fields)
            changed.add(name)
        elif any(getattr(record, key) != value for key, value in fields.items()):
            NodeRecord.objects.filter(pk=record.pk).update(**fields)
            changed.add(name)
    gone = set(records) - listed
    if gone:
        NodeRecord.objects.filter(name__in=gone).delete()
    return changed | gone


def recount_gpu_usage(node_names: Iterable[str]) -> None:
    """Recompute GPUs used on these nodes from our live pods on them."""
    names = set(node_names)
    if not names:
        return
    usage = dict(
        PodRecord.objects.filter(node_name__in=names, state__in=LIVE_STATES)
        .values("node_name")
        .annotate(
            gpus=Sum(
                Case(
                    When(reservation__isnull=False, then=F("reservation__gpu_count")),
                    default=F("pool__gpus_per_pod"),
                    output_field=IntegerField(),
                )
            )
        )
        .values_list("node_name", "gpus")
    )
    with transaction.atomic():
        for record in NodeRecord.objects.filter(name__in=names):
            used = usage.get(record.name, 0) or 0
            if record.gpus_used != used:
                NodeRecord.objects.filter(pk=record.pk).update(gpus_used=used)


# --- The prepuller ----------------------------------------------------------


def prepull_phase(pod: dict) -> tuple[str, str]:
    """Return (phase, message) of a prepuller pod: waiting, pulling, done or failed."""
    if is_ready(pod):
        return PrepullPhase.DONE, ""
    status = pod.get("status", {})
    for init in status.get("initContainerStatuses") or []:
        state = init.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            return PrepullPhase.DONE, ""
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _PULL_FAILURES:
            return PrepullPhase.FAILED, f"{waiting['reason']}: {waiting.get('message', '')}"
        if waiting.get("reason") in ("PodInitializing", "ContainerCreating") or state.get(
            "running"
        ):
            return PrepullPhase.PULLING, describe(pod)
    if pod.get("spec", {}).get("nodeName"):
        return PrepullPhase.PULLING, describe(pod)
    return PrepullPhase.WAITING, describe(pod)


def observe_prepuller_pod(pod: dict, *, now: datetime) -> bool:
    """Update the prepull status of the pod's node for the release its template pins."""
    node = pod.get("spec", {}).get("nodeName")
    ref = (pod["metadata"].get("annotations") or {}).get(IMAGE_REF_ANNOTATION)
    if not node or not ref:
        return False
    release = ImageRelease.objects.filter(immutable_ref=ref).order_by("-first_seen_at").first()
    if release is None:
        return False
    phase, message = prepull_phase(pod)
    status, _ = PrepullStatus.objects.get_or_create(release=release, node_name=node)
    if status.phase == phase and status.message == message[:300]:
        return False
    if status.phase == PrepullPhase.DONE:
        return False
    status.phase = phase
    status.message = message[:300]
    if phase in (PrepullPhase.PULLING, PrepullPhase.DONE) and status.started_at is None:
        status.started_at = now
    if phase == PrepullPhase.DONE:
        status.finished_at = now
    status.save()
    return True


def observe_prepuller_list(items: Iterable[dict], *, now: datetime) -> bool:
    changed = False
    for pod in items:
        changed |= observe_prepuller_pod(pod, now=now)
    return changed
