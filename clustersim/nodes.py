"""Node objects as a cloud node would register them: labels, capacity, conditions, addresses."""

from datetime import datetime

from clustersim.clock import rfc3339
from clustersim.presets import GPU_TYPE_LABEL, NodeType
from clustersim.quantities import GPU
from clustersim.store import Object

# What the kubelet and system daemons keep for themselves out of each node's capacity.
_RESERVED_CPU_MILLIS = 500
_RESERVED_MEMORY_GIB = 4
_KERNEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


def node_object(name: str, node_type: NodeType, index: int, uid: str, now: datetime) -> Object:
    """Return a Ready node of ``node_type``; ``index`` picks its IP address."""
    ip = f"10.0.{index // 250}.{index % 250 + 10}"
    capacity = _capacity(node_type)
    allocatable = allocatable_resources(node_type)
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": node_type.arch,
        "node.kubernetes.io/instance-type": node_type.instance_type,
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": "us-east-1a",
        GPU_TYPE_LABEL: node_type.name,
    }
    if node_type.gpus:
        labels["nvidia.com/gpu.count"] = str(node_type.gpus)
        labels["nvidia.com/gpu.product"] = node_type.gpu_product
    stamp = rfc3339(now)
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid,
            "creationTimestamp": stamp,
            "labels": labels,
        },
        "spec": {"providerID": f"aws:///us-east-1a/i-{index:017x}"},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                _condition("MemoryPressure", "False", "KubeletHasSufficientMemory", stamp),
                _condition("DiskPressure", "False", "KubeletHasNoDiskPressure", stamp),
                _condition("PIDPressure", "False", "KubeletHasSufficientPID", stamp),
                _condition("Ready", "True", "KubeletReady", stamp),
            ],
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": node_type.arch,
                "bootID": uid,
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": f"6.1.134-152.225.amzn2023.{_KERNEL_ARCH[node_type.arch]}",
                "kubeProxyVersion": "v1.33.0",
                "kubeletVersion": "v1.33.0",
                "machineID": uid.replace("-", ""),
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.7.20250512",
                "systemUUID": uid,
            },
            "images": [],
        },
    }


def _capacity(node_type: NodeType) -> dict[str, str]:
    return {
        "cpu": str(node_type.cpu),
        "memory": f"{node_type.memory_gib}Gi",
        "pods": "110",
        "ephemeral-storage": "1000Gi",
        GPU: str(node_type.gpus),
    }


def allocatable_resources(node_type: NodeType) -> dict[str, str]:
    """Return what a node of ``node_type`` offers pods: capacity less the system's share."""
    return {
        **_capacity(node_type),
        "cpu": f"{node_type.cpu * 1000 - _RESERVED_CPU_MILLIS}m",
        "memory": f"{node_type.memory_gib - _RESERVED_MEMORY_GIB}Gi",
    }


def _condition(kind: str, status: str, reason: str, stamp: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
    }


def node_is_ready(node: Object) -> bool:
    """Say whether a node is Ready and schedulable."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def node_ip(node: Object) -> str:
    """Return a node's InternalIP."""
    for address in (node.get("status") or {}).get("addresses") or []:
        if address["type"] == "InternalIP":
            return address["address"]
    return ""
