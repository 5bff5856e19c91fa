"""ClusterSim: the simulated cluster, its clock, and the threads that serve it."""

import os
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from clustersim import admin, presets
from clustersim.api import ApiServer, write_kubeconfig
from clustersim.clock import SimClock, rfc3339
from clustersim.daemonset import DaemonSetController
from clustersim.errors import ApiError
from clustersim.events import EventRecorder
from clustersim.faults import Faults
from clustersim.gc import collect_garbage
from clustersim.kubelet import Kubelet
from clustersim.nodes import node_object
from clustersim.presets import GPU_TYPE_LABEL, NODE_TYPES, Preset
from clustersim.provisioner import Provisioner
from clustersim.registry import Registry
from clustersim.resources import NODES, PODS, Resource
from clustersim.rest import RestStorage
from clustersim.scheduler import Scheduler
from clustersim.store import Object, Store

# How often the pacing thread of a fast clock advances the simulation (real seconds).
_PACING_INTERVAL = 0.05
# Controllers react to each other's writes; a pass that never stops writing is a bug.
_MAX_SETTLE_PASSES = 100


class ClusterSim:
    """A simulated GPU cluster: the Kubernetes API, scheduler, kubelets, controllers, registry.

    With ``speed=None`` the clock moves only when a test calls :meth:`step`; with a speed the
    sim runs itself that many times faster than real time. Everything the simulation draws
    comes from ``random.Random(seed)``, so a run is repeatable.
    """

    def __init__(
        self,
        preset: str | Preset = "small",
        *,
        seed: int = 0,
        speed: float | None = None,
        nodes: Mapping[str, int] | None = None,
        port: int = 0,
        kubeconfig_path: str | None = None,
        repository: str = "gpu-dev",
        watch_history: int = 5000,
        init_container_seconds: float = 5.0,
        start_time: datetime | None = None,
    ) -> None:
        self.preset = presets.get(preset) if isinstance(preset, str) else preset
        if nodes:
            self.preset = self.preset.with_nodes(nodes)
        self.speed = speed
        self._rng = random.Random(seed)
        self._clock = SimClock(start_time or datetime.now(UTC).replace(microsecond=0))
        self.store = Store(history=watch_history)
        self.lock = self.store.lock
        self.rest = RestStorage(self.store, self._clock, self._rng)
        self.events = EventRecorder(self.store, self._clock, self.rest.new_uid)
        self.faults = Faults(seed, self._clock, self.lock)
        self.registry = Registry(repository, random.Random(f"registry:{seed}"))
        self.kubelet = Kubelet(
            self.store,
            self._clock,
            self.registry,
            self.events,
            self.faults,
            bandwidth=self.preset.bandwidth_mb_s * 10**6,
            init_seconds=init_container_seconds,
        )
        self.scheduler = Scheduler(self.store, self._clock, self.events, self._delete_pod)
        self.daemonsets = DaemonSetController(
            self.store, self._clock, self.events, self._create_pod, self._delete_pod
        )
        self.provisioner = Provisioner(self.store, self._clock, self.events, self._add_node)
        self.token = secrets.token_hex(16)
        self._api = ApiServer(
            self.rest, self.faults, self.token, partial(admin.add_routes, sim=self), port
        )
        self.faults.bind(self._api, self.registry)
        self._kubeconfig_path = kubeconfig_path
        self._kubeconfig_dir: str | None = None
        self._node_counts: dict[str, int] = {}
        self._pacer: threading.Thread | None = None
        self._stopping = threading.Event()
        with self.lock:
            for node_type, count in self.preset.nodes.items():
                for _ in range(count):
                    self._add_node(node_type)

    # Lifecycle

    def start(self) -> "ClusterSim":
        """Start the registry with a first image pushed, then the API server; write a kubeconfig."""
        self.registry.start()
        self.push_image()
        self._api.start()
        if self._kubeconfig_path is None:
            self._kubeconfig_dir = tempfile.mkdtemp(prefix="clustersim-")
            self._kubeconfig_path = os.path.join(self._kubeconfig_dir, "kubeconfig")
        write_kubeconfig(self._kubeconfig_path, self.api_url, self.token)
        if self.speed:
            self._pacer = threading.Thread(target=self._pace, name="clustersim-clock", daemon=True)
            self._pacer.start()
        return self

    def stop(self) -> None:
        """Stop the clock, the API server and the registry; remove a kubeconfig it made up."""
        self._stopping.set()
        if self._pacer is not None:
            self._pacer.join()
        self._api.stop()
        self.registry.stop()
        if self._kubeconfig_dir is not None:
            shutil.rmtree(self._kubeconfig_dir, ignore_errors=True)

    def __enter__(self) -> "ClusterSim":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Where to reach it

    @property
    def api_url(self) -> str:
        """Return the API server's URL, ``http://127.0.0.1:<port>``."""
        return self._api.url

    @property
    def admin_url(self) -> str:
        """Return the URL of the admin API's own port, which stays up during API outages."""
        return self._api.admin_url

    @property
    def kubeconfig_path(self) -> str:
        """Return the path of the kubeconfig for the API server."""
        if self._kubeconfig_path is None:
            raise RuntimeError("the kubeconfig is written by start()")
        return self._kubeconfig_path

    @property
    def registry_endpoint_url(self) -> str:
        """Return the registry's URL, to give boto3 as ``endpoint_url``."""
        return self.registry.endpoint_url

    @property
    def image_repo(self) -> str:
        """Return the image repository URI, ``<account>.dkr.ecr.<region>.amazonaws.com/<name>``."""
        return self.registry.uri

    # Driving the simulation

    def now(self) -> datetime:
        """Return the sim clock's time (aware, UTC)."""
        with self.lock:
            return self._clock.now()

    def step(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, running every process that falls due on the way."""
        with self.lock:
            target = self._clock.now() + timedelta(seconds=seconds)
            self._run_due(target)
            self._clock.move_to(target)
            self._run_due(target)
        self.faults.end_outage_if_over()

    def advance_until(
        self, predicate: Callable[[], bool], max_seconds: float, interval: float = 1.0
    ) -> float:
        """Step ``interval`` at a time until ``predicate()`` holds; return the sim-seconds taken.

        The predicate runs between steps without the sim's lock, so it may call the API.
        Raises TimeoutError if it does not hold within ``max_seconds``.
        """
        elapsed = 0.0
        while not predicate():
            if elapsed >= max_seconds:
                raise TimeoutError(f"condition not met after {max_seconds} sim-seconds")
            increment = min(interval, max_seconds - elapsed)
            self.step(increment)
            elapsed += increment
        return elapsed

    def push_image(
        self,
        size_gb: float | None = None,
        context_hash: str | None = None,
        changed_fraction: float = 0.3,
    ) -> tuple[str, str]:
        """Push a rebuild of the image; return its digest and immutable ``latest-<hash>`` tag.

        ``latest`` moves to the new digest. The rebuild keeps the previous image's bottom
        layers and replaces ``changed_fraction`` of its bytes, so nodes that hold the old
        image download only that part.
        """
        size = int((size_gb if size_gb is not None else self.preset.image_size_gb) * 10**9)
        with self.lock:
            return self.registry.push(size, context_hash, changed_fraction)

    def add_nodes(self, node_type: str, count: int = 1) -> list[str]:
        """Add Ready nodes of ``node_type`` now; return their names."""
        with self.lock:
            return [self._add_node(node_type) for _ in range(count)]

    def set_provisioning(self, gpu_type: str, delay: float, max_nodes: int) -> None:
        """Let unschedulable ``gpu_type`` pods bring new nodes, each after ``delay`` sim-seconds."""
        with self.lock:
            self.provisioner.configure(gpu_type, delay, max_nodes)

    def state(self) -> dict[str, Any]:
        """Return a summary of the cluster for the admin API and the demo."""
        with self.lock:
            nodes = sorted(self.store.objects(NODES), key=lambda n: n["metadata"]["name"])
            pods = list(self.store.objects(PODS))
            phases: dict[str, int] = {}
            for pod in pods:
                phase = pod.get("status", {}).get("phase", "Pending")
                phases[phase] = phases.get(phase, 0) + 1
            return {
                "now": rfc3339(self._clock.now()),
                "speed": self.speed,
                "resource_version": self.store.resource_version,
                "nodes": {
                    node["metadata"]["name"]: node["metadata"]["labels"][GPU_TYPE_LABEL]
                    for node in nodes
                },
                "pods": phases,
                "pulls": self.kubelet.pulls(),
                "provisioning": {
                    name: {"delay": p.delay, "max_nodes": p.max_nodes}
                    for name, p in self.provisioner.settings.items()
                },
                "faults": self.faults.describe(),
                "image_repo": self.image_repo,
            }

    # Internals

    def _run_due(self, until: datetime) -> None:
        self._settle()
        while (callback := self._clock.pop_due(until)) is not None:
            callback()
            self._settle()

    def _settle(self) -> None:
        """Run the controllers until none of them has anything left to write."""
        for _ in range(_MAX_SETTLE_PASSES):
            version = self.store.resource_version
            collect_garbage(self.store, self._delete_object)
            self.daemonsets.sync()
            self.scheduler.schedule()
            self.provisioner.sync()
            self.kubelet.sync()
            if self.store.resource_version == version:
                return
        raise RuntimeError("clustersim: the controllers keep writing without settling")

    def _pace(self) -> None:
        assert self.speed
        last = time.monotonic()
        while not self._stopping.wait(_PACING_INTERVAL):
            now = time.monotonic()
            self.step((now - last) * self.speed)
            last = now

    def _add_node(self, node_type: str) -> str:
        if node_type not in NODE_TYPES:
            raise ValueError(
                f"unknown node type {node_type!r}; choose from {', '.join(NODE_TYPES)}"
            )
        self._node_counts[node_type] = self._node_counts.get(node_type, 0) + 1
        name = f"{node_type}-{self._node_counts[node_type]}"
        index = sum(self._node_counts.values())
        node = node_object(
            name, NODE_TYPES[node_type], index, self.rest.new_uid(), self._clock.now()
        )
        self.store.create(NODES, node)
        return name

    def _create_pod(self, namespace: str, body: Object) -> Object:
        return self.rest.create(PODS, namespace, body)

    def _delete_pod(self, pod: Object) -> None:
        self._delete_object(PODS, pod)

    def _delete_object(self, resource: Resource, obj: Object) -> None:
        meta = obj["metadata"]
        try:
            self.rest.delete(resource, meta.get("namespace"), meta["name"], {})
        except ApiError as error:
            if error.code != 404:
                raise
