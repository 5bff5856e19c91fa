"""What each API verb does to the store: defaults, preconditions, status and graceful delete.

The HTTP layer (``api.py``) parses requests and calls these methods with the store's lock held;
the simulation's controllers write to the store directly.
"""

import copy
import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from clustersim import defaults
from clustersim.clock import SimClock, parse_rfc3339, rfc3339
from clustersim.errors import bad_request, conflict, invalid, not_found
from clustersim.patch import apply_patch
from clustersim.resources import DAEMONSETS, PODS, SERVICES, Resource
from clustersim.selectors import object_filter, parse_field_selector, parse_label_selector
from clustersim.store import Object, Store, Watcher, WatchEvent

_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as the API server's generateName


class RestStorage:
    """The API verbs over the store, with the per-kind rules of a real API server."""

    def __init__(self, store: Store, clock: SimClock, rng: random.Random) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng
        self.service_addresses = defaults.ServiceAddresses()

    def new_uid(self) -> str:
        """Return a fresh object UID, drawn from the sim's seeded generator."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def get(self, resource: Resource, namespace: str | None, name: str) -> Object:
        """Return one object, or raise 404."""
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource.plural, name, resource.group)
        return obj

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
        continue_token: str = "",
    ) -> Object:
        """Return the ``<Kind>List`` of matching objects."""
        matches = self._matcher(resource, label_selector, field_selector)
        items, token, remaining = self.store.select(
            resource, namespace, matches, limit, continue_token
        )
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if token:
            metadata["continue"] = token
            metadata["remainingItemCount"] = remaining
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": items,
        }

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        resource_version: str | None,
        deliver: Callable[[WatchEvent], None],
    ) -> tuple[list[WatchEvent], Watcher]:
        """Open a watch; return the events it starts with and its handle for ``unwatch``."""
        matches = self._matcher(resource, label_selector, field_selector)
        since = None
        if resource_version not in (None, "", "0"):
            try:
                since = int(resource_version)
            except ValueError:
                raise bad_request(f"invalid resource version {resource_version!r}") from None
        watcher = Watcher(resource, namespace, matches, deliver)
        return self.store.watch(watcher, since), watcher

    def create(self, resource: Resource, namespace: str | None, body: Object) -> Object:
        """Create an object from a client's body, filling in what the server owns."""
        obj = _checked_body(resource, body)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    resource.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                    resource.group,
                )
            meta["name"] = self._generated_name(resource, namespace, meta["generateName"])
        defaults.check_metadata(resource.kind, meta)
        meta["uid"] = self.new_uid()
        meta["creationTimestamp"] = rfc3339(self.clock.now())
        for server_owned in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_owned, None)
        self._default(resource, obj)
        return self.store.create(resource, obj)

    def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Object,
        subresource: str = "",
    ) -> Object:
        """Replace an object (PUT), honouring a resourceVersion precondition in the body."""
        old = self.get(resource, namespace, name)
        new = _checked_body(resource, body)
        new.setdefault("metadata", {})
        if new["metadata"].get("name", name) != name:
            raise bad_request(
                f"the name of the object ({new['metadata']['name']}) does not match the name "
                f"on the URL ({name})"
            )
        precondition = new["metadata"].get("resourceVersion")
        if precondition and precondition != old["metadata"]["resourceVersion"]:
            raise conflict(resource.plural, name, resource.group)
        return self._update(resource, old, new, subresource)

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str = "",
    ) -> Object:
        """Patch an object; a resourceVersion the patch sets is a precondition."""
        old = self.get(resource, namespace, name)
        new = apply_patch(old, patch, content_type)
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise bad_request("the patch must leave an object with metadata")
        if new["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise conflict(resource.plural, name, resource.group)
        return self._update(resource, old, new, subresource)

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        options: Object,
    ) -> Object:
        """Delete an object; return it (pods, services) or a success ``Status``.

        A pod on a node first gets a deletionTimestamp and disappears when its grace period
        has passed on the sim clock; everything else goes at once.
        """
        obj = self.get(resource, namespace, name)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") not in (None, meta["uid"]) or preconditions.get(
            "resourceVersion"
        ) not in (None, meta["resourceVersion"]):
            raise conflict(resource.plural, name, resource.group)
        if options.get("propagationPolicy") == "Orphan":
            self._orphan_dependents(meta["uid"])
        if resource is PODS:
            return self._delete_pod(obj, options.get("gracePeriodSeconds"))
        final = self.store.delete(resource, namespace, name)
        if resource is SERVICES:
            self.service_addresses.release(final.get("spec") or {})
            return final
        details = {"name": name, "kind": resource.plural, "uid": meta["uid"]}
        if resource.group:
            details["group"] = resource.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def delete_collection(
        self,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        options: Object,
    ) -> Object:
        """Delete every matching object; return the ``Status`` a real server returns."""
        matches = self._matcher(resource, label_selector, field_selector)
        doomed = [
            (obj["metadata"].get("namespace"), obj["metadata"]["name"])
            for obj in self.store.objects(resource, namespace)
            if matches(obj)
        ]
        for obj_namespace, name in doomed:
            self.delete(resource, obj_namespace, name, options)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def finish_pod_deletion(self, namespace: str, name: str, uid: str) -> None:
        """Remove a terminating pod once its deletionTimestamp has come (a clock callback)."""
        pod = self.store.get(PODS, namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        deadline = pod["metadata"].get("deletionTimestamp")
        if deadline and parse_rfc3339(deadline) <= self.clock.now():
            self.store.delete(PODS, namespace, name)

    def _delete_pod(self, pod: Object, grace: int | None) -> Object:
        meta = pod["metadata"]
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        # An unscheduled pod has no kubelet to stop it, so it goes at once, as on a real cluster.
        if grace <= 0 or not pod["spec"].get("nodeName"):
            return self.store.delete(PODS, meta["namespace"], meta["name"])
        deadline = self.clock.now() + timedelta(seconds=grace)
        current = meta.get("deletionTimestamp")
        if current and parse_rfc3339(current) <= deadline:
            return pod
        meta["deletionTimestamp"] = rfc3339(deadline)
        meta["deletionGracePeriodSeconds"] = grace
        stored = self.store.update(PODS, pod)
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        self.clock.call_at(
            parse_rfc3339(meta["deletionTimestamp"]),
            lambda: self.finish_pod_deletion(namespace, name, uid),
        )
        return stored

    def _orphan_dependents(self, owner_uid: str) -> None:
        for resource in (PODS, SERVICES):
            for obj in list(self.store.objects(resource)):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == owner_uid for owner in owners):
                    orphan = copy.deepcopy(obj)
                    orphan["metadata"]["ownerReferences"] = [
                        owner for owner in owners if owner.get("uid") != owner_uid
                    ]
                    self.store.update(resource, orphan)

    def _update(self, resource: Resource, old: Object, new: Object, subresource: str) -> Object:
        name = old["metadata"]["name"]
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status") or {}
            return self.store.update(resource, merged)
        if subresource:
            raise not_found(f"{resource.plural}/{subresource}", name, resource.group)
        meta = new["metadata"]
        for owned in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if owned in old["metadata"]:
                meta[owned] = old["metadata"][owned]
            else:
                meta.pop(owned, None)
        defaults.check_metadata(resource.kind, meta)
        if resource.has_status:
            new["status"] = old.get("status", {})
        if resource is PODS:
            defaults.default_pod_spec("Pod", name, new.setdefault("spec", {}))
            defaults.check_pod_update(name, old["spec"], new["spec"])
        elif resource is DAEMONSETS:
            defaults.default_daemonset(name, new)
            if new["spec"] != old["spec"]:
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        elif resource is SERVICES:
            spec = new.setdefault("spec", {})
            for allocated in ("clusterIP", "clusterIPs", "type", "sessionAffinity"):
                if allocated in old["spec"]:
                    spec.setdefault(allocated, old["spec"][allocated])
            old_node_ports = {
                p.get("port"): p.get("nodePort") for p in old["spec"].get("ports") or []
            }
            for port in spec.get("ports") or []:
                if old_node_ports.get(port.get("port")):
                    port.setdefault("nodePort", old_node_ports[port.get("port")])
        new["kind"], new["apiVersion"] = resource.kind, resource.api_version
        return self.store.update(resource, new)

    def _default(self, resource: Resource, obj: Object) -> None:
        name = obj["metadata"]["name"]
        if resource is PODS:
            defaults.default_pod_spec("Pod", name, obj.setdefault("spec", {}))
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj["spec"])}
        elif resource is DAEMONSETS:
            defaults.default_daemonset(name, obj)
            obj["metadata"]["generation"] = 1
            obj["status"] = {
                "currentNumberScheduled": 0,
                "desiredNumberScheduled": 0,
                "numberMisscheduled": 0,
                "numberReady": 0,
            }
        elif resource is SERVICES:
            self.service_addresses.assign(name, obj.setdefault("spec", {}))
            obj["status"] = {"loadBalancer": {}}

    def _generated_name(self, resource: Resource, namespace: str | None, prefix: str) -> str:
        while True:
            suffix = "".join(self.rng.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
            if self.store.get(resource, namespace, prefix + suffix) is None:
                return prefix + suffix

    def _matcher(
        self, resource: Resource, label_selector: str | None, field_selector: str | None
    ) -> Callable[[Object], bool]:
        return object_filter(
            parse_label_selector(label_selector),
            parse_field_selector(field_selector, resource.fields),
        )


def _checked_body(resource: Resource, body: Any) -> Object:
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a {resource.kind} object")
    for field, expected in (("kind", resource.kind), ("apiVersion", resource.api_version)):
        if body.get(field) not in (None, expected):
            raise bad_request(
                f"the API version in the data ({body.get('apiVersion')}) or kind "
                f"({body.get('kind')}) does not match the expected {resource.api_version} "
                f"{resource.kind}"
            )
    obj = copy.deepcopy(body)
    obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
    return obj


def _qos_class(spec: Object) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(name) is not None
        and (r.get("limits") or {}).get(name) == (r.get("requests") or {}).get(name)
        for r in resources
        for name in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
