"""Developer pages: reserve, see and act on your reservations, manage your SSH keys.

Views stay thin: forms validate, ``claims`` decides, ``cards`` renders. Every reservation is
looked up through the signed-in user's own queryset, so another user's id is a 404.
"""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from reservations import capacity, cards, claims
from reservations.forms import ExtendForm, ReservationForm, SshKeyForm
from reservations.models import Reservation, ReservationStatus, SshKey


def _home(
    request: HttpRequest, form: ReservationForm | None = None, *, status: int = 200
) -> HttpResponse:
    now = timezone.now()
    overview = capacity.overview(now)
    if form is None:
        suggested = capacity.suggested_type(overview)
        initial = {"gpu_type": suggested.name} if suggested else {}
        form = ReservationForm(user=request.user, initial=initial)
    context = {
        "form": form,
        "overview": overview,
        "cards": cards.cards_for(request.user, now),
        "extend_form": ExtendForm(),
        "has_keys": request.user.ssh_keys.exists(),
    }
    return render(request, "home.html", context, status=status)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return _home(request)


@login_required
@require_GET
def reserve_form(request: HttpRequest) -> HttpResponse:
    """Re-render the reserve form for another GPU type (its counts and profiles)."""
    form = ReservationForm(user=request.user, initial=request.GET.dict())
    return render(request, "home.html#reserve-form", {"form": form})


_OUTCOME = {
    ReservationStatus.ACTIVE: "Your dev server is ready.",
    ReservationStatus.STARTING: "Starting a new dev server for you; this page follows it live.",
    ReservationStatus.QUEUED: "No room right now: you are in the queue.",
}


@login_required
@require_POST
def reserve(request: HttpRequest) -> HttpResponse:
    form = ReservationForm(request.POST, user=request.user)
    if not form.is_valid():
        return _home(request, form, status=400)
    reservation = claims.reserve(request.user, form.reservation_request(), now=timezone.now())
    messages.success(request, _OUTCOME[reservation.status_enum])
    return _to_card(reservation)


def _to_card(reservation: Reservation) -> HttpResponse:
    return redirect(f"{reverse('reservations:home')}#reservation-{reservation.pk}")


def _mine(request: HttpRequest, pk) -> Reservation:
    return get_object_or_404(Reservation.objects.select_related("pool"), pk=pk, user=request.user)


def _after_action(request: HttpRequest, reservation: Reservation, error: str = "") -> HttpResponse:
    """Answer htmx with the updated card (the error inside it); others with a redirect."""
    if request.htmx:
        card = cards.card_for(request.user, reservation.pk, timezone.now())
        return HttpResponse(cards.render_card(card, error=error))
    if error:
        messages.error(request, error)
    return _to_card(reservation)


@login_required
@require_POST
def extend(request: HttpRequest, pk) -> HttpResponse:
    reservation = _mine(request, pk)
    form = ExtendForm(request.POST)
    if not form.is_valid():
        return _after_action(request, reservation, " ".join(form.errors["minutes"]))
    try:
        claims.extend_reservation(
            reservation,
            timedelta(minutes=form.cleaned_data["minutes"]),
            now=timezone.now(),
            actor=request.user.get_username(),
        )
    except claims.ActionRefused as exc:
        return _after_action(request, reservation, str(exc))
    return _after_action(request, reservation)


@login_required
@require_POST
def cancel(request: HttpRequest, pk) -> HttpResponse:
    reservation = _mine(request, pk)
    try:
        claims.cancel_reservation(
            reservation, now=timezone.now(), actor=request.user.get_username()
        )
    except claims.ActionRefused as exc:
        return _after_action(request, reservation, str(exc))
    return _after_action(request, reservation)


# --- Profile: SSH keys ----------------------------------------------------------------------


def _profile(request: HttpRequest, form: SshKeyForm, *, status: int = 200) -> HttpResponse:
    keys = request.user.ssh_keys.all()
    return render(request, "reservations/profile.html", {"form": form, "keys": keys}, status=status)


@login_required
@require_GET
def profile(request: HttpRequest) -> HttpResponse:
    return _profile(request, SshKeyForm(user=request.user))


@login_required
@require_POST
def add_key(request: HttpRequest) -> HttpResponse:
    form = SshKeyForm(request.POST, user=request.user)
    if not form.is_valid():
        return _profile(request, form, status=400)
    key = form.save()
    claims.refresh_keys(request.user)
    messages.success(request, f"Added {key.title or 'your key'} ({key.fingerprint}).")
    return redirect("reservations:profile")


@login_required
@require_POST
def delete_key(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(SshKey, pk=pk, user=request.user)
    key.delete()
    claims.refresh_keys(request.user)
    messages.success(request, f"Removed {key.title or key.fingerprint}.")
    return redirect("reservations:profile")
