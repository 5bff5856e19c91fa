"""The DaemonSet controller: one pod per matching node, rolled node by node on a new template."""

import hashlib
import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from clustersim.clock import SimClock, parse_rfc3339
from clustersim.events import EventRecorder
from clustersim.resources import DAEMONSETS, NODES, PODS
from clustersim.scheduler import node_matches_pod
from clustersim.store import Object, Store

COMPONENT = "daemonset-controller"
REVISION_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"


def template_hash(template: Object) -> str:
    """Return the revision hash of a pod template (10 characters, like a ControllerRevision's)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def target_node(pod: Object) -> str | None:
    """Return the node a daemon pod runs on or is meant for (through its node affinity)."""
    if pod["spec"].get("nodeName"):
        return pod["spec"]["nodeName"]
    affinity = (pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field["key"] == "metadata.name" and field.get("values"):
                return field["values"][0]
    return None


class DaemonSetController:
    """Keep each DaemonSet's pods in step with its nodes, template and update strategy."""

    def __init__(
        self,
        store: Store,
        clock: SimClock,
        events: EventRecorder,
        create_pod: Callable[[str, Object], Object],
        delete_pod: Callable[[Object], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._create_pod = create_pod
        self._delete_pod = delete_pod

    def sync(self) -> None:
        """Bring every DaemonSet one step closer to its desired state, and report its status."""
        for daemonset in list(self._store.objects(DAEMONSETS)):
            self._sync(daemonset)

    def _sync(self, daemonset: Object) -> None:
        """Reconcile one DaemonSet.

        1. Delete its pods on nodes it no longer selects.
        2. Create a pod on every selected node that has none (after an old one has gone).
        3. Rolling update: delete old-template pods that are already unavailable, then more,
           node by node in name order, while fewer than maxUnavailable nodes are unavailable.
        4. Write the status counts.
        """
        meta, spec = daemonset["metadata"], daemonset["spec"]
        template = spec["template"]
        revision = template_hash(template)
        nodes = sorted(self._store.objects(NODES), key=lambda n: n["metadata"]["name"])
        eligible = [
            n["metadata"]["name"] for n in nodes if node_matches_pod(n, template.get("spec") or {})
        ]
        pods_by_node: dict[str | None, list[Object]] = {}
        for pod in self._store.objects(PODS, meta["namespace"]):
            owners = pod["metadata"].get("ownerReferences") or []
            if any(owner.get("uid") == meta["uid"] for owner in owners):
                pods_by_node.setdefault(target_node(pod), []).append(pod)

        misscheduled = 0
        for node, pods in pods_by_node.items():
            if node not in eligible:
                misscheduled += 1
                for pod in _live(pods):
                    self._delete(daemonset, pod)

        for node in eligible:
            if not pods_by_node.get(node):
                self._create(daemonset, node, revision)

        if (spec.get("updateStrategy") or {}).get("type") == "RollingUpdate":
            self._roll(daemonset, eligible, pods_by_node, revision)

        self._write_status(daemonset, eligible, pods_by_node, revision, misscheduled)

    def _roll(
        self,
        daemonset: Object,
        eligible: list[str],
        pods_by_node: dict[str | None, list[Object]],
        revision: str,
    ) -> None:
        rolling = daemonset["spec"]["updateStrategy"].get("rollingUpdate") or {}
        budget = _scaled(rolling.get("maxUnavailable", 1), len(eligible))
        min_ready = daemonset["spec"].get("minReadySeconds", 0)
        unavailable = sum(
            1
            for node in eligible
            if not any(self._available(p, min_ready) for p in _live(pods_by_node.get(node, [])))
        )
        for node in eligible:
            for pod in _live(pods_by_node.get(node, [])):
                if pod["metadata"].get("labels", {}).get(REVISION_LABEL) == revision:
                    continue
                if not self._available(pod, min_ready):
                    self._delete(daemonset, pod)
                elif unavailable < budget:
                    self._delete(daemonset, pod)
                    unavailable += 1

    def _write_status(
        self,
        daemonset: Object,
        eligible: list[str],
        pods_by_node: dict[str | None, list[Object]],
        revision: str,
        misscheduled: int,
    ) -> None:
        min_ready = daemonset["spec"].get("minReadySeconds", 0)
        current = ready = updated = available = 0
        for node in eligible:
            pods = _live(pods_by_node.get(node, []))
            if not pods:
                continue
            pod = pods[0]
            current += 1
            ready += _is_ready(pod)
            available += self._available(pod, min_ready)
            updated += pod["metadata"].get("labels", {}).get(REVISION_LABEL) == revision
        status: dict[str, Any] = {
            "currentNumberScheduled": current,
            "desiredNumberScheduled": len(eligible),
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "observedGeneration": daemonset["metadata"].get("generation", 1),
        }
        # Zero counts are left out, as the API server's omitempty does.
        for field, count in (
            ("updatedNumberScheduled", updated),
            ("numberAvailable", available),
            ("numberUnavailable", len(eligible) - available),
        ):
            if count:
                status[field] = count
        stored = self._store.get(
            DAEMONSETS, daemonset["metadata"]["namespace"], daemonset["metadata"]["name"]
        )
        if stored is not None and stored.get("status") != status:
            stored["status"] = status
            self._store.update(DAEMONSETS, stored)

    def _available(self, pod: Object, min_ready_seconds: int) -> bool:
        since = _ready_since(pod)
        return since is not None and (
            since + timedelta(seconds=min_ready_seconds) <= self._clock.now()
        )

    def _create(self, daemonset: Object, node: str, revision: str) -> None:
        meta = daemonset["metadata"]
        template = json.loads(json.dumps(daemonset["spec"]["template"]))
        pod_meta = template.get("metadata") or {}
        spec = template["spec"]
        affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        }
        pod = self._create_pod(
            meta["namespace"],
            {
                "metadata": {
                    "generateName": f"{meta['name']}-",
                    "labels": {
                        **(pod_meta.get("labels") or {}),
                        REVISION_LABEL: revision,
                        GENERATION_LABEL: str(meta.get("generation", 1)),
                    },
                    "annotations": pod_meta.get("annotations") or {},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "DaemonSet",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": spec,
            },
        )
        self._events.record(
            daemonset,
            "Normal",
            "SuccessfulCreate",
            f"Created pod: {pod['metadata']['name']}",
            COMPONENT,
        )

    def _delete(self, daemonset: Object, pod: Object) -> None:
        self._delete_pod(pod)
        self._events.record(
            daemonset,
            "Normal",
            "SuccessfulDelete",
            f"Deleted pod: {pod['metadata']['name']}",
            COMPONENT,
        )


def _live(pods: list[Object]) -> list[Object]:
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def _ready_condition(pod: Object) -> dict[str, Any] | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return condition
    return None


def _is_ready(pod: Object) -> bool:
    condition = _ready_condition(pod)
    return condition is not None and condition["status"] == "True"


def _ready_since(pod: Object) -> datetime | None:
    condition = _ready_condition(pod)
    if condition is None or condition["status"] != "True":
        return None
    return parse_rfc3339(condition["lastTransitionTime"])


def _scaled(value: int | str, total: int) -> int:
    """Resolve an int-or-percent budget against ``total`` (percentages round up), at least 1."""
    if isinstance(value, str) and value.endswith("%"):
        return max(1, math.ceil(total * int(value[:-1]) / 100))
    return max(1, int(value))
