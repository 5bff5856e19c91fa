"""Render the Kubernetes objects gpudev creates from the templates in ``deploy/templates``.

The templates hold what an operator may change (volumes, probes, ports); this module fills in
what gpudev owns: names, labels, annotations, the pinned image ref, resources, node placement.
"""

import copy
from functools import lru_cache
from pathlib import Path

import yaml
from django.conf import settings

from pool import cluster


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _template(path: str) -> dict:
    return copy.deepcopy(_load(path, Path(path).stat().st_mtime))


def devserver_pod(
    *,
    name: str,
    pool,
    kind: str,
    image_ref: str,
    gpu_count: int,
    annotations: dict[str, str],
    reservation_id: str = "",
) -> dict:
    """Return the manifest of a dev-server pod of ``pool`` running ``image_ref``."""
    pod = _template(settings.DEVSERVER_POD_TEMPLATE)
    metadata = pod.setdefault("metadata", {})
    metadata["name"] = name
    metadata["namespace"] = settings.KUBERNETES_NAMESPACE
    metadata.setdefault("labels", {}).update(
        pod_labels(pool=pool, kind=kind, reservation_id=reservation_id)
    )
    metadata["labels"][cluster.LABEL_POD] = name
    metadata.setdefault("annotations", {}).update(annotations)
    spec = pod["spec"]
    spec["hostname"] = name[:63]
    spec.setdefault("nodeSelector", {}).update(pool.gpu_type.node_selector())
    priority_class = (
        settings.WARM_POD_PRIORITY_CLASS if kind == "warm" else settings.DEVSERVER_PRIORITY_CLASS
    )
    if priority_class:
        spec["priorityClassName"] = priority_class
    container = spec["containers"][0]
    container["image"] = image_ref
    resources = {"cpu": pool.cpu_request, "memory": pool.memory_request}
    limits = {"memory": pool.memory_request}
    if gpu_count:
        resources[settings.GPU_RESOURCE_NAME] = str(gpu_count)
        limits[settings.GPU_RESOURCE_NAME] = str(gpu_count)
    container["resources"] = {"requests": resources, "limits": limits}
    return pod


def pod_labels(*, pool, kind: str, reservation_id: str = "") -> dict[str, str]:
    """Labels that say a pod is ours, its pool and kind, and (warm pods) whether it is idle."""
    labels = {
        cluster.MANAGED_BY: cluster.MANAGED_BY_US,
        cluster.LABEL_POOL: pool.slug,
        cluster.LABEL_KIND: kind,
    }
    if kind == "warm":
        labels[cluster.LABEL_WARM_STATE] = "idle"
    if reservation_id:
        labels[cluster.LABEL_RESERVATION] = reservation_id
    return labels


def ssh_service(pod_name: str, pool) -> dict:
    """Return the Service that exposes a dev-server pod's SSH port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": cluster.ssh_service_name(pod_name),
            "namespace": settings.KUBERNETES_NAMESPACE,
            "labels": {cluster.MANAGED_BY: cluster.MANAGED_BY_US, cluster.LABEL_POOL: pool.slug},
        },
        "spec": {
            "type": settings.SSH_SERVICE_TYPE,
            "selector": {cluster.LABEL_POD: pod_name},
            "ports": [{"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}],
        },
    }


def prepuller_daemonset(image_ref: str) -> dict:
    """Return the prepuller DaemonSet pulling ``image_ref`` onto every GPU node."""
    daemonset = _template(settings.PREPULLER_TEMPLATE)
    daemonset["metadata"]["namespace"] = settings.KUBERNETES_NAMESPACE
    spec = daemonset["spec"]
    max_unavailable = settings.PREPULLER_MAX_UNAVAILABLE
    spec["updateStrategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxUnavailable": max_unavailable
            if max_unavailable.endswith("%")
            else int(max_unavailable)
        },
    }
    spec["template"]["spec"]["initContainers"][0]["image"] = image_ref
    spec["template"]["metadata"].setdefault("annotations", {})["gpudev.io/image-ref"] = image_ref
    return daemonset
