"""The scheduler: binds pending pods to nodes, most-allocated first, or says why it cannot."""

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from clustersim.clock import SimClock, rfc3339
from clustersim.events import EventRecorder
from clustersim.nodes import node_is_ready
from clustersim.quantities import GPU, SCHEDULED_RESOURCES, parse_quantity, pod_requests
from clustersim.resources import NODES, PODS
from clustersim.selectors import node_selector_term_matches
from clustersim.store import Object, Store

COMPONENT = "default-scheduler"
_AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
Usage = dict[str, float]


def node_matches_pod(node: Object, spec: Mapping[str, Any]) -> bool:
    """Say whether a node satisfies a pod spec's nodeSelector and required node affinity."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(node_selector_term_matches(term, node) for term in terms)


def is_pending(pod: Object) -> bool:
    """Say whether a pod waits for a node (unbound and not being deleted)."""
    return not pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp")


def is_unschedulable(pod: Object) -> bool:
    """Say whether the scheduler found no node for a pending pod."""
    return is_pending(pod) and any(
        c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in pod.get("status", {}).get("conditions") or []
    )


def allocatable(node: Object) -> Usage:
    """Return what a node offers pods."""
    offered = node.get("status", {}).get("allocatable") or {}
    return {name: parse_quantity(offered.get(name, 0)) for name in SCHEDULED_RESOURCES}


class Scheduler:
    """Bind pending pods in priority order; preempt lower-priority pods when that makes room."""

    def __init__(
        self,
        store: Store,
        clock: SimClock,
        events: EventRecorder,
        delete_pod: Callable[[Object], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._delete_pod = delete_pod

    def schedule(self) -> None:
        """Try every pending pod once, highest priority first, then oldest."""
        nodes = sorted(self._store.objects(NODES), key=lambda n: n["metadata"]["name"])
        used: dict[str, Usage] = {
            n["metadata"]["name"]: dict.fromkeys(SCHEDULED_RESOURCES, 0.0) for n in nodes
        }
        pending = []
        for pod in self._store.objects(PODS):
            node_name = pod["spec"].get("nodeName") or pod.get("status", {}).get(
                "nominatedNodeName"
            )
            if node_name in used and pod.get("status", {}).get("phase") not in (
                "Succeeded",
                "Failed",
            ):
                _add(used[node_name], pod_requests(pod["spec"]))
            if is_pending(pod):
                pending.append(pod)
        pending.sort(
            key=lambda p: (
                -p["spec"].get("priority", 0),
                p["metadata"]["creationTimestamp"],
                p["metadata"]["namespace"],
                p["metadata"]["name"],
            )
        )
        for pod in pending:
            nominated = pod.get("status", {}).get("nominatedNodeName")
            need = pod_requests(pod["spec"])
            if nominated in used:  # its own reservation must not count against it
                _add(used[nominated], need, sign=-1)
            self._place(pod, need, nodes, used)

    def _place(self, pod: Object, need: Usage, nodes: list[Object], used: dict[str, Usage]) -> None:
        reasons: Counter[str] = Counter()
        best: tuple[tuple[float, float, str], Object] | None = None
        for node in nodes:
            name = node["metadata"]["name"]
            failures = self._filter(node, pod, need, used[name])
            if failures:
                reasons.update(failures)
                continue
            offered = allocatable(node)
            score = (
                -_fraction(used[name][GPU] + need[GPU], offered[GPU]),
                -_fraction(used[name]["cpu"] + need["cpu"], offered["cpu"]),
                name,
            )
            if best is None or score < best[0]:
                best = (score, node)
        if best is not None:
            _add(used[best[1]["metadata"]["name"]], need)
            self._bind(pod, best[1]["metadata"]["name"])
            return
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        message = (
            f"0/{len(nodes)} nodes are available: {summary}."
            if nodes
            else "no nodes available to schedule pods"
        )
        if self._preempt(pod, need, nodes, used):
            return
        nominated = pod.get("status", {}).get("nominatedNodeName")
        if nominated in used:
            _add(used[nominated], need)
        self._mark_unschedulable(pod, message)

    def _filter(self, node: Object, pod: Object, need: Usage, used: Usage) -> list[str]:
        if (node.get("spec") or {}).get("unschedulable"):
            return ["node(s) were unschedulable"]
        if not node_is_ready(node):
            return ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        if not node_matches_pod(node, pod["spec"]):
            return [_AFFINITY_MISMATCH]
        offered = allocatable(node)
        return [
            f"Insufficient {name}"
            for name in SCHEDULED_RESOURCES
            if need[name] and used[name] + need[name] > offered[name] + 1e-9
        ]

    def _preempt(
        self, pod: Object, need: Usage, nodes: list[Object], used: dict[str, Usage]
    ) -> bool:
        """Evict lower-priority pods from the node where the fewest must go; say if it did."""
        priority = pod["spec"].get("priority", 0)
        if pod["spec"].get("preemptionPolicy") == "Never":
            return False
        nominated = pod.get("status", {}).get("nominatedNodeName")
        bound = [p for p in self._store.objects(PODS) if p["spec"].get("nodeName")]
        if nominated and any(
            p["spec"]["nodeName"] == nominated
            and p["metadata"].get("deletionTimestamp")
            and p["spec"].get("priority", 0) < priority
            for p in bound
        ):
            _add(used[nominated], need)
            return True  # victims already on their way out; wait for them
        choice: tuple[tuple[int, int, str], str, list[Object]] | None = None
        for node in nodes:
            name = node["metadata"]["name"]
            if not node_is_ready(node) or not node_matches_pod(node, pod["spec"]):
                continue
            candidates = sorted(
                (
                    p
                    for p in bound
                    if p["spec"]["nodeName"] == name
                    and not p["metadata"].get("deletionTimestamp")
                    and p["spec"].get("priority", 0) < priority
                ),
                key=lambda p: (p["spec"].get("priority", 0), p["metadata"]["creationTimestamp"]),
            )
            remaining = dict(used[name])
            victims: list[Object] = []
            offered = allocatable(node)
            for victim in candidates:
                if all(remaining[r] + need[r] <= offered[r] + 1e-9 for r in SCHEDULED_RESOURCES):
                    break
                victims.append(victim)
                _add(remaining, pod_requests(victim["spec"]), sign=-1)
            fits = all(remaining[r] + need[r] <= offered[r] + 1e-9 for r in SCHEDULED_RESOURCES)
            if victims and fits:
                rank = (max(v["spec"].get("priority", 0) for v in victims), len(victims), name)
                if choice is None or rank < choice[0]:
                    choice = (rank, name, victims)
        if choice is None:
            return False
        _, node_name, victims = choice
        for victim in victims:
            self._events.record(
                victim,
                "Normal",
                "Preempted",
                f"Preempted by pod {pod['metadata']['uid']} on node {node_name}",
                COMPONENT,
            )
            self._delete_pod(victim)
        nominee = copy.deepcopy(pod)
        nominee["status"]["nominatedNodeName"] = node_name
        self._store.update(PODS, nominee)
        _add(used[node_name], need)
        return True

    def _bind(self, pod: Object, node_name: str) -> None:
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = node_name
        bound["status"].pop("nominatedNodeName", None)
        _set_condition(bound, "True", None, None, self._clock)
        stored = self._store.update(PODS, bound)
        meta = stored["metadata"]
        self._events.record(
            stored,
            "Normal",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
            COMPONENT,
        )

    def _mark_unschedulable(self, pod: Object, message: str) -> None:
        current = next(
            (c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None
        )
        if current and current.get("message") == message:
            return
        updated = copy.deepcopy(pod)
        _set_condition(updated, "False", "Unschedulable", message, self._clock)
        stored = self._store.update(PODS, updated)
        self._events.record(stored, "Warning", "FailedScheduling", message, COMPONENT)


def _set_condition(
    pod: Object, status: str, reason: str | None, message: str | None, clock: SimClock
) -> None:
    conditions = [c for c in pod["status"].get("conditions") or [] if c["type"] != "PodScheduled"]
    condition: dict[str, Any] = {
        "type": "PodScheduled",
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": rfc3339(clock.now()),
    }
    if reason:
        condition["reason"] = reason
        condition["message"] = message
    pod["status"]["conditions"] = [condition, *conditions]


def _add(usage: Usage, amounts: Mapping[str, float], sign: int = 1) -> None:
    for name, amount in amounts.items():
        usage[name] = usage.get(name, 0.0) + sign * amount


def _fraction(part: float, whole: float) -> float:
    return part / whole if whole else 0.0
