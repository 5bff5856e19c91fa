"""The kubelets of every node: image pulls, init containers, containers, status, termination.

Each node pulls one image at a time, like a kubelet with its default ``serializeImagePulls``;
a pull downloads only the layers the node lacks, at the node's bandwidth. A pod's "Pulling"
event is written when its pull is requested, so the "including waiting" time in the "Pulled"
event counts the wait behind other pulls, as on a real node.
"""

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clustersim.clock import SimClock, go_duration, rfc3339
from clustersim.events import EventRecorder
from clustersim.faults import Faults
from clustersim.images import ImageRef, Manifest, NodeImages
from clustersim.nodes import node_ip
from clustersim.registry import PullError, Registry
from clustersim.resources import NODES, PODS
from clustersim.store import Object, Store

COMPONENT = "kubelet"
# Image pull back-off: 10 s, doubling, at most 5 minutes (the kubelet's defaults).
INITIAL_BACKOFF = 10.0
MAX_BACKOFF = 300.0


@dataclass(eq=False)
class ContainerRun:
    """What the runtime knows about one container of a pod."""

    name: str
    image: str
    pull_policy: str
    init: bool
    ready_delay: float | None  # seconds from start to ready; None without a readiness probe
    state: dict[str, Any]
    image_id: str = ""
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)
    backoff: float = 0.0

    @property
    def field_path(self) -> str:
        """Return the ``fieldPath`` events use for this container."""
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"

    def wait(self, reason: str, message: str = "") -> None:
        """Put the container in a waiting state."""
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = self.started = False

    def status(self, pod_uid: str) -> dict[str, Any]:
        """Return this container's entry in the pod's container statuses."""
        status: dict[str, Any] = {
            "name": self.name,
            "image": ImageRef.parse(self.image).name,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if "waiting" not in self.state:
            seed = f"{pod_uid}/{self.name}/{self.restart_count}".encode()
            status["containerID"] = "containerd://" + hashlib.sha256(seed).hexdigest()
        return status


@dataclass(eq=False)
class PodRun:
    """One pod admitted to a node, and where it is in its start-up."""

    namespace: str
    name: str
    uid: str
    node: str
    pod_ip: str
    host_ip: str
    start_time: str
    init_containers: list[ContainerRun]
    containers: list[ContainerRun]
    initialized: bool = False
    killed: bool = False
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(eq=False)
class PullJob:
    """A requested pull of one container's image."""

    run: PodRun
    container: ContainerRun
    ref: ImageRef
    requested: datetime
    on_pulled: Callable[[Manifest], None]


@dataclass(eq=False)
class ActivePull:
    """The pull a node is doing now."""

    job: PullJob
    manifest: Manifest
    started: datetime
    missing_bytes: int


@dataclass(eq=False)
class NodeRuntime:
    """One node's container runtime: the images it holds and its pull queue."""

    images: NodeImages = field(default_factory=NodeImages)
    queue: deque[PullJob] = field(default_factory=deque)
    pulling: ActivePull | None = None


class Kubelet:
    """Run every pod bound to a node through pull, init and start, on the sim clock."""

    def __init__(
        self,
        store: Store,
        clock: SimClock,
        registry: Registry,
        events: EventRecorder,
        faults: Faults,
        bandwidth: float,
        init_seconds: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._registry = registry
        self._events = events
        self._faults = faults
        self.bandwidth = bandwidth  # bytes per second, per node
        self._init_seconds = init_seconds
        self._nodes: dict[str, NodeRuntime] = {}
        self._runs: dict[str, PodRun] = {}
        self._next_pod_ip = 0

    def sync(self) -> None:
        """Admit newly bound pods, notice deletions and changed images, forget removed pods."""
        live = set()
        nodes = {n["metadata"]["name"]: n for n in self._store.objects(NODES)}
        for pod in list(self._store.objects(PODS)):
            node = nodes.get(pod["spec"].get("nodeName"))
            if node is None:
                continue
            uid = pod["metadata"]["uid"]
            live.add(uid)
            run = self._runs.get(uid)
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            if run is None:
                if not terminating:
                    self._admit(pod, node)
            elif terminating:
                if not run.killed:
                    self._kill(run)
            else:
                self._follow_image_changes(run, pod)
        for uid in set(self._runs) - live:
            del self._runs[uid]

    def pulls(self) -> dict[str, dict[str, Any]]:
        """Return each node's pull in progress and queue length, for the admin API."""
        report = {}
        for name, runtime in sorted(self._nodes.items()):
            active = runtime.pulling
            if active is None and not runtime.queue:
                continue
            entry: dict[str, Any] = {"queued": len(runtime.queue)}
            if active is not None:
                elapsed = (self._clock.now() - active.started).total_seconds()
                done = min(active.missing_bytes, int(elapsed * self.bandwidth))
                entry["pulling"] = {
                    "pod": f"{active.job.run.namespace}/{active.job.run.name}",
                    "image": active.job.container.image,
                    "bytes_total": active.missing_bytes,
                    "bytes_done": done,
                }
            report[name] = entry
        return report

    def _runtime(self, node: str) -> NodeRuntime:
        return self._nodes.setdefault(node, NodeRuntime())

    def _alive(self, run: PodRun) -> bool:
        return self._runs.get(run.uid) is run and not run.killed

    def _admit(self, pod: Object, node: Object) -> None:
        spec = pod["spec"]
        has_init = bool(spec.get("initContainers"))
        self._next_pod_ip += 1
        run = PodRun(
            namespace=pod["metadata"]["namespace"],
            name=pod["metadata"]["name"],
            uid=pod["metadata"]["uid"],
            node=node["metadata"]["name"],
            pod_ip=f"10.244.{self._next_pod_ip // 250}.{self._next_pod_ip % 250 + 2}",
            host_ip=node_ip(node),
            start_time=rfc3339(self._clock.now()),
            init_containers=[_container(c, init=True) for c in spec.get("initContainers") or []],
            containers=[
                _container(
                    c, init=False, waiting="PodInitializing" if has_init else "ContainerCreating"
                )
                for c in spec["containers"]
            ],
            initialized=not has_init,
        )
        self._runs[run.uid] = run
        self._write(run)
        if has_init:
            self._start_init(run, 0)
        else:
            self._start_main(run)

    def _start_init(self, run: PodRun, index: int) -> None:
        container = run.init_containers[index]
        self._ensure_image(run, container, lambda _: self._run_init(run, index))

    def _run_init(self, run: PodRun, index: int) -> None:
        container = run.init_containers[index]
        self._start(run, container)
        self._clock.call_later(self._init_seconds, lambda: self._finish_init(run, index))

    def _finish_init(self, run: PodRun, index: int) -> None:
        if not self._alive(run):
            return
        container = run.init_containers[index]
        started_at = container.state.get("running", {}).get("startedAt")
        container.state = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": started_at,
                "finishedAt": rfc3339(self._clock.now()),
                "containerID": container.status(run.uid).get("containerID"),
            }
        }
        container.ready, container.started = True, False
        if index + 1 < len(run.init_containers):
            self._write(run)
            self._start_init(run, index + 1)
            return
        run.initialized = True
        for main in run.containers:
            main.wait("ContainerCreating")
        self._write(run)
        self._start_main(run)

    def _start_main(self, run: PodRun) -> None:
        self._pull_each(run, list(run.containers), lambda: self._start_all(run))

    def _pull_each(
        self, run: PodRun, pending: list[ContainerRun], then: Callable[[], None]
    ) -> None:
        if not pending:
            then()
            return
        self._ensure_image(run, pending[0], lambda _: self._pull_each(run, pending[1:], then))

    def _start_all(self, run: PodRun) -> None:
        if not self._alive(run):
            return
        for container in run.containers:
            self._start(run, container, write=False)
        self._write(run)

    def _start(self, run: PodRun, container: ContainerRun, write: bool = True) -> None:
        """Start one container whose image is present, and make it ready when its probe passes."""
        if not self._alive(run):
            return
        self._event(run, container, "Normal", "Created", f"Created container: {container.name}")
        self._event(run, container, "Normal", "Started", f"Started container {container.name}")
        container.state = {"running": {"startedAt": rfc3339(self._clock.now())}}
        container.started = True
        if container.init or container.ready_delay is None:
            container.ready = not container.init
        else:
            restarts = container.restart_count
            self._clock.call_later(
                container.ready_delay, lambda: self._probe_passed(run, container, restarts)
            )
        if write:
            self._write(run)

    def _probe_passed(self, run: PodRun, container: ContainerRun, restarts: int) -> None:
        if (
            self._alive(run)
            and container.restart_count == restarts
            and "running" in container.state
        ):
            container.ready = True
            self._write(run)

    def _ensure_image(
        self, run: PodRun, container: ContainerRun, on_ready: Callable[[Manifest], None]
    ) -> None:
        """Make the container's image present per its pull policy, then call ``on_ready``."""
        if not self._alive(run):
            return
        runtime = self._runtime(run.node)
        ref = ImageRef.parse(container.image)
        cached = runtime.images.lookup(ref)
        if cached is not None and container.pull_policy != "Always":
            self._event(
                run,
                container,
                "Normal",
                "Pulled",
                f'Container image "{container.image}" already present on machine',
            )
            container.image_id = cached.image_id
            on_ready(cached)
            return
        if container.pull_policy == "Never":
            message = (
                f'Container image "{container.image}" is not present with pull policy of Never'
            )
            container.wait("ErrImageNeverPull", message)
            self._event(run, container, "Warning", "ErrImageNeverPull", message)
            self._write(run)
            return
        self._event(run, container, "Normal", "Pulling", f'Pulling image "{container.image}"')
        container.wait("PodInitializing" if container.init else "ContainerCreating")
        self._write(run)
        runtime.queue.append(PullJob(run, container, ref, self._clock.now(), on_ready))
        self._pump(run.node)

    def _pump(self, node: str) -> None:
        """Start the node's next pull if it is idle."""
        runtime = self._runtime(node)
        while runtime.pulling is None and runtime.queue:
            job = runtime.queue.popleft()
            if not self._alive(job.run):
                continue
            try:
                if self._faults.pulls_fail_on(node):
                    raise PullError(
                        f"failed to copy: httpReadSeeker: failed open: failed to do request: Get "
                        f'"https://{job.ref.host}/v2/{job.ref.path}/blobs": dial tcp: i/o timeout'
                    )
                manifest = self._registry.resolve(job.ref)
            except PullError as error:
                self._pull_failed(job, str(error))
                continue
            missing = runtime.images.missing_bytes(manifest)
            runtime.pulling = ActivePull(job, manifest, self._clock.now(), missing)
            self._clock.call_later(missing / self.bandwidth, lambda n=node: self._pull_done(n))

    def _pull_done(self, node: str) -> None:
        runtime = self._runtime(node)
        active = runtime.pulling
        assert active is not None
        runtime.pulling = None
        job, manifest = active.job, active.manifest
        runtime.images.add(manifest, job.ref.tag if job.ref.digest is None else None)
        node_object = self._store.get(NODES, None, node)
        if node_object is not None:
            node_object["status"]["images"] = runtime.images.node_status()
            self._store.update(NODES, node_object)
        if self._alive(job.run):
            now = self._clock.now()
            self._event(
                job.run,
                job.container,
                "Normal",
                "Pulled",
                f'Successfully pulled image "{job.container.image}" in '
                f"{go_duration((now - active.started).total_seconds())} "
                f"({go_duration((now - job.requested).total_seconds())} including waiting). "
                f"Image size: {manifest.size} bytes.",
            )
            job.container.image_id = manifest.image_id
            job.container.backoff = 0.0
            job.on_pulled(manifest)
        self._pump(node)

    def _pull_failed(self, job: PullJob, reason: str) -> None:
        run, container = job.run, job.container
        message = (
            f'Failed to pull image "{container.image}": rpc error: code = Unknown desc = '
            f'failed to pull and unpack image "{job.ref.name}": {reason}'
        )
        container.wait("ErrImagePull", message)
        self._event(run, container, "Warning", "Failed", message)
        self._event(run, container, "Warning", "Failed", "Error: ErrImagePull")
        self._write(run)
        container.backoff = min(max(container.backoff * 2, INITIAL_BACKOFF), MAX_BACKOFF)
        # The kubelet's next sync of the pod, a moment later, reports the back-off.
        self._clock.call_later(1.0, lambda: self._back_off(job))

    def _back_off(self, job: PullJob) -> None:
        run, container = job.run, job.container
        if not self._alive(run):
            return
        message = f'Back-off pulling image "{container.image}"'
        container.wait("ImagePullBackOff", message)
        self._event(run, container, "Normal", "BackOff", message)
        self._event(run, container, "Warning", "Failed", "Error: ImagePullBackOff")
        self._write(run)
        self._clock.call_later(
            container.backoff - 1.0,
            lambda: self._ensure_image(run, container, job.on_pulled),
        )

    def _kill(self, run: PodRun) -> None:
        run.killed = True
        for container in run.containers:
            if "running" in container.state:
                self._event(
                    run, container, "Normal", "Killing", f"Stopping container {container.name}"
                )

    def _follow_image_changes(self, run: PodRun, pod: Object) -> None:
        """Restart a running container whose image the pod's spec changed, as a kubelet does."""
        images = {c["name"]: (c["image"], c["imagePullPolicy"]) for c in pod["spec"]["containers"]}
        for container in run.containers:
            image, policy = images.get(container.name, (container.image, container.pull_policy))
            if image == container.image:
                continue
            if "running" not in container.state:
                container.image, container.pull_policy = image, policy
                continue
            self._event(
                run,
                container,
                "Normal",
                "Killing",
                f"Container {container.name} definition changed, will be restarted",
            )
            container.last_state = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "Error",
                    "startedAt": container.state["running"]["startedAt"],
                    "finishedAt": rfc3339(self._clock.now()),
                }
            }
            container.image, container.pull_policy = image, policy
            container.restart_count += 1
            container.wait("ContainerCreating")
            self._write(run)
            self._ensure_image(run, container, lambda _, c=container: self._start(run, c))

    def _event(
        self, run: PodRun, container: ContainerRun, event_type: str, reason: str, message: str
    ) -> None:
        pod = self._store.get(PODS, run.namespace, run.name)
        if pod is not None and pod["metadata"]["uid"] == run.uid:
            self._events.record(
                pod, event_type, reason, message, COMPONENT, run.node, container.field_path
            )

    def _write(self, run: PodRun) -> None:
        """Write the pod's status as the runtime sees it now."""
        pod = self._store.get(PODS, run.namespace, run.name)
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return
        status = pod.setdefault("status", {})
        main = run.containers
        running = any("running" in c.state for c in main)
        unready = [c.name for c in main if not c.ready]
        uninitialized = [c.name for c in run.init_containers if "terminated" not in c.state]
        conditions = {
            c["type"]: c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"
        }
        conditions["Initialized"] = self._condition(
            run,
            "Initialized",
            not uninitialized,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninitialized)}]",
        )
        for kind in ("Ready", "ContainersReady"):
            conditions[kind] = self._condition(
                run,
                kind,
                run.initialized and not unready,
                "ContainersNotReady",
                f"containers with unready status: [{' '.join(unready)}]",
            )
        status.update(
            {
                "phase": "Running" if running and run.initialized else "Pending",
                "conditions": [
                    conditions[t]
                    for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                    if t in conditions
                ],
                "hostIP": run.host_ip,
                "hostIPs": [{"ip": run.host_ip}],
                "podIP": run.pod_ip,
                "podIPs": [{"ip": run.pod_ip}],
                "startTime": run.start_time,
                "containerStatuses": [c.status(run.uid) for c in main],
            }
        )
        if run.init_containers:
            status["initContainerStatuses"] = [c.status(run.uid) for c in run.init_containers]
        self._store.update(PODS, pod)

    def _condition(
        self, run: PodRun, kind: str, true: bool, reason: str, message: str
    ) -> dict[str, Any]:
        value = "True" if true else "False"
        previous = run.transitions.get(kind)
        if previous is None or previous[0] != value:
            run.transitions[kind] = (value, rfc3339(self._clock.now()))
        condition: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": run.transitions[kind][1],
        }
        if not true:
            condition["reason"] = reason
            condition["message"] = message
        return condition


def _container(spec: Object, init: bool, waiting: str = "PodInitializing") -> ContainerRun:
    probe = spec.get("readinessProbe")
    container = ContainerRun(
        name=spec["name"],
        image=spec["image"],
        pull_policy=spec["imagePullPolicy"],
        init=init,
        ready_delay=None if probe is None else float(probe.get("initialDelaySeconds", 0)),
        state={},
    )
    container.wait(waiting)
    return container
