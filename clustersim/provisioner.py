"""Node provisioning, like Karpenter: an unschedulable pod brings a node of its type, later."""

from collections.abc import Callable
from dataclasses import dataclass

from clustersim.clock import SimClock
from clustersim.events import EventRecorder
from clustersim.nodes import allocatable_resources
from clustersim.presets import GPU_TYPE_LABEL, NODE_TYPES
from clustersim.quantities import SCHEDULED_RESOURCES, parse_quantity, pod_requests
from clustersim.resources import NODES, PODS
from clustersim.scheduler import is_unschedulable
from clustersim.store import Object, Store

COMPONENT = "karpenter"


@dataclass(frozen=True)
class Provisioning:
    """How one node type grows: the delay before a launched node joins, and a node cap."""

    delay: float
    max_nodes: int


@dataclass(eq=False)
class _Launch:
    name: str


def wanted_node_type(pod: Object) -> str | None:
    """Return the node type a pod asks for, by nodeSelector or required node affinity."""
    spec = pod["spec"]
    selected = (spec.get("nodeSelector") or {}).get(GPU_TYPE_LABEL)
    if selected:
        return selected
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression["key"] == GPU_TYPE_LABEL and expression["operator"] == "In":
                return (expression.get("values") or [None])[0]
    return None


class Provisioner:
    """Launch nodes for unschedulable pods of configured types; each joins after its delay."""

    def __init__(
        self,
        store: Store,
        clock: SimClock,
        events: EventRecorder,
        add_node: Callable[[str], str],
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._add_node = add_node
        self.settings: dict[str, Provisioning] = {}
        self._launching: dict[str, list[_Launch]] = {}
        self._launched = 0

    def configure(self, node_type: str, delay: float, max_nodes: int) -> None:
        """Provision nodes of ``node_type`` after ``delay`` sim-seconds, up to ``max_nodes``."""
        if node_type not in NODE_TYPES:
            raise ValueError(f"unknown node type {node_type!r}")
        self.settings[node_type] = Provisioning(delay, max_nodes)

    def sync(self) -> None:
        """Launch a node for each unschedulable pod that no launching node will have room for."""
        waiting: dict[str, list[Object]] = {}
        for pod in self._store.objects(PODS):
            node_type = wanted_node_type(pod)
            if node_type in self.settings and is_unschedulable(pod):
                waiting.setdefault(node_type, []).append(pod)
        for node_type, pods in waiting.items():
            self._provide(node_type, sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]))

    def _provide(self, node_type: str, pods: list[Object]) -> None:
        offered = allocatable_resources(NODE_TYPES[node_type])
        fresh = {name: parse_quantity(offered[name]) for name in SCHEDULED_RESOURCES}
        launching = self._launching.setdefault(node_type, [])
        # Pending pods are fitted afresh onto the launching nodes at every pass.
        room = [dict(fresh) for _ in launching]
        existing = sum(
            1
            for node in self._store.objects(NODES)
            if (node["metadata"].get("labels") or {}).get(GPU_TYPE_LABEL) == node_type
        )
        for pod in pods:
            need = pod_requests(pod["spec"])
            if not _fits(need, fresh):
                continue
            slot = next((r for r in room if _fits(need, r)), None)
            if slot is not None:
                _take(slot, need)
                continue
            if existing + len(launching) >= self.settings[node_type].max_nodes:
                continue
            launch = _Launch(f"{node_type}-claim-{self._launched}")
            self._launched += 1
            launching.append(launch)
            room.append(dict(fresh))
            _take(room[-1], need)
            self._events.record(
                pod,
                "Normal",
                "Nominated",
                f"Pod should schedule on: nodeclaim/{launch.name}",
                COMPONENT,
            )
            self._clock.call_later(
                self.settings[node_type].delay, lambda t=node_type, j=launch: self._join(t, j)
            )

    def _join(self, node_type: str, launch: _Launch) -> None:
        self._launching[node_type].remove(launch)
        self._add_node(node_type)


def _fits(need: dict[str, float], room: dict[str, float]) -> bool:
    return all(need[r] <= room[r] + 1e-9 for r in SCHEDULED_RESOURCES)


def _take(room: dict[str, float], need: dict[str, float]) -> None:
    for name in SCHEDULED_RESOURCES:
        room[name] -= need[name]
