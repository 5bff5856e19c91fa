"""Guarded state transitions shared by every lifecycle model.

A transition is one conditional ``UPDATE … WHERE pk = %s AND <state> IN (…)``: the row count says
whether the transition happened, so two processes racing for the same row cannot both win, and a
terminal state is never overwritten because terminal states are never in an ``allowed_from`` set.
"""

from collections.abc import Iterable
from typing import Any

from django.db import models, transaction

from pool.audit import record


class IllegalTransition(Exception):
    """The row was not in a state the transition may start from."""


def transition(
    instance: models.Model,
    *,
    field: str,
    allowed_from: Iterable[str],
    to: str,
    actor: str,
    action: str,
    reason: str = "",
    extra_filter: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    **changes: Any,
) -> None:
    """Move ``instance`` to state ``to`` if it is in ``allowed_from``; record an AuditEvent.

    Raises IllegalTransition, naming the current state, when the row is elsewhere (or gone).
    ``changes`` are further columns written by the same UPDATE; ``audit`` names the pool, pod
    and reservation the AuditEvent is about.
    """
    model = type(instance)
    allowed = list(allowed_from)
    with transaction.atomic():
        rows = model.objects.filter(
            pk=instance.pk, **{f"{field}__in": allowed}, **(extra_filter or {})
        ).update(**{field: to}, **changes)
        if rows != 1:
            current = model.objects.filter(pk=instance.pk).values_list(field, flat=True).first()
            raise IllegalTransition(
                f"{model._meta.verbose_name} {instance} cannot {action.replace('_', ' ')}: "
                f"it is {current or 'gone'}, not {' or '.join(allowed)}."
            )
        record(actor=actor, action=action, reason=reason, **(audit or {}))
    setattr(instance, field, to)
    for name, value in changes.items():
        setattr(instance, name, value)
