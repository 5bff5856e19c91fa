"""Forms of the ops dashboard: operator actions, and the filters of its lists."""

from django import forms
from django.core.exceptions import ValidationError

from pool.dashboard import CARD_GROUPS, MAX_POOL_TARGET, AuditFilters, PodFilters
from pool.models import AuditEvent, PodState, Pool


class TargetForm(forms.Form):
    target = forms.IntegerField(
        min_value=0,
        max_value=MAX_POOL_TARGET,
        error_messages={
            "required": "Enter a target.",
            "invalid": "The target is a whole number of warm pods.",
        },
    )


class RotationForm(forms.Form):
    action = forms.ChoiceField(choices=[("pause", "Pause"), ("resume", "Resume")])

    @property
    def paused(self) -> bool:
        return self.cleaned_data["action"] == "pause"


class LeaseIdsField(forms.Field):
    """The ids of the leases a cleanup preview listed, one hidden input each."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[int]:
        if not value:
            return []
        try:
            return sorted({int(item) for item in value})
        except (TypeError, ValueError):
            raise ValidationError("The preview sent a malformed lease id.") from None


class CleanupForm(forms.Form):
    lease = LeaseIdsField(error_messages={"required": "The preview listed no names to clean up."})


def _pool_field() -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        Pool.objects.select_related("gpu_type"), required=False, empty_label="All pools"
    )


class PodFilterForm(forms.Form):
    pool = _pool_field()
    state = forms.ChoiceField(
        required=False,
        choices=[("", "Any state")] + [(s.value, s.label) for s in PodState if not s.is_terminal],
    )
    stale = forms.BooleanField(required=False)
    group = forms.ChoiceField(
        required=False, choices=[("", "")] + [(name, name) for name in CARD_GROUPS]
    )

    def filters(self) -> PodFilters:
        """Return the filters asked for; an unknown value (a stale bookmark's pool) matches none."""
        if not self.is_valid():
            return PodFilters(invalid=True)
        data = self.cleaned_data
        return PodFilters(
            pool=data["pool"], state=data["state"], stale=data["stale"], group=data["group"]
        )


class AuditFilterForm(forms.Form):
    pool = _pool_field()
    pod = forms.CharField(required=False, max_length=63)
    # Free text (exact match), so an actor with no events yet finds none rather than everyone's.
    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=40)

    def filters(self) -> AuditFilters:
        """Return the filters asked for; an unknown pool matches nothing."""
        if not self.is_valid():
            return AuditFilters(invalid=True)
        data = self.cleaned_data
        return AuditFilters(
            pool=data["pool"], pod=data["pod"], actor=data["actor"], action=data["action"]
        )


def known_values(column: str) -> list[str]:
    """Return the actors (or actions) the audit log holds, to suggest in its filter."""
    return list(AuditEvent.objects.order_by(column).values_list(column, flat=True).distinct())
