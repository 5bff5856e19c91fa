"""Template filters of the ops dashboard: durations the way operators read them."""

from datetime import datetime, timedelta

from django import template

register = template.Library()


@register.filter
def compact(delta: timedelta | None) -> str:
    """Format a duration as ``3h12m``, ``6m05s`` or ``45s`` ("—" when unknown)."""
    if delta is None:
        return "—"
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


@register.filter
def since(moment: datetime | None, now: datetime) -> str:
    """Format how long ago ``moment`` was, relative to ``now``."""
    if moment is None:
        return "—"
    return compact(now - moment)


@register.filter
def until(moment: datetime | None, now: datetime) -> str:
    """Format how long until ``moment``, relative to ``now``."""
    if moment is None:
        return "—"
    return compact(moment - now)
