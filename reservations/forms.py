"""Forms: what a user may ask for, checked on the server, with messages that say how to fix it."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from pool.models import GpuType, Pool
from reservations.claims import ReservationRequest
from reservations.models import SshKey
from reservations.naming import MAX_NAME_LENGTH, clean_requested_name
from reservations.sshkeys import MAX_KEY_LINE, InvalidKey, parse_public_key

DURATION_CHOICES_MINUTES = (5, 15, 30, 60, 120, 240, 480, 720, 1440)
EXTENSION_CHOICES_MINUTES = (30, 60, 120, 240, 480, 1440)


def minutes_text(minutes: int) -> str:
    """Say a number of minutes in hours and minutes: ``90`` is ``1 h 30 min``."""
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h" + (f" {rest:02d} min" if rest else "")


def _duration_bounds() -> tuple[int, int]:
    return settings.RESERVATION_MIN_MINUTES, int(settings.RESERVATION_MAX_HOURS * 60)


class ReservationForm(forms.Form):
    """GPU type, count, profile, duration and an optional name; ``reservation_request()``
    returns what ``claims.reserve`` takes."""

    gpu_type = forms.ModelChoiceField(
        queryset=GpuType.objects.all(),
        to_field_name="name",
        empty_label=None,
        label="GPU type",
        error_messages={"invalid_choice": "Unknown GPU type; pick one from the list."},
    )
    gpu_count = forms.TypedChoiceField(coerce=int, label="GPUs")
    profile = forms.ChoiceField(label="Profile")
    # Offered as a menu of common durations, but any whole number of minutes within the
    # limits is accepted: the settings are the rule, not the menu.
    duration = forms.IntegerField(label="Duration", widget=forms.Select)
    name = forms.CharField(
        required=False,
        strip=False,
        label="Name (optional)",
        help_text="Lowercase letters, digits and hyphens; a random name if left empty.",
        widget=forms.TextInput(
            attrs={"maxlength": MAX_NAME_LENGTH - 4, "placeholder": "e.g. my-experiment"}
        ),
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        gpu_type = self._chosen_gpu_type()
        counts = gpu_type.allowed_gpu_counts() if gpu_type else []
        count_field = self.fields["gpu_count"]
        count_field.choices = [(c, str(c) if c else "0 (CPU only)") for c in counts]
        count_field.error_messages["invalid_choice"] = (
            f"{gpu_type} reservations take {' or '.join(map(str, counts))} GPUs."
        )
        profiles = list(Pool.objects.filter(gpu_type=gpu_type).values_list("profile", flat=True))
        profile_field = self.fields["profile"]
        profile_field.choices = [(p, p) for p in profiles]
        profile_field.error_messages["invalid_choice"] = (
            f"{gpu_type} has no such profile; choose {' or '.join(profiles)}."
        )
        shortest, longest = _duration_bounds()
        limits = f"Reservations last from {minutes_text(shortest)} to {minutes_text(longest)}."
        duration = self.fields["duration"]
        duration.validators += [
            MinValueValidator(shortest, message=limits),
            MaxValueValidator(longest, message=limits),
        ]
        duration.widget.choices = [
            (m, minutes_text(m)) for m in DURATION_CHOICES_MINUTES if shortest <= m <= longest
        ]
        duration.initial = 120 if shortest <= 120 <= longest else shortest

    def _chosen_gpu_type(self) -> GpuType | None:
        """Return the type the user picked (or the first), to offer its counts and profiles."""
        name = (self.data or {}).get("gpu_type") or self.initial.get("gpu_type")
        return GpuType.objects.filter(name=name).first() or GpuType.objects.first()

    def clean_name(self) -> str:
        raw = self.cleaned_data["name"]
        return clean_requested_name(raw) if raw.strip() else ""

    def clean(self) -> dict:
        data = super().clean()
        if not self.user.ssh_keys.exists():
            raise ValidationError(
                "Add an SSH public key to your profile first: it is how you reach the server."
            )
        gpu_type, profile = data.get("gpu_type"), data.get("profile")
        if gpu_type is not None and profile is not None:
            data["pool"] = Pool.objects.get(gpu_type=gpu_type, profile=profile)
        return data

    def reservation_request(self) -> ReservationRequest:
        data = self.cleaned_data
        return ReservationRequest(
            pool=data["pool"],
            gpu_count=data["gpu_count"],
            duration=timedelta(minutes=data["duration"]),
            requested_name=data["name"],
        )


class SshKeyForm(forms.Form):
    """One OpenSSH public key, parsed and fingerprinted; duplicates refused."""

    public_key = forms.CharField(
        label="Public key",
        max_length=MAX_KEY_LINE,
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "placeholder": "ssh-ed25519 AAAAC3Nza… you@laptop",
                "spellcheck": "false",
            }
        ),
        error_messages={"max_length": "That is too long to be a public key."},
    )
    title = forms.CharField(
        label="Title (optional)",
        max_length=100,
        required=False,
        help_text="Defaults to the key's comment.",
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_public_key(self):
        try:
            key = parse_public_key(self.cleaned_data["public_key"])
        except InvalidKey as exc:
            raise ValidationError(str(exc)) from exc
        if SshKey.objects.filter(user=self.user, fingerprint=key.fingerprint).exists():
            raise ValidationError(f"You already added this key ({key.fingerprint}).")
        return key

    def save(self) -> SshKey:
        key = self.cleaned_data["public_key"]
        return SshKey.objects.create(
            user=self.user,
            title=self.cleaned_data["title"] or key.comment[:100],
            public_key=key.line,
            fingerprint=key.fingerprint,
        )


class ExtendForm(forms.Form):
    """How much longer; the reservation's total cap is the model's to enforce."""

    minutes = forms.TypedChoiceField(
        coerce=int,
        choices=[(m, f"+{minutes_text(m)}") for m in EXTENSION_CHOICES_MINUTES],
        error_messages={"invalid_choice": "Choose how long to extend by from the list."},
    )
