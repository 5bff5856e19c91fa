"""What the API server fills in and checks on create and update, per kind."""

import copy
import re
from collections.abc import Mapping
from typing import Any

from clustersim.errors import ApiError, invalid
from clustersim.images import ImageRef
from clustersim.quantities import parse_quantity

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# The fields of a pod's spec that an update may change; everything else is immutable.
_MUTABLE_POD_FIELDS = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def check_metadata(kind: str, meta: Mapping[str, Any]) -> None:
    """Reject a name or labels a real API server would reject."""
    name = meta.get("name", "")
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise invalid(
            kind,
            name,
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
            "case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character",
        )
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (
            len(label) > 63
            or not _LABEL_NAME.match(label)
            or (prefix and not _SUBDOMAIN.match(prefix))
        ):
            raise invalid(kind, name, "metadata.labels", f'Invalid value: "{key}": bad label key')
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise invalid(
                kind, name, "metadata.labels", f'Invalid value: "{value}": bad label value'
            )


def default_pod_spec(kind: str, name: str, spec: dict[str, Any]) -> None:
    """Fill in a pod spec's defaults and check it, in place."""
    if not spec.get("containers"):
        raise invalid(kind, name, "spec.containers", "Required value")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    for field in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(field) or []):
            _default_container(kind, name, f"spec.{field}[{index}]", container)


def _default_container(kind: str, name: str, path: str, container: dict[str, Any]) -> None:
    if not container.get("name"):
        raise invalid(kind, name, f"{path}.name", "Required value")
    if not container.get("image"):
        raise invalid(kind, name, f"{path}.image", "Required value")
    container.setdefault("imagePullPolicy", ImageRef.parse(container["image"]).default_pull_policy)
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    resources = container.setdefault("resources", {})
    for section in ("limits", "requests"):
        for resource, amount in (resources.get(section) or {}).items():
            try:
                parse_quantity(amount)
            except ValueError as exc:
                raise invalid(
                    kind, name, f"{path}.resources.{section}[{resource}]", str(exc)
                ) from None
    # Requests default to limits, which is how `nvidia.com/gpu` limits alone reserve GPUs.
    for resource, amount in (resources.get("limits") or {}).items():
        resources.setdefault("requests", {}).setdefault(resource, amount)


def check_pod_update(name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Reject a pod spec update that changes more than images and the few mutable fields."""

    def comparable(spec: Mapping[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(dict(spec))
        for field in _MUTABLE_POD_FIELDS:
            spec.pop(field, None)
        for field in ("initContainers", "containers"):
            for container in spec.get(field) or []:
                container.pop("image", None)
        return spec

    if comparable(old) != comparable(new):
        raise invalid(
            "Pod",
            name,
            "spec",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
            "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
            "(only additions to existing tolerations), "
            "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
            "negative)",
        )


def default_daemonset(name: str, obj: dict[str, Any]) -> None:
    """Fill in a DaemonSet's defaults and check its selector, in place."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    template = spec.setdefault("template", {})
    default_pod_spec("DaemonSet", name, template.setdefault("spec", {}))
    labels = (template.get("metadata") or {}).get("labels") or {}
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if not spec.get("selector") or any(labels.get(k) != v for k, v in match_labels.items()):
        raise invalid(
            "DaemonSet",
            name,
            "spec.template.metadata.labels",
            "Invalid value: `selector` does not match template `labels`",
            "apps",
        )


class ServiceAddresses:
    """Hands out cluster IPs and node ports to Services, as the API server's allocators do."""

    NODE_PORTS = range(30000, 32768)

    def __init__(self) -> None:
        self._next_ip = 1
        self._node_ports: set[int] = set()

    def assign(self, name: str, spec: dict[str, Any]) -> None:
        """Fill in a new Service's defaults, cluster IP and node ports, in place."""
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec.get("clusterIP") != "None":
            spec["clusterIP"] = f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
            self._next_ip += 1
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if spec["type"] in ("NodePort", "LoadBalancer"):
                port["nodePort"] = self._node_port(name, port.get("nodePort"))

    def release(self, spec: Mapping[str, Any]) -> None:
        """Free a deleted Service's node ports."""
        for port in spec.get("ports") or []:
            self._node_ports.discard(port.get("nodePort"))

    def _node_port(self, name: str, wanted: int | None) -> int:
        if wanted is not None:
            if wanted in self._node_ports or wanted not in self.NODE_PORTS:
                raise invalid(
                    "Service",
                    name,
                    "spec.ports[0].nodePort",
                    f"Invalid value: {wanted}: provided port is already allocated",
                )
            self._node_ports.add(wanted)
            return wanted
        for port in self.NODE_PORTS:
            if port not in self._node_ports:
                self._node_ports.add(port)
                return port
        raise ApiError(500, "InternalError", "range of valid node ports is exhausted")
