"""Image releases: follow the tracked tag's digest, pin pods and the prepuller to it (PR #202).

A new digest of ``IMAGE_REPOSITORY:IMAGE_TAG`` becomes a new current ``ImageRelease`` with an
immutable ref. New pods and the prepuller DaemonSet run that ref, never the mutable tag, so a
node that cached the old ``:latest`` cannot serve it under a new pod.
"""

import logging
import statistics
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from pool import audit, broadcast, cluster, podspec, registry
from pool.models import ImageRelease, NodeRecord, PrepullPhase, PrepullStatus

logger = logging.getLogger(__name__)

PREPULLER_NAME = "gpudev-prepuller"


def current_release() -> ImageRelease | None:
    return ImageRelease.objects.filter(repo=settings.IMAGE_REPOSITORY, is_current=True).first()


def refresh_release(*, now: datetime) -> tuple[ImageRelease | None, bool]:
    """Ask the registry where the tag points; record a new release if it moved.

    Return the current release and whether the registry answered; when it did not, the last
    known release is returned with False, and callers must not rotate on it.
    """
    found = registry.current_digest(settings.IMAGE_REPOSITORY, settings.IMAGE_TAG)
    current = current_release()
    if found is None:
        return current, False
    if current is not None and current.digest == found.digest:
        return current, True
    try:
        release = _make_current(found, previous=current, now=now)
    except IntegrityError:
        # Another process recorded the same move first.
        return current_release(), True
    return release, True


def _make_current(found: registry.TagDigest, *, previous, now: datetime) -> ImageRelease:
    with transaction.atomic():
        ImageRelease.objects.filter(repo=found.repo, is_current=True).update(is_current=False)
        release, _ = ImageRelease.objects.update_or_create(
            repo=found.repo,
            digest=found.digest,
            defaults={
                "tag": found.tag,
                "immutable_ref": found.immutable_ref,
                "context_hash": found.context_hash,
                "is_current": True,
            },
            create_defaults={
                "tag": found.tag,
                "immutable_ref": found.immutable_ref,
                "context_hash": found.context_hash,
                "is_current": True,
                "first_seen_at": now,
            },
        )
        was = f" (was {previous.short_digest})" if previous else ""
        audit.record(
            actor=audit.RECONCILER,
            action="release_new",
            reason=f"{found.tag} now {release.short_digest}{was}; pinning {found.immutable_ref}",
            details={"digest": found.digest, "immutable_ref": found.immutable_ref},
        )
        _seed_prepull_statuses(release)
        broadcast.images_changed()
    return release


def _seed_prepull_statuses(release: ImageRelease) -> None:
    """Every node of a GPU type (CPU types included) starts the release waiting."""
    nodes = NodeRecord.objects.filter(gpu_type__isnull=False).values_list("name", flat=True)
    PrepullStatus.objects.bulk_create(
        [PrepullStatus(release=release, node_name=name) for name in nodes],
        ignore_conflicts=True,
    )


def ensure_prepuller(release: ImageRelease) -> bool:
    """Point the prepuller DaemonSet at ``release``; return True if it had to change."""
    existing = cluster.read_daemonset(PREPULLER_NAME)
    template_annotations = (
        (existing or {}).get("spec", {}).get("template", {}).get("metadata") or {}
    ).get("annotations") or {}
    if template_annotations.get("gpudev.io/image-ref") == release.immutable_ref:
        return False
    cluster.apply_daemonset(podspec.prepuller_daemonset(release.immutable_ref))
    audit.record(
        actor=audit.RECONCILER,
        action="prepuller_rollout",
        reason=f"prepuller now pulls {release.immutable_ref} "
        f"(maxUnavailable {settings.PREPULLER_MAX_UNAVAILABLE})",
    )
    broadcast.images_changed()
    return True


def refresh_and_prepull(*, now: datetime) -> str:
    """The periodic image task: follow the tag, keep the prepuller on the current release."""
    release, known = refresh_release(now=now)
    if release is None:
        return "no image release known yet: the registry has not answered"
    try:
        rolled = ensure_prepuller(release)
    except cluster.ClusterUnavailable as exc:
        return f"current {release.short_digest}; prepuller not updated: {exc}"
    state = "registry answered" if known else "registry unreachable, kept last release"
    return f"current {release.short_digest} ({state}){'; prepuller rolled' if rolled else ''}"


def prepull_summary(release: ImageRelease | None) -> dict:
    """How many typed nodes hold ``release``, and the typical time a node took to pull it."""
    if release is None:
        return {"done": 0, "total": 0, "failed": 0, "typical": None}
    holdings = NodeRecord.objects.filter(gpu_type__isnull=False).values_list(
        "cached_digests", flat=True
    )
    total = len(holdings)
    done = sum(release.digest in digests for digests in holdings)
    statuses = list(release.prepulls.all())
    took = [s.took.total_seconds() for s in statuses if s.took is not None]
    return {
        "done": done,
        "total": total,
        "failed": sum(s.phase == PrepullPhase.FAILED for s in statuses),
        "typical": timedelta(seconds=statistics.median(took)) if took else None,
    }
