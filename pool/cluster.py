"""The one seam to Kubernetes: every call the product makes to the cluster is in this module.

It uses the official ``kubernetes`` client with a kubeconfig (``KUBECONFIG``) or the in-cluster
service account. Pods carry labels that say they are ours, their pool, kind and warm state; the
watcher lists and watches by those labels, and ``tests/test_rbac.py`` derives the Role's verbs
from the client calls written here.
"""

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError as TransportError

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_US = "gpudev"
LABEL_POOL = "gpudev.io/pool"
LABEL_POD = "gpudev.io/pod"
LABEL_KIND = "gpudev.io/kind"
LABEL_WARM_STATE = "gpudev.io/warm-state"
LABEL_RESERVATION = "gpudev.io/reservation"
ANNOTATION_NAME_LEASE = "gpudev.io/name-lease"
ANNOTATION_HOSTLABEL = "gpudev.io/hostlabel"
ANNOTATION_SSH_KEYS = "gpudev.io/ssh-authorized-keys"
ANNOTATION_USER = "gpudev.io/user"
OUR_PODS = f"{MANAGED_BY}={MANAGED_BY_US}"


class ClusterUnavailable(Exception):
    """The Kubernetes API could not be reached or answered with a server error."""


class ClusterNotConfigured(ClusterUnavailable):
    """Neither a kubeconfig nor an in-cluster service account is available."""


_clients: dict[str, client.ApiClient] = {}
_clients_lock = threading.Lock()


def api_client() -> client.ApiClient:
    """Return the API client for the configured cluster, built once per kubeconfig."""
    source = settings.KUBECONFIG or ("in-cluster" if _in_cluster() else "")
    if not source:
        raise ClusterNotConfigured(
            "No cluster configured: set KUBECONFIG, run in a pod, or use `manage.py demo`."
        )
    with _clients_lock:
        if source not in _clients:
            _clients[source] = _build_client(source)
        return _clients[source]


def _in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def _build_client(source: str) -> client.ApiClient:
    configuration = client.Configuration()
    if source == "in-cluster":
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=source, client_configuration=configuration)
    configuration.retries = settings.KUBERNETES_REQUEST_RETRIES
    return client.ApiClient(configuration)


def _timeout() -> float:
    return settings.KUBERNETES_REQUEST_TIMEOUT


def ping() -> str:
    """Return the API server's version, or raise ClusterUnavailable saying why not."""
    try:
        version = client.VersionApi(api_client()).get_code(_request_timeout=_timeout())
    except (ApiException, TransportError, OSError) as exc:
        raise ClusterUnavailable(f"Kubernetes API unreachable: {exc}") from exc
    return version.git_version


class Conflict(Exception):
    """A write lost a race: the object changed since the resourceVersion we held."""


class WatchExpired(Exception):
    """The resourceVersion a watch resumed from is too old (410 Gone); re-list."""


def _core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def _apps() -> client.AppsV1Api:
    return client.AppsV1Api(api_client())


def _coordination() -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api_client())


def _namespace() -> str:
    return settings.KUBERNETES_NAMESPACE


def _json(response) -> dict:
    # Lists are read as JSON, not deserialised into client models: thousands of pods a tick
    # would otherwise cost seconds of object construction.
    return json.loads(response.data)


@contextmanager
def _calling(what: str) -> Iterator[None]:
    """Raise Conflict for a 409, ClusterUnavailable for transport failures and 5xx answers."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(f"{what}: {exc.reason}") from exc
        if not exc.status or exc.status >= 500:
            raise ClusterUnavailable(f"{what}: {exc.status} {exc.reason}") from exc
        raise
    except (TransportError, OSError) as exc:
        raise ClusterUnavailable(f"{what}: {exc}") from exc


def _read(call, name: str, what: str) -> dict | None:
    """Return the named object, or None if it does not exist."""
    try:
        with _calling(f"read {what} {name}"):
            response = call(name, _namespace(), _preload_content=False, _request_timeout=_timeout())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return _json(response)


def _delete(call, name: str, what: str) -> bool:
    """Delete the named object (gracefully); return False if it was already gone."""
    try:
        with _calling(f"delete {what} {name}"):
            call(name, _namespace(), _request_timeout=_timeout())
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _list(call, *args, what: str, **selectors) -> tuple[list[dict], str]:
    """Return the listed objects and the list's resourceVersion to watch from."""
    with _calling(f"list {what}"):
        response = call(*args, **selectors, _preload_content=False, _request_timeout=_timeout())
    body = _json(response)
    return body["items"], body["metadata"]["resourceVersion"]


# --- Pods -----------------------------------------------------------------------------------


