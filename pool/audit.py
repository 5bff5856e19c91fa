"""Write AuditEvents: every change the reconciler, the watcher or an operator makes."""

from typing import Any

RECONCILER = "reconciler"
WATCHER = "watcher"
SYSTEM = "system"


def record(
    *,
    actor: str,
    action: str,
    reason: str = "",
    pool: Any = None,
    pod_name: str = "",
    reservation: Any = None,
    details: dict[str, Any] | None = None,
) -> Any:
    """Append one AuditEvent and return it."""
    from pool.models import AuditEvent

    return AuditEvent.objects.create(
        actor=actor,
        action=action,
        reason=reason,
        pool=pool,
        pod_name=pod_name,
        reservation=reservation,
        details=details or {},
    )
