"""The live ops dashboard: pools, pods, images, name leases and the audit log, for staff only.

Each page renders partials (``{% partialdef %}``) that the ops consumer re-renders and pushes
when the watcher reports a change; the page tells the consumer what it shows through the query
string of its WebSocket URL. Actions are POSTs (CSRF through ``hx-headers``), each audited with
the operator's name; an htmx request gets the changed partial back, a plain one a redirect.
"""

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from pool import dashboard, operator
from pool.forms import (
    AuditFilterForm,
    CleanupForm,
    PodFilterForm,
    RotationForm,
    TargetForm,
    known_values,
)
from pool.models import PodRecord, Pool
from pool.orphans import clean_up, find_orphans

# Status codes htmx is configured to swap (templates/ops/base.html), so a refusal or a
# validation error shows in place instead of being dropped.
UNPROCESSABLE = 422
CONFLICT = 409


def operator_required(view: Callable) -> Callable:
    """Let staff through; send anonymous visitors to sign in and refuse everyone else (403)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("The ops dashboard is for operators.")
        return view(request, *args, **kwargs)

    return guarded


def live_url(screen: str, params: QueryDict | None = None) -> str:
    """Return the WebSocket URL through which the ops consumer keeps ``screen`` live."""
    query = params.copy() if params is not None else QueryDict(mutable=True)
    query["screen"] = screen
    return f"/ws/ops/?{query.urlencode()}"


def _page(request: HttpRequest, template: str, screen: str, context: dict) -> HttpResponse:
    return render(
        request, template, context | {"screen": screen, "live_url": live_url(screen, request.GET)}
    )


# --- Pools --------------------------------------------------------------------------------------


@operator_required
@require_GET
def pools(request: HttpRequest) -> HttpResponse:
    context = dashboard.pools_context(now=timezone.now(), show_idle=request.GET.get("idle") == "1")
    return _page(request, "ops/pools.html", "pools", context)


def _pool_card(
    request: HttpRequest, pool_id: int, *, status: int = 200, flash: str = "", **extra
) -> HttpResponse:
    """Answer an htmx action with the pool's card, and ``flash`` in the status line.

    The status line sits outside the card because the next push redraws the card.
    """
    context = dashboard.pools_context(now=timezone.now(), show_idle=True)
    card = next(card for card in context["cards"] if card.pool.pk == pool_id)
    html = render_to_string("ops/pools.html#pool-card", context | {"card": card} | extra, request)
    if flash:
        html += render_to_string("ops/base.html#flash", {"flash": flash})
    return HttpResponse(html, status=status)


@operator_required
@require_POST
def pool_target(request: HttpRequest, pool_id: int) -> HttpResponse:
    pool = get_object_or_404(Pool.objects.select_related("gpu_type"), pk=pool_id)
    form = TargetForm(request.POST)
    if not form.is_valid():
        error = " ".join(form.errors["target"])
        if request.htmx:
            return _pool_card(
                request,
                pool.pk,
                status=UNPROCESSABLE,
                target_error=error,
                target_value=request.POST.get("target", ""),
            )
        messages.error(request, f"{pool}: {error}")
        return redirect("ops:pools")
    operator.set_target(pool.pk, form.cleaned_data["target"], actor=request.user.get_username())
    done = f"{pool}: target set to {form.cleaned_data['target']}."
    if request.htmx:
        return _pool_card(request, pool.pk, flash=done)
    messages.success(request, done)
    return redirect("ops:pools")


@operator_required
@require_POST
def pool_rotation(request: HttpRequest, pool_id: int) -> HttpResponse:
    pool = get_object_or_404(Pool.objects.select_related("gpu_type"), pk=pool_id)
    form = RotationForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Choose pause or resume.", status=400)
    operator.set_rotation_paused(pool.pk, form.paused, actor=request.user.get_username())
    done = f"{pool}: rotation {'paused' if form.paused else 'resumed'}."
    if request.htmx:
        return _pool_card(request, pool.pk, flash=done)
    messages.success(request, done)
    return redirect("ops:pools")


# --- Pods ---------------------------------------------------------------------------------------


@operator_required
@require_GET
def pods(request: HttpRequest) -> HttpResponse:
    form = PodFilterForm(request.GET)
    context = dashboard.pods_context(
        filters=form.filters(), page_number=request.GET.get("page", 1), now=timezone.now()
    )
    return _page(request, "ops/pods.html", "pods", context | {"form": form})


@operator_required
@require_http_methods(["GET", "POST"])
def pod_recycle(request: HttpRequest, name: str) -> HttpResponse:
    """Confirm (GET), then recycle (POST) one warm pod."""
    record = get_object_or_404(
        PodRecord.objects.select_related("pool__gpu_type", "name_lease", "reservation__user"),
        name=name,
    )
    back = request.GET.get("next") or request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("ops:pods")
    refusal = operator.refusal(record)
    context = {"pod": record, "refusal": refusal, "next": back}
    if request.method == "GET":
        template = "ops/recycle.html#recycle-dialog" if request.htmx else "ops/recycle.html"
        return render(request, template, context, status=CONFLICT if refusal else 200)
    try:
        outcome = operator.recycle_warm_pod(
            record, now=timezone.now(), actor=request.user.get_username()
        )
    except operator.RecycleRefused as refused:
        if request.htmx:
            return render(
                request,
                "ops/recycle.html#recycle-dialog",
                context | {"refusal": str(refused)},
                status=CONFLICT,
            )
        messages.error(request, str(refused))
        return redirect(back)
    if request.htmx:
        return render(request, "ops/recycle.html#recycle-done", {"outcome": outcome})
    messages.success(request, outcome)
    return redirect(back)


# --- Images -------------------------------------------------------------------------------------


@operator_required
@require_GET
def images(request: HttpRequest) -> HttpResponse:
    return _page(request, "ops/images.html", "images", dashboard.images_context(now=timezone.now()))


# --- Names --------------------------------------------------------------------------------------


@operator_required
@require_GET
def names(request: HttpRequest) -> HttpResponse:
    return _page(request, "ops/names.html", "names", dashboard.names_context(now=timezone.now()))


@operator_required
@require_http_methods(["GET", "POST"])
def names_cleanup(request: HttpRequest) -> HttpResponse:
    """Preview (GET) exactly which orphaned names a cleanup releases; release them (POST)."""
    template = "ops/cleanup.html#cleanup-panel" if request.htmx else "ops/cleanup.html"
    if request.method == "GET":
        return render(request, template, {"orphans": find_orphans(now=timezone.now())})
    form = CleanupForm(request.POST)
    if not form.is_valid():
        error = " ".join(form.errors["lease"])
        return render(request, template, {"error": error}, status=UNPROCESSABLE)
    result = clean_up(
        form.cleaned_data["lease"], now=timezone.now(), actor=request.user.get_username()
    )
    return render(request, template, {"result": result})


# --- Audit log ----------------------------------------------------------------------------------


@operator_required
@require_GET
def audit(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    context = dashboard.audit_context(
        filters=form.filters(), page_number=request.GET.get("page", 1), now=timezone.now()
    )
    suggestions = {"actors": known_values("actor"), "actions": known_values("action")}
    return _page(request, "ops/audit.html", "audit", context | {"form": form} | suggestions)