def create_pod(manifest: dict) -> dict:
    """Create a pod; if it already exists (a retried spawn), return the existing one."""
    name = manifest["metadata"]["name"]
    try:
        with _calling(f"create pod {name}"):
            response = _core().create_namespaced_pod(
                _namespace(), manifest, _preload_content=False, _request_timeout=_timeout()
            )
    except Conflict:
        existing = read_pod(name)
        if existing is None:
            raise
        return existing
    return _json(response)


def read_pod(name: str) -> dict | None:
    """Return the pod, or None if it does not exist."""
    return _read(_core().read_namespaced_pod, name, "pod")


def delete_pod(name: str) -> bool:
    """Delete a pod (gracefully); return False if it was already gone."""
    return _delete(_core().delete_namespaced_pod, name, "pod")


def patch_pod_metadata(
    name: str, *, resource_version: str, labels: dict | None = None, annotations: dict | None = None
) -> dict:
    """Merge ``labels`` and ``annotations`` into a pod, only if it is still at
    ``resource_version``; raise Conflict when someone changed it first."""
    metadata = {"resourceVersion": resource_version}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    with _calling(f"patch pod {name}"):
        response = _core().patch_namespaced_pod(
            name,
            _namespace(),
            {"metadata": metadata},
            _preload_content=False,
            _request_timeout=_timeout(),
        )
    return _json(response)


def list_our_pods() -> tuple[list[dict], str]:
    """Return every pod labelled as ours, and the list's resourceVersion to watch from."""
    return _list(_core().list_namespaced_pod, _namespace(), what="pods", label_selector=OUR_PODS)


def watch_our_pods(
    resource_version: str, *, timeout_seconds: int, streams: "OpenStreams | None" = None
) -> Iterator[tuple[str, dict]]:
    """Yield (event type, pod) for our pods from ``resource_version`` on."""
    return _watch(
        _core().list_namespaced_pod,
        _namespace(),
        label_selector=OUR_PODS,
        resource_version=resource_version,
        timeout_seconds=timeout_seconds,
        streams=streams,
    )


def watch_pod(name: str, resource_version: str, *, timeout_seconds: int):
    """Yield (event type, pod) for one pod from ``resource_version`` on."""
    return _watch(
        _core().list_namespaced_pod,
        _namespace(),
        field_selector=f"metadata.name={name}",
        resource_version=resource_version,
        timeout_seconds=timeout_seconds,
    )


def pod_events(name: str) -> list[dict]:
    """Return the events about a pod (scheduling, pulls, back-offs), oldest first."""
    events, _ = _list(
        _core().list_namespaced_event,
        _namespace(),
        what=f"events of {name}",
        field_selector=f"involvedObject.name={name}",
    )
    return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


# --- SSH services ---------------------------------------------------------------------------


def ssh_service_name(pod_name: str) -> str:
    return f"{pod_name}-ssh"


def create_service(manifest: dict) -> None:
    """Create a service; one that already exists (a retried spawn) is fine."""
    name = manifest["metadata"]["name"]
    try:
        with _calling(f"create service {name}"):
            _core().create_namespaced_service(
                _namespace(), manifest, _preload_content=False, _request_timeout=_timeout()
            )
    except Conflict:
        return


def delete_service(name: str) -> bool:
    """Delete a service; return False if it was already gone."""
    return _delete(_core().delete_namespaced_service, name, "service")


# --- Nodes ----------------------------------------------------------------------------------


def list_nodes() -> tuple[list[dict], str]:
    """Return every node, and the list's resourceVersion to watch from."""
    return _list(_core().list_node, what="nodes")


def watch_nodes(
    resource_version: str, *, timeout_seconds: int, streams: "OpenStreams | None" = None
) -> Iterator[tuple[str, dict]]:
    """Yield (event type, node) from ``resource_version`` on."""
    return _watch(
        _core().list_node,
        resource_version=resource_version,
        timeout_seconds=timeout_seconds,
        streams=streams,
    )


# --- The prepuller DaemonSet ----------------------------------------------------------------

PREPULLER_SELECTOR = "app.kubernetes.io/name=gpudev-prepuller"


def read_daemonset(name: str) -> dict | None:
    """Return the DaemonSet, or None if it does not exist."""
    return _read(_apps().read_namespaced_daemon_set, name, "daemonset")


