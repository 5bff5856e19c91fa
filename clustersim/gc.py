"""The garbage collector: objects whose owners are all gone are deleted too."""

from collections.abc import Callable

from clustersim.resources import RESOURCES, Resource
from clustersim.store import Object, Store


def collect_garbage(store: Store, delete: Callable[[Resource, Object], None]) -> None:
    """Delete every object that has owner references and none of whose owners still exists.

    (A ``propagationPolicy: Orphan`` delete removed the references first, so those stay.)
    """
    uids = {obj["metadata"]["uid"] for resource in RESOURCES for obj in store.objects(resource)}
    for resource in RESOURCES:
        for obj in list(store.objects(resource)):
            owners = obj["metadata"].get("ownerReferences") or []
            orphaned = owners and all(owner.get("uid") not in uids for owner in owners)
            if orphaned and not obj["metadata"].get("deletionTimestamp"):
                delete(resource, obj)
