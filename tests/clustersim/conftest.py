"""Fixtures for clustersim's own tests: the official clients pointed at a fresh sim."""

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from kubernetes import client, config

from clustersim import ClusterSim
from clustersim.pytest_plugin import clustersim, clustersim_factory  # noqa: F401

NAMESPACE = "gpudev"


@pytest.fixture
def kube(clustersim: ClusterSim) -> Iterator[client.ApiClient]:  # noqa: F811
    """An API client built from the sim's kubeconfig, as the product builds one."""
    api = config.new_client_from_config(config_file=clustersim.kubeconfig_path)
    yield api
    api.close()


@pytest.fixture
def core(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


@pytest.fixture
def apps(kube: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube)


@pytest.fixture
def ecr(clustersim: ClusterSim):  # noqa: F811
    """A boto3 ECR client on the sim's registry, as the product makes one."""
    return boto3.client(
        "ecr", endpoint_url=clustersim.registry_endpoint_url, region_name="us-east-1"
    )


def pod_manifest(
    name: str,
    image: str = "busybox:1.36",
    gpu_type: str | None = None,
    gpus: int = 0,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """Return a pod manifest asking for ``gpus`` GPUs on a ``gpu_type`` node."""
    container: dict[str, Any] = {"name": "main", "image": image}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    pod_spec: dict[str, Any] = {"containers": [container], **spec}
    if gpu_type:
        pod_spec["nodeSelector"] = {"gpudev.io/gpu-type": gpu_type}
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": pod_spec}


def pod_events(core: client.CoreV1Api, name: str) -> list[tuple[str, str]]:
    """Return (reason, message) of every event about the pod ``name``, oldest first."""
    events = core.list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.name={name}"
    ).items
    return [(e.reason, e.message) for e in sorted(events, key=lambda e: e.metadata.name)]
