"""Fault injection: API errors and latency, outages, cut watches, registry outages, bad pulls."""

import random
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from clustersim.clock import SimClock, rfc3339


class _Listener(Protocol):
    def set_listening(self, listening: bool) -> None: ...

    def cut_watches(self) -> None: ...


class _Registry(Protocol):
    def set_serving(self, serving: bool) -> None: ...


class Faults:
    """The faults in force, set by tests and the demo through this object or the admin API.

    Error draws come from their own generator seeded from the sim's seed, so injecting errors
    does not change what the simulation itself draws. Outages last for sim time.
    """

    def __init__(self, seed: int, clock: SimClock, lock: threading.RLock) -> None:
        self.api_error_rate = 0.0
        self.latency = 0.0  # real seconds added to every API call
        self._rng = random.Random(f"faults:{seed}")
        self._clock = clock
        self._lock = lock
        self._api: _Listener | None = None
        self._registry: _Registry | None = None
        self._outage_until: datetime | None = None
        self._registry_down = False
        self._failing_pull_nodes: frozenset[str] = frozenset()

    def bind(self, api: _Listener, registry: _Registry) -> None:
        """Attach the API server and registry that outages act on."""
        self._api, self._registry = api, registry

    def draw_api_error(self) -> bool:
        """Say whether this API call fails with an injected 500."""
        return self.api_error_rate > 0 and self._rng.random() < self.api_error_rate

    def outage(self, seconds: float) -> None:
        """Take the API server down for ``seconds`` of sim time: connections are refused."""
        with self._lock:
            self._outage_until = self._clock.now() + timedelta(seconds=seconds)
        if self._api is not None:
            self._api.set_listening(False)

    def end_outage_if_over(self) -> None:
        """Bring the API server back once its outage has passed (called after the clock moves)."""
        with self._lock:
            over = self._outage_until is not None and self._clock.now() >= self._outage_until
            if over:
                self._outage_until = None
        if over and self._api is not None:
            self._api.set_listening(True)

    def cut_watches(self) -> None:
        """End every open watch stream now."""
        if self._api is not None:
            self._api.cut_watches()

    @property
    def registry_down(self) -> bool:
        """Whether the registry is unreachable (its server is stopped)."""
        return self._registry_down

    @registry_down.setter
    def registry_down(self, down: bool) -> None:
        with self._lock:  # not while the kubelet is asking the registry for a manifest
            if down != self._registry_down and self._registry is not None:
                self._registry.set_serving(not down)
            self._registry_down = down

    def fail_pulls_on(self, nodes: Iterable[str]) -> None:
        """Make every image pull on these nodes fail (an empty list heals them all)."""
        self._failing_pull_nodes = frozenset(nodes)

    def pulls_fail_on(self, node: str) -> bool:
        """Say whether pulls on ``node`` fail."""
        return node in self._failing_pull_nodes

    def describe(self) -> dict[str, Any]:
        """Return the faults in force, for the admin API."""
        return {
            "api_error_rate": self.api_error_rate,
            "latency": self.latency,
            "outage_until": rfc3339(self._outage_until) if self._outage_until else None,
            "registry_down": self._registry_down,
            "fail_pulls_on": sorted(self._failing_pull_nodes),
        }
