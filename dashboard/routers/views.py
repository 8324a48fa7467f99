"""Pages and JSON endpoints.  Every view needs a signed-in user with the viewer role;
tuning needs the tuner role, a POST and a valid CSRF token."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard.routers import history, sharing, stagegraph
from dashboard.routers.forms import ParameterForm, display_value, grouped_forms
from dashboard.routers.models import AuditEntry, Router
from dashboard.routers.poller import POLLER_GROUP
from dashboard.routers.roles import TUNE_PERMISSION, VIEW_PERMISSION, can_tune
from dashboard.routers.routerclient import (
    RouterRefused,
    RouterUnavailable,
    describe_parameters,
    set_parameters,
)
from dashboard.routers.routing import router_websocket_path

log = logging.getLogger(__name__)

LIVE_WINDOW = 300.0  # seconds of history the live charts show


def viewer_required(view: Any) -> Any:
    return login_required(permission_required(VIEW_PERMISSION, raise_exception=True)(view))


def tuner_required(view: Any) -> Any:
    return login_required(permission_required(TUNE_PERMISSION, raise_exception=True)(view))


def _span(delta: timedelta) -> str:
    seconds = round(delta.total_seconds())
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def locked_out(request: HttpRequest, *_: Any) -> HttpResponse:
    """django-axes' lockout answer (AXES_LOCKOUT_CALLABLE): the sign-in page, 429.

    Called by axes' middleware with (request, response, credentials), or with fewer
    arguments depending on its version and sync/async path, so the rest is ignored.
    """
    cooloff: timedelta = settings.AXES_COOLOFF_TIME
    response = render(
        request,
        "registration/login.html",
        {"locked_out": _span(cooloff), "next": request.POST.get("next", "")},
        status=429,
    )
    response["Retry-After"] = str(round(cooloff.total_seconds()))
    return response


@require_GET
@viewer_required
def overview(request: HttpRequest) -> HttpResponse:
    routers = list(Router.objects.all())
    latest = {pk: sample["r"] for pk, sample in history.latest(r.pk for r in routers).items()}
    rows = [
        {
            "name": router.name,
            "base_url": router.base_url,
            "listen": router.listen,
            "enabled": router.enabled,
            "up": router.up and router.enabled,
            "last_seen": router.last_seen,
            "error": router.last_error,
            "totals": latest.get(router.pk, {}),
        }
        for router in routers
    ]
    return render(request, "dashboard/overview.html", {"rows": rows})


@require_GET
@viewer_required
def router_detail(request: HttpRequest, name: str) -> HttpResponse:
    router = get_object_or_404(Router, name=name)
    descriptions: list[dict[str, Any]] = []
    parameters_error = ""
    try:
        descriptions = describe_parameters(router)
    except RouterUnavailable as error:
        parameters_error = str(error)
    latest = history.latest([router.pk]).get(router.pk)
    # The graph the router last reported; the stage names of its samples cover a router
    # too old to report one (and a stage the graph does not name).
    graph = stagegraph.for_page(stagegraph.clean(router.graph), list(latest["s"]) if latest else [])
    context = {
        "router": router,
        "tunable": can_tune(request.user),
        "groups": grouped_forms(descriptions),
        "parameters": [{**d, "display": display_value(d)} for d in descriptions],
        "parameters_error": parameters_error,
        "audit": AuditEntry.objects.filter(router=router)[:20],
        "page_config": {
            "router": router.name,
            "ws": router_websocket_path(router.name),
            "history": reverse("dashboard:router-history", args=[router.name]),
            "tune": reverse("dashboard:router-tune", args=[router.name]),
            "stages": [stage["name"] for stage in graph["stages"]],
            "graph": graph,
            "liveWindow": LIVE_WINDOW,
            "up": router.up,
        },
    }
    return render(request, "dashboard/router.html", context)


def _moment(text: str | None, default: datetime) -> datetime:
    if text in (None, ""):
        return default
    return datetime.fromtimestamp(float(text), tz=UTC)


@require_GET
@viewer_required
def router_history(request: HttpRequest, name: str) -> HttpResponse:
    """?start=&end= (epoch seconds; default: the live window) -> columns for the charts."""
    router = get_object_or_404(Router, name=name)
    now = datetime.now(tz=UTC)
    try:
        end = _moment(request.GET.get("end"), now)
        start = _moment(request.GET.get("start"), end - timedelta(seconds=LIVE_WINDOW))
        points = int(request.GET.get("points", "1500"))
    except (ValueError, OverflowError, OSError):
        return HttpResponseBadRequest("start, end: epoch seconds; points: an integer")
    if start >= end or not 10 <= points <= 5000:
        return HttpResponseBadRequest("need start < end and 10 <= points <= 5000")
    data = history.read(router.pk, start, end, max_points=points)
    first = history.oldest(router.pk)
    data["oldest"] = first.timestamp() if first else None
    return JsonResponse(data)


@require_GET
@viewer_required
def pollers(request: HttpRequest) -> HttpResponse:
    """The live pollers: each one's share of the routers, polls per second, CPU, lag."""
    leases = sharing.live()
    names = dict(Router.objects.values_list("id", "name"))
    rows = [
        {"lease": lease, "routers": sorted(names[pk] for pk in lease.routers if pk in names)}
        for lease in leases
    ]
    watched = {pk for lease in leases for pk in lease.routers}
    enabled = Router.objects.filter(enabled=True).values_list("id", "name")
    context = {
        "rows": rows,
        "unwatched": sorted(name for pk, name in enabled if pk not in watched),
        "interval": settings.POLL_INTERVAL,
        "lease_ttl": settings.POLLER_LEASE_TTL,
    }
    return render(request, "dashboard/pollers.html", context)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _answer(request: HttpRequest, router: Router, status: int, payload: dict) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(payload, status=status)
    level = messages.SUCCESS if payload.get("ok") else messages.ERROR
    messages.add_message(request, level, payload.get("message", ""))
    return redirect("dashboard:router", name=router.name)


