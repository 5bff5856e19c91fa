"""The object store: Kubernetes objects as plain dicts, one resourceVersion, watch history.

Stored dicts are never mutated in place: every write stores a new dict. So readers holding the
lock may hand stored objects to JSON encoders and watch queues without copying them, and a watch
event keeps the exact object of its moment.
"""

import base64
import copy
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from clustersim.errors import already_exists, bad_request, expired, not_found
from clustersim.resources import Resource

Object = dict[str, Any]
Matcher = Callable[[Object], bool]
WatchEvent = tuple[str, Object]


@dataclass(frozen=True)
class Change:
    """One write, as the watch history keeps it."""

    resource_version: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: Resource
    old: Object | None
    new: Object


@dataclass(eq=False)
class Watcher:
    """An open watch: which objects it wants and where to deliver their events."""

    resource: Resource
    namespace: str | None
    matches: Matcher
    deliver: Callable[[WatchEvent], None]

    def view(self, change: Change) -> WatchEvent | None:
        """Return the event this watcher sees for ``change``, or None.

        A selector watch sees an object enter and leave its selection as ADDED and DELETED,
        as from a real API server.
        """
        if self.namespace and change.new["metadata"].get("namespace") != self.namespace:
            return None
        if change.type == "DELETED":
            return ("DELETED", change.new) if self.matches(change.new) else None
        was = change.old is not None and self.matches(change.old)
        now = self.matches(change.new)
        if was and now:
            return ("MODIFIED", change.new)
        if now:
            return ("ADDED", change.new)
        if was:
            return ("DELETED", change.new)
        return None


def _key(namespace: str | None, name: str) -> tuple[str, str]:
    return (namespace or "", name)


class Store:
    """Objects by resource, one monotonic resourceVersion, and a bounded history of changes.

    Every method must be called with :attr:`lock` held (it is re-entrant), so that a whole
    controller pass or API call sees and makes one consistent set of changes.
    """

    def __init__(self, history: int) -> None:
        self.lock = threading.RLock()
        self._objects: dict[Resource, dict[tuple[str, str], Object]] = {}
        self._resource_version = 0
        self._history: deque[Change] = deque(maxlen=history)
        self._compacted = 0  # the newest resourceVersion no longer in the history
        self._watchers: list[Watcher] = []

    @property
    def resource_version(self) -> int:
        """Return the resourceVersion of the latest write."""
        return self._resource_version

    def get(self, resource: Resource, namespace: str | None, name: str) -> Object | None:
        """Return a copy of one object, free to modify and write back, or None."""
        obj = self._objects.get(resource, {}).get(_key(namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self, resource: Resource, namespace: str | None = None) -> Iterator[Object]:
        """Iterate the stored objects of a resource; read them, never modify them."""
        for (obj_namespace, _), obj in self._objects.get(resource, {}).items():
            if namespace is None or obj_namespace == namespace:
                yield obj

    def create(self, resource: Resource, obj: Object) -> Object:
        """Store a new object under the next resourceVersion and return it."""
        meta = obj["metadata"]
        key = _key(meta.get("namespace"), meta["name"])
        bucket = self._objects.setdefault(resource, {})
        if key in bucket:
            raise already_exists(resource.plural, meta["name"], resource.group)
        stored = self._stamp(obj)
        bucket[key] = stored
        self._record("ADDED", resource, None, stored)
        return stored

    def update(self, resource: Resource, obj: Object) -> Object:
        """Replace an object and return it; a write that changes nothing is not a write."""
        meta = obj["metadata"]
        key = _key(meta.get("namespace"), meta["name"])
        old = self._objects.get(resource, {}).get(key)
        if old is None:
            raise not_found(resource.plural, meta["name"], resource.group)
        candidate = copy.deepcopy(obj)
        candidate["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if candidate == old:
            return old
        stored = self._stamp(obj)
        self._objects[resource][key] = stored
        self._record("MODIFIED", resource, old, stored)
        return stored

    def delete(self, resource: Resource, namespace: str | None, name: str) -> Object:
        """Remove an object and return its last state, stamped with the deletion's version."""
        old = self._objects.get(resource, {}).pop(_key(namespace, name), None)
        if old is None:
            raise not_found(resource.plural, name, resource.group)
        final = self._stamp(old)
        self._record("DELETED", resource, old, final)
        return final

    def select(
        self,
        resource: Resource,
        namespace: str | None,
        matches: Matcher,
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[Object], str, int]:
        """Return matching objects in key order, the continue token, and how many remain.

        A continue token resumes after the last key it returned, over the data as it is now
        (a real server resumes over a snapshot; the difference does not matter to paging).
        """
        start = _decode_continue(continue_token) if continue_token else None
        bucket = self._objects.get(resource, {})
        keys = sorted(k for k in bucket if (namespace is None or k[0] == namespace))
        items: list[Object] = []
        remaining = 0
        last_key: tuple[str, str] | None = None
        for key in keys:
            if start is not None and key <= start:
                continue
            obj = bucket[key]
            if not matches(obj):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
            last_key = key
        token = _encode_continue(last_key) if remaining and last_key else ""
        return items, token, remaining

    def watch(
        self,
        watcher: Watcher,
        since: int | None,
    ) -> list[WatchEvent]:
        """Register ``watcher`` and return the events it has missed since ``since``.

        With no version, the watcher first sees every matching object as ADDED. A version older
        than the history still held raises the 410 Expired error.
        """
        if since is None:
            initial = [
                ("ADDED", obj)
                for obj in self.objects(watcher.resource, watcher.namespace)
                if watcher.matches(obj)
            ]
        else:
            if since < self._compacted:
                raise expired(f"too old resource version: {since} ({self._compacted + 1})")
            initial = [
                event
                for change in self._history
                if change.resource_version > since and change.resource is watcher.resource
                if (event := watcher.view(change)) is not None
            ]
        self._watchers.append(watcher)
        return initial

    def unwatch(self, watcher: Watcher) -> None:
        """Stop delivering events to ``watcher``."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def _stamp(self, obj: Object) -> Object:
        self._resource_version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._resource_version)
        return stored

    def _record(self, kind: str, resource: Resource, old: Object | None, new: Object) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].resource_version
        change = Change(self._resource_version, kind, resource, old, new)
        self._history.append(change)
        for watcher in self._watchers:
            if watcher.resource is resource and (event := watcher.view(change)) is not None:
                watcher.deliver(event)


def _encode_continue(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise bad_request(f"invalid continue token {token!r}") from None
    return (namespace, name)
