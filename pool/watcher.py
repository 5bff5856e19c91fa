"""The watcher: one list+watch per kind, keeping the mirror tables in step with the cluster.

Only the holder of the ``gpudev-watcher`` Lease watches; standbys retry the Lease and take over
when the holder stops renewing it. Each stream lists, applies the whole list, then watches from
the list's resourceVersion; a ``410 Gone`` or a cut stream means list again. Every change goes
out through ``pool.broadcast`` after its transaction commits.
"""

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import close_old_connections, connection
from django.utils import timezone

from gpudev_site import metrics
from pool import broadcast, cluster, mirror
from pool.models import ImageRelease, PodRecord

logger = logging.getLogger(__name__)

LEASE_NAME = "gpudev-watcher"
LEASE_SECONDS = 15
RENEW_SECONDS = 5
WATCH_SECONDS = 30


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderElection:
    """Hold a coordination.k8s.io Lease so that one watcher at a time writes the mirror."""

    def __init__(self, identity: str | None = None, *, lease_seconds: int = LEASE_SECONDS):
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.lease_seconds = lease_seconds

    def try_acquire(self, now: datetime | None = None) -> bool:
        """Take or renew the Lease; return whether this process holds it now."""
        now = now or timezone.now()
        lease = cluster.read_lease(LEASE_NAME)
        try:
            if lease is None:
                cluster.create_lease(self._manifest(now, transitions=0))
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            renewed = _parse_time(spec.get("renewTime")) or datetime.min.replace(tzinfo=now.tzinfo)
            expired = renewed + timedelta(seconds=spec.get("leaseDurationSeconds") or 0) < now
            if holder not in (None, "", self.identity) and not expired:
                return False
            transitions = (spec.get("leaseTransitions") or 0) + (holder != self.identity)
            manifest = self._manifest(now, transitions=transitions)
            manifest["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
            if holder == self.identity:
                manifest["spec"]["acquireTime"] = spec.get("acquireTime")
            cluster.replace_lease(manifest)
            return True
        except cluster.Conflict:
            return False

    def release(self) -> None:
        """Give the Lease up so a standby takes over at once, not after it expires."""
        lease = cluster.read_lease(LEASE_NAME)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"]["holderIdentity"] = None
        try:
            cluster.replace_lease(lease)
        except cluster.Conflict:
            return

    def _manifest(self, now: datetime, *, transitions: int) -> dict:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }


@dataclass(frozen=True)
class Stream:
    """How to list, watch and apply one kind of object."""

    name: str
    list: Callable[[], tuple[list[dict], str]]
    watch: Callable[..., Iterator[tuple[str, dict]]]
    apply_list: Callable[[list[dict], datetime], None]
    apply_event: Callable[[str, dict], None]


def announce_pods(names: Iterable[str]) -> None:
    """Broadcast changed pods, their pools, and recount GPUs on their nodes."""
    names = set(names)
    if not names:
        return
    rows = PodRecord.objects.filter(name__in=names).values_list("pool_id", "node_name")
    broadcast.pods_changed(names)
    broadcast.pools_changed({pool_id for pool_id, _ in rows})
    mirror.recount_gpu_usage({node for _, node in rows if node})


def _apply_pod_list(items: list[dict], listed_at: datetime) -> None:
    announce_pods(mirror.observe_pod_list(items, now=timezone.now(), listed_at=listed_at))


def _apply_pod_event(kind: str, pod: dict) -> None:
    now = timezone.now()
    name = pod["metadata"]["name"]
    if kind == "DELETED":
        changed = mirror.observe_pod_gone(name, now=now)
    else:
        changed = mirror.observe_pod(pod, now=now)
    if changed:
        announce_pods([name])


def _apply_node_list(items: list[dict], listed_at: datetime) -> None:
    changed = mirror.observe_node_list(items)
    if changed:
        broadcast.nodes_changed(changed)
        broadcast.images_changed()


def _apply_node_event(kind: str, node: dict) -> None:
    name = node["metadata"]["name"]
    changed = mirror.observe_node_gone(name) if kind == "DELETED" else mirror.observe_node(node)
    if changed:
        broadcast.nodes_changed([name])
        broadcast.images_changed()


def _apply_prepuller_list(items: list[dict], listed_at: datetime) -> None:
    if mirror.observe_prepuller_list(items, now=timezone.now()):
        broadcast.images_changed()


def _apply_prepuller_event(kind: str, pod: dict) -> None:
    if kind != "DELETED" and mirror.observe_prepuller_pod(pod, now=timezone.now()):
        broadcast.images_changed()


