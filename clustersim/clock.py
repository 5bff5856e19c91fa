"""The simulation clock: sim time, timers due on it, and the RFC 3339 formats Kubernetes uses."""

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def rfc3339(moment: datetime) -> str:
    """Format a Kubernetes ``Time``: whole seconds, ``Z`` for UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse a ``Time`` or ``MicroTime`` written by :func:`rfc3339` or a client."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def go_duration(seconds: float) -> str:
    """Format a duration as Go's ``time.Duration.String()`` does (``5m12.5s``, ``850ms``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


@dataclass(order=True)
class _Timer:
    when: datetime
    seq: int
    callback: Callable[[], None] = field(compare=False)


class SimClock:
    """Sim time that only moves when advanced, and the timers that fall due as it does.

    Nothing in the simulation reads the wall clock: processes (pulls, init containers, grace
    periods, provisioning) schedule a callback at a sim time, and whoever advances the clock
    (a test's ``step`` or the demo's pacing thread) runs them in time order.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """Return the current sim time (aware, UTC)."""
        return self._now

    def call_later(self, seconds: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` once ``seconds`` of sim time have passed."""
        self.call_at(self._now + timedelta(seconds=max(seconds, 0.0)), callback)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        """Run ``callback`` when sim time reaches ``when``."""
        heapq.heappush(self._timers, _Timer(when, next(self._seq), callback))

    def pop_due(self, until: datetime) -> Callable[[], None] | None:
        """Move the clock to the next timer due by ``until`` and return its callback, or None."""
        if not self._timers or self._timers[0].when > until:
            return None
        timer = heapq.heappop(self._timers)
        self._now = max(self._now, timer.when)
        return timer.callback

    def move_to(self, moment: datetime) -> None:
        """Move the clock forward to ``moment`` (never backwards)."""
        self._now = max(self._now, moment)