def apply_daemonset(manifest: dict) -> dict:
    """Create the DaemonSet, or bring the existing one's spec in line with ``manifest``."""
    name = manifest["metadata"]["name"]
    existing = read_daemonset(name)
    with _calling(f"apply daemonset {name}"):
        if existing is None:
            response = _apps().create_namespaced_daemon_set(
                _namespace(), manifest, _preload_content=False, _request_timeout=_timeout()
            )
        else:
            manifest["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            response = _apps().replace_namespaced_daemon_set(
                name, _namespace(), manifest, _preload_content=False, _request_timeout=_timeout()
            )
    return _json(response)


def list_prepuller_pods() -> tuple[list[dict], str]:
    """Return the prepuller's pods, and the list's resourceVersion to watch from."""
    return _list(
        _core().list_namespaced_pod,
        _namespace(),
        what="prepuller pods",
        label_selector=PREPULLER_SELECTOR,
    )


def watch_prepuller_pods(
    resource_version: str, *, timeout_seconds: int, streams: "OpenStreams | None" = None
) -> Iterator[tuple[str, dict]]:
    """Yield (event type, pod) for the prepuller's pods from ``resource_version`` on."""
    return _watch(
        _core().list_namespaced_pod,
        _namespace(),
        label_selector=PREPULLER_SELECTOR,
        resource_version=resource_version,
        timeout_seconds=timeout_seconds,
        streams=streams,
    )


def watch_daemonsets(
    resource_version: str, *, timeout_seconds: int, streams: "OpenStreams | None" = None
) -> Iterator[tuple[str, dict]]:
    """Yield (event type, DaemonSet) for the prepuller DaemonSet from ``resource_version`` on."""
    return _watch(
        _apps().list_namespaced_daemon_set,
        _namespace(),
        label_selector=PREPULLER_SELECTOR,
        resource_version=resource_version,
        timeout_seconds=timeout_seconds,
        streams=streams,
    )


def list_daemonsets() -> tuple[list[dict], str]:
    """Return the prepuller DaemonSet (as a list), and the list's resourceVersion."""
    return _list(
        _apps().list_namespaced_daemon_set,
        _namespace(),
        what="daemonsets",
        label_selector=PREPULLER_SELECTOR,
    )


# --- Leases (watcher leader election) -------------------------------------------------------


def read_lease(name: str) -> dict | None:
    """Return the Lease, or None if it does not exist."""
    return _read(_coordination().read_namespaced_lease, name, "lease")


def create_lease(manifest: dict) -> dict:
    """Create a Lease; raise Conflict if someone else created it first."""
    with _calling(f"create lease {manifest['metadata']['name']}"):
        response = _coordination().create_namespaced_lease(
            _namespace(), manifest, _preload_content=False, _request_timeout=_timeout()
        )
    return _json(response)


def replace_lease(manifest: dict) -> dict:
    """Replace a Lease at the resourceVersion it carries; raise Conflict if it moved on."""
    name = manifest["metadata"]["name"]
    with _calling(f"replace lease {name}"):
        response = _coordination().replace_namespaced_lease(
            name, _namespace(), manifest, _preload_content=False, _request_timeout=_timeout()
        )
    return _json(response)


# --- Watch streams --------------------------------------------------------------------------


class OpenStreams:
    """The watch streams one caller has open, so it can cut them short to stop promptly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._responses: set = set()

    def add(self, response) -> None:
        with self._lock:
            self._responses.add(response)

    def discard(self, response) -> None:
        with self._lock:
            self._responses.discard(response)

    def cut(self) -> None:
        """Interrupt every open stream; its reader sees ClusterUnavailable."""
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            # A stream that ended meanwhile was closed or released: nothing left to cut.
            with suppress(ValueError, RuntimeError, OSError):
                response.shutdown()


def _watch(
    list_call,
    *args,
    resource_version: str,
    timeout_seconds: int,
    streams: OpenStreams | None = None,
    **kwargs,
):
    """Yield (type, object) from a watch; raise WatchExpired on 410, end when the stream does.

    The client's own ``Watch.stream`` would deserialise every object into models and silently
    resume after a 410; we want plain dicts and to re-list ourselves.
    """
    with _calling("watch"):
        response = list_call(
            *args,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _preload_content=False,
            _request_timeout=(_timeout(), timeout_seconds + _timeout()),
            **kwargs,
        )
    if streams is not None:
        streams.add(response)
    try:
        for line in iter_resp_lines(response):
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "ERROR":
                status = event["object"]
                if status.get("code") == 410:
                    raise WatchExpired(status.get("message", "resource version too old"))
                raise ClusterUnavailable(f"watch error: {status.get('message', status)}")
            yield event["type"], event["object"]
    except (TransportError, OSError) as exc:
        raise ClusterUnavailable(f"watch stream cut: {exc}") from exc
    finally:
        if streams is not None:
            streams.discard(response)
        response.close()
        response.release_conn()