def _apply_daemonset_list(items: list[dict], listed_at: datetime) -> None:
    for daemonset in items:
        _apply_daemonset_event("ADDED", daemonset)


def _apply_daemonset_event(kind: str, daemonset: dict) -> None:
    """Keep the rollout counts of the release the prepuller pins."""
    template = daemonset.get("spec", {}).get("template", {}).get("metadata") or {}
    ref = (template.get("annotations") or {}).get(mirror.IMAGE_REF_ANNOTATION)
    if kind == "DELETED" or not ref:
        return
    counts = {
        key: daemonset.get("status", {}).get(key, 0)
        for key in ("desiredNumberScheduled", "updatedNumberScheduled", "numberReady")
    }
    updated = ImageRelease.objects.filter(immutable_ref=ref).exclude(prepuller_status=counts)
    if updated.update(prepuller_status=counts):
        broadcast.images_changed()


STREAMS = (
    Stream(
        "pods", cluster.list_our_pods, cluster.watch_our_pods, _apply_pod_list, _apply_pod_event
    ),
    Stream("nodes", cluster.list_nodes, cluster.watch_nodes, _apply_node_list, _apply_node_event),
    Stream(
        "prepuller-pods",
        cluster.list_prepuller_pods,
        cluster.watch_prepuller_pods,
        _apply_prepuller_list,
        _apply_prepuller_event,
    ),
    Stream(
        "prepuller",
        cluster.list_daemonsets,
        cluster.watch_daemonsets,
        _apply_daemonset_list,
        _apply_daemonset_event,
    ),
)


class Watcher:
    """Run every stream while this process leads; stop them when it does not."""

    def __init__(
        self,
        election: LeaderElection,
        *,
        watch_seconds: int = WATCH_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
    ):
        self.election = election
        self.watch_seconds = watch_seconds
        self.renew_seconds = renew_seconds
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.streams = cluster.OpenStreams()
        self._threads: list[threading.Thread] = []

    def run(self) -> None:
        """Contend for the Lease until stopped, running the streams while holding it."""
        try:
            while not self.stopping.is_set():
                self._contend()
                self.stopping.wait(self.renew_seconds)
        finally:
            self.leading.clear()
            for thread in self._threads:
                thread.join(timeout=self.watch_seconds + 5)
            if self._threads:
                with contextlib.suppress(cluster.ClusterUnavailable):
                    self.election.release()

    def stop(self) -> None:
        self.stopping.set()
        self.streams.cut()

    def _contend(self) -> None:
        try:
            leading = self.election.try_acquire()
        except cluster.ClusterUnavailable as exc:
            logger.warning("watcher: cannot reach the Lease: %s", exc)
            leading = False
        metrics.LEADER.labels(self.election.identity).set(1 if leading else 0)
        if leading and not self.leading.is_set():
            logger.info("watcher: %s is now the leader", self.election.identity)
            self.leading.set()
            self._threads = [
                threading.Thread(
                    target=self._run_stream,
                    args=(stream,),
                    daemon=True,
                    name=f"watch-{stream.name}",
                )
                for stream in STREAMS
            ]
            for thread in self._threads:
                thread.start()
        elif not leading and self.leading.is_set():
            logger.warning("watcher: lost the Lease; standing by")
            self.leading.clear()
            self.streams.cut()

    def _running(self) -> bool:
        return self.leading.is_set() and not self.stopping.is_set()

    def _run_stream(self, stream: Stream) -> None:
        try:
            while self._running():
                try:
                    self._list_and_watch(stream)
                except cluster.WatchExpired:
                    logger.info("watcher: %s: resource version expired; re-listing", stream.name)
                except cluster.ClusterUnavailable as exc:
                    logger.warning("watcher: %s: %s; re-listing shortly", stream.name, exc)
                    self.stopping.wait(1)
                finally:
                    close_old_connections()
        finally:
            connection.close()

    def _list_and_watch(self, stream: Stream) -> None:
        listed_at = timezone.now()
        items, version = stream.list()
        stream.apply_list(items, listed_at)
        metrics.LAST_WATCH_EVENT.set_to_current_time()
        while self._running():
            events = stream.watch(version, timeout_seconds=self.watch_seconds, streams=self.streams)
            for kind, obj in events:
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind != "BOOKMARK":
                    received = time.monotonic()
                    stream.apply_event(kind, obj)
                    metrics.EVENT_TO_PUSH.observe(time.monotonic() - received)
                    metrics.LAST_WATCH_EVENT.set_to_current_time()
                if not self._running():
                    return
