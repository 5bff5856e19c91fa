"""The resource kinds the simulated API serves, as its discovery documents describe them."""

from dataclasses import dataclass

_READ_WRITE = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
_METADATA_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class Resource:
    """One served resource: where it lives in the API and what it supports."""

    plural: str
    singular: str
    kind: str
    group: str
    version: str
    namespaced: bool
    fields: frozenset[str] = _METADATA_FIELDS
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    graceful_delete: bool = False

    @property
    def api_version(self) -> str:
        """Return ``v1`` for the core group, else ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version


PODS = Resource(
    "pods",
    "pod",
    "Pod",
    "",
    "v1",
    namespaced=True,
    fields=_METADATA_FIELDS
    | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    short_names=("po",),
    has_status=True,
    graceful_delete=True,
)
NODES = Resource(
    "nodes",
    "node",
    "Node",
    "",
    "v1",
    namespaced=False,
    fields=_METADATA_FIELDS | {"spec.unschedulable"},
    short_names=("no",),
    has_status=True,
)
SERVICES = Resource(
    "services",
    "service",
    "Service",
    "",
    "v1",
    namespaced=True,
    short_names=("svc",),
    has_status=True,
)
EVENTS = Resource(
    "events",
    "event",
    "Event",
    "",
    "v1",
    namespaced=True,
    fields=_METADATA_FIELDS
    | {
        "involvedObject.apiVersion",
        "involvedObject.fieldPath",
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.resourceVersion",
        "involvedObject.uid",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    short_names=("ev",),
)
DAEMONSETS = Resource(
    "daemonsets",
    "daemonset",
    "DaemonSet",
    "apps",
    "v1",
    namespaced=True,
    short_names=("ds",),
    has_status=True,
)
LEASES = Resource("leases", "lease", "Lease", "coordination.k8s.io", "v1", namespaced=True)

RESOURCES = (PODS, NODES, SERVICES, EVENTS, DAEMONSETS, LEASES)
GROUP_VERSIONS = {("", "v1"), ("apps", "v1"), ("coordination.k8s.io", "v1")}


def find_resource(group: str, version: str, plural: str) -> Resource | None:
    """Return the resource served at ``group/version/plural``, or None."""
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None


def resource_list(group: str, version: str) -> dict:
    """Return the ``APIResourceList`` for one group version."""
    resources = []
    for resource in RESOURCES:
        if (resource.group, resource.version) != (group, version):
            continue
        entry = {
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(_READ_WRITE),
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        resources.append(entry)
        if resource.has_status:
            resources.append(
                {
                    "name": f"{resource.plural}/status",
                    "singularName": "",
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_group(group: str) -> dict:
    """Return the ``APIGroup`` document for a named group."""
    versions = [
        {"groupVersion": f"{group}/{version}", "version": version}
        for named, version in sorted(GROUP_VERSIONS)
        if named == group
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list() -> dict:
    """Return the ``APIGroupList`` served at ``/apis``."""
    groups = sorted({group for group, _ in GROUP_VERSIONS if group})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(g) for g in groups]}
