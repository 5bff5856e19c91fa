"""Events, as the scheduler, kubelet and controllers record them about objects."""

import itertools
from collections.abc import Callable
from datetime import timedelta

from clustersim.clock import SimClock, parse_rfc3339, rfc3339
from clustersim.resources import EVENTS
from clustersim.store import Object, Store

# A real API server drops events an hour after they last happened (--event-ttl).
EVENT_TTL = timedelta(hours=1)


class EventRecorder:
    """Write Events; a repeat of the same event bumps its count, as client-go's recorder does."""

    def __init__(self, store: Store, clock: SimClock, new_uid: Callable[[], str]) -> None:
        self._store = store
        self._clock = clock
        self._new_uid = new_uid
        self._seq = itertools.count()
        self._recent: dict[tuple[str, ...], tuple[str, str]] = {}

    def record(
        self,
        obj: Object,
        event_type: str,
        reason: str,
        message: str,
        component: str,
        host: str = "",
        field_path: str = "",
    ) -> None:
        """Record that ``reason`` happened to ``obj`` (event_type is Normal or Warning)."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = rfc3339(self._clock.now())
        key = (meta["uid"], event_type, reason, message, component, field_path)
        if key in self._recent:
            event = self._store.get(EVENTS, *self._recent[key])
            if event is not None:
                event["count"] = event.get("count", 1) + 1
                event["lastTimestamp"] = stamp
                self._store.update(EVENTS, event)
                self._expire_later(namespace, event["metadata"]["name"], key)
                return
        nanos = int(self._clock.now().timestamp() * 1e9) + next(self._seq)
        name = f"{meta['name']}.{nanos:x}"
        involved = {
            "kind": obj["kind"],
            "apiVersion": obj["apiVersion"],
            "name": meta["name"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        if field_path:
            involved["fieldPath"] = field_path
        self._store.create(
            EVENTS,
            {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": self._new_uid(),
                    "creationTimestamp": stamp,
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": {"component": component, **({"host": host} if host else {})},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "type": event_type,
                "reportingComponent": component,
                "reportingInstance": host,
            },
        )
        self._recent[key] = (namespace, name)
        self._expire_later(namespace, name, key)

    def _expire_later(self, namespace: str, name: str, key: tuple[str, ...]) -> None:
        self._clock.call_later(
            EVENT_TTL.total_seconds(), lambda: self._expire(namespace, name, key)
        )

    def _expire(self, namespace: str, name: str, key: tuple[str, ...]) -> None:
        event = self._store.get(EVENTS, namespace, name)
        if event is None:
            self._recent.pop(key, None)
            return
        if parse_rfc3339(event["lastTimestamp"]) + EVENT_TTL <= self._clock.now():
            self._store.delete(EVENTS, namespace, name)
            self._recent.pop(key, None)
