"""Notifications pages: the list (mark read, mark all read), the badge's JSON, and the team's
webhook settings (admins only). Thin: each view calls one selector or service.

Another team's webhook is a 404, as everywhere; a member below admin gets a 403.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.accounts.models import Role, Team
from controlplane.accounts.selectors import teams_for_user, user_can
from controlplane.notifications.models import DeliveryStatus, Kind
from controlplane.notifications.selectors import (
    PAGE,
    notifications_page,
    notifications_unread_count,
    webhook_deliveries_recent,
    webhook_of,
)
from controlplane.notifications.services import (
    WebhookURLError,
    notifications_mark_read,
    webhook_delete,
    webhook_secret_regenerate,
    webhook_set,
    webhook_test_send,
)
from frontend.forms import ID_MAX, id_or_none
from frontend.views import page

SHOWN_SECRET = "edgeplane_webhook_secret"  # session key: the secret, shown once on the next page
TEST_ANSWER = "edgeplane_webhook_test"  # session key: the test event's answer, shown on the next page


@login_required
@require_GET
def notifications(request: HttpRequest) -> HttpResponse:
    before = id_or_none(request.GET.get("before"))
    unread_only = request.GET.get("unread") == "1"
    rows = notifications_page(request.user, before=before, unread_only=unread_only)
    older = rows[PAGE - 1].pk if len(rows) > PAGE else None
    rows = rows[:PAGE]
    for row in rows:
        row.kind_words = Kind(row.kind).label  # type: ignore[attr-defined]
    teams = teams_for_user(request.user)
    return page(request, "frontend/notifications.html", {
        "notifications": rows, "older": older, "unread_only": unread_only, "paged": before is not None,
        "unread": notifications_unread_count(request.user), "several_teams": teams.count() > 1,
        "admin_teams": [t for t in teams if user_can(request.user, t, Role.ADMIN)]})


@login_required
@require_GET
def notifications_unread(request: HttpRequest) -> JsonResponse:
    """The badge's poll: one count."""
    return JsonResponse({"unread": notifications_unread_count(request.user)})


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    """Mark one notification read (``id``), or all (``all``). Another team's id changes nothing."""
    if request.POST.get("all"):
        notifications_mark_read(user=request.user)
    else:
        pk = id_or_none(request.POST.get("id"))
        if pk is None:
            messages.error(request, f"Nothing marked read: give the notification's id (1 to {ID_MAX:,}).")
        else:
            notifications_mark_read(user=request.user, notification_ids=[pk])
    target = reverse("frontend:notifications")
    return redirect(target + ("?unread=1" if request.POST.get("unread") == "1" else ""))


# -- the team's webhook ---------------------------------------------------------------------------------
def _admin_team(request: HttpRequest, slug: str) -> Team:
    team = teams_for_user(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"no team {slug!r} among yours")
    if not user_can(request.user, team, Role.ADMIN):
        raise PermissionDenied("only the team's admins manage its webhook")
    return team


@login_required
@require_http_methods(["GET", "POST"])
def webhook(request: HttpRequest, slug: str) -> HttpResponse:
    team = _admin_team(request, slug)
    endpoint = webhook_of(team)
    if request.method == "POST":
        url = request.POST.get("url", "")
        try:
            endpoint, secret = webhook_set(team=team, url=url, enabled=request.POST.get("enabled") == "on")
        except WebhookURLError as exc:
            return _webhook_page(request, team, endpoint, error=f"Not saved: {exc}", url=url, status=400)
        if secret:
            request.session[SHOWN_SECRET] = secret
        messages.success(request, "Webhook saved." + (" Copy its secret now: it is shown once." if secret else ""))
        return redirect("frontend:webhook", slug=team.slug)
    return _webhook_page(request, team, endpoint)


def _webhook_page(request: HttpRequest, team: Team, endpoint, *, error: str = "", url: str = "",
                  status: int = 200) -> HttpResponse:
    deliveries = webhook_deliveries_recent(endpoint) if endpoint else []
    for d in deliveries:
        d.status_words = DeliveryStatus(d.status).label  # type: ignore[attr-defined]
        d.event_words = Kind(d.event).label if d.event in Kind.values else "test event"  # type: ignore[attr-defined]
    return page(request, "frontend/webhook.html", {
        "team": team, "endpoint": endpoint, "error": error, "url": url or (endpoint.url if endpoint else ""),
        "secret": request.session.pop(SHOWN_SECRET, None), "deliveries": deliveries,
        "test": request.session.pop(TEST_ANSWER, None)}, status=status)


@login_required
@require_POST
def webhook_secret(request: HttpRequest, slug: str) -> HttpResponse:
    team = _admin_team(request, slug)
    endpoint = webhook_of(team)
    if endpoint is None:
        raise Http404("this team has no webhook yet: save an address first")
    request.session[SHOWN_SECRET] = webhook_secret_regenerate(endpoint=endpoint)
    messages.success(request, "New secret made: the old one no longer verifies. Copy it now: it is shown once.")
    return redirect("frontend:webhook", slug=team.slug)


@login_required
@require_POST
def webhook_remove(request: HttpRequest, slug: str) -> HttpResponse:
    team = _admin_team(request, slug)
    endpoint = webhook_of(team)
    if endpoint is not None:
        webhook_delete(endpoint=endpoint)
        messages.success(request, "Webhook removed: no more events are sent.")
    return redirect("frontend:webhook", slug=team.slug)


@login_required
@require_POST
def webhook_test(request: HttpRequest, slug: str) -> HttpResponse:
    """Send a test event now and show what the receiver answered (bounded by the delivery timeout)."""
    team = _admin_team(request, slug)
    endpoint = webhook_of(team)
    if endpoint is None:
        raise Http404("this team has no webhook yet: save an address first")
    _, answer = webhook_test_send(endpoint=endpoint)
    request.session[TEST_ANSWER] = {"ok": answer.delivered, "words": answer.words(), "text": answer.text}
    return redirect("frontend:webhook", slug=team.slug)