def _audit(
    request: HttpRequest,
    router: Router,
    parameter: str,
    old: Any,
    new: Any,
    *,
    accepted: bool,
    error: str = "",
) -> AuditEntry:
    entry = AuditEntry.objects.create(
        user=request.user if request.user.is_authenticated else None,
        username=request.user.get_username(),
        router=router,
        router_name=router.name,
        parameter=parameter[:200],
        old=old,
        new=new,
        accepted=accepted,
        error=error[:500],
    )
    layer = get_channel_layer()
    if layer is not None:
        try:
            async_to_sync(layer.group_send)(
                router.group,
                {"type": "router.audit", "payload": {"kind": "audit", **entry.as_dict()}},
            )
        except Exception as send_error:  # the change stands; the live view just misses a line
            log.warning("audit broadcast failed: %s", send_error)
    return entry


def _poll_now(router: Router) -> None:
    """Ask the poller to fetch this router's metrics now, so the change shows at once."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(POLLER_GROUP, {"type": "poll.now", "router_id": router.pk})
    except Exception as error:  # the next regular poll shows it anyway
        log.warning("poll-now request failed: %s", error)


@require_POST
@tuner_required
def router_tune(request: HttpRequest, name: str) -> HttpResponse:
    """Change one parameter: validated here, then by the router; audited either way."""
    router = get_object_or_404(Router, name=name)
    parameter = request.POST.get("parameter", "")
    try:
        descriptions = {d["name"]: d for d in describe_parameters(router)}
    except RouterUnavailable as error:
        return _answer(
            request, router, 503, {"ok": False, "message": f"{router.name} is unreachable: {error}"}
        )
    description = descriptions.get(parameter)
    if description is None:
        return _answer(
            request, router, 400, {"ok": False, "message": f"unknown parameter {parameter!r}"}
        )
    form = ParameterForm(description, data=request.POST)
    old = description.get("value")
    if not form.is_valid():
        text = f"{parameter}: {form.error_text()}"
        _audit(
            request, router, parameter, old, request.POST.get("value"), accepted=False, error=text
        )
        return _answer(request, router, 400, {"ok": False, "message": text})
    value = form.cleaned_data["value"]
    try:
        changed = set_parameters(router, {parameter: value})
    except RouterRefused as error:
        _audit(request, router, parameter, old, value, accepted=False, error=str(error))
        return _answer(request, router, 400, {"ok": False, "message": str(error)})
    except RouterUnavailable as error:
        _audit(request, router, parameter, old, value, accepted=False, error=str(error))
        return _answer(
            request, router, 503, {"ok": False, "message": f"{router.name} is unreachable: {error}"}
        )
    before, after = changed.get(parameter, [old, value])
    _poll_now(router)
    _audit(request, router, parameter, before, after, accepted=True)
    log.info(
        "%s set %s on %s: %r -> %r",
        request.user.get_username(),
        parameter,
        router.name,
        before,
        after,
    )
    return _answer(
        request,
        router,
        200,
        {
            "ok": True,
            "message": f"{parameter}: {before!r} -> {after!r}",
            "parameter": parameter,
            "old": before,
            "new": after,
        },
    )


@require_GET
@viewer_required
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.all()
    router = request.GET.get("router")
    if router:
        entries = entries.filter(router_name=router)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/audit.html",
        {
            "page": page,
            "router": router or "",
            "routers": Router.objects.values_list("name", flat=True),
        },
    )
