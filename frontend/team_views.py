"""The team page: members and their roles, and the team's compute budgets per period.

Every member reads it; only the team's admins change it (a 403 for anyone else's writes), and
only in their own team (another team is a 404, as a missing one). The services refuse what
would break the team: removing or demoting its last admin, a budget out of range or
overlapping another (controlplane/accounts/services.py, controlplane/budgets/services.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from controlplane.accounts.models import Membership, Role, Team
from controlplane.accounts.selectors import teams_for_user, user_can
from controlplane.accounts.services import (
    RETENTION_MAX_DAYS,
    MembershipError,
    TeamSettingInvalid,
    membership_add,
    membership_change_role,
    membership_remove,
    team_set_telemetry_retention,
)
from controlplane.budgets.models import Budget
from controlplane.budgets.selectors import budget_status, budgets_for_team
from controlplane.budgets.services import (
    BUDGET_MAX_DEVICE_HOURS,
    BUDGET_MIN_DEVICE_HOURS,
    BUDGET_PERIODS,
    BudgetInvalid,
    budget_change_limit,
    budget_period_bounds,
    budget_remove,
    budget_set_period,
)
from frontend.forms import refuse_malformed
from frontend.views import page

ROLES = [(Role.VIEWER.value, "viewer: reads runs, datasets and budgets"),
         (Role.LAUNCHER.value, "launcher: also uploads datasets, launches and cancels runs"),
         (Role.ADMIN.value, "admin: also manages members and budgets")]


def _team_or_404(request: HttpRequest, slug: str) -> Team:
    team = teams_for_user(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"no team {slug!r} among yours")
    return team


def _admin_team(request: HttpRequest, slug: str) -> Team:
    team = _team_or_404(request, slug)
    if not user_can(request.user, team, Role.ADMIN):
        raise PermissionDenied("managing members and budgets needs the admin role in the team")
    return team


def parse_limit(raw: str) -> float:
    """A posted limit as a number, or BudgetInvalid saying what to type."""
    text = raw.strip().replace("_", "")
    try:
        value = float(text)
    except ValueError:
        raise BudgetInvalid(f"the limit must be a number of device-hours, like 12.5; got {raw!r}",
                            field="limit") from None
    return value


def parse_day(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise BudgetInvalid(f"the date must be a day as YYYY-MM-DD, got {raw!r}", field="day") from None


def _page(request: HttpRequest, team: Team, *, status: int = 200, errors: dict[str, str] | None = None,
          form: dict[str, Any] | None = None) -> HttpResponse:
    today = timezone.now().date()
    members = team.memberships.select_related("user").order_by("user__username")
    admins = sum(1 for m in members if m.role == Role.ADMIN)
    retention = team.telemetry_retention_days
    form = {"period": "month", "day": today.isoformat(), "limit": "", "username": "", "role": "viewer",
            "telemetry_retention_days": "" if retention is None else str(retention), **(form or {})}
    now = budget_status(team)
    periods = []
    for value, label in BUDGET_PERIODS.items():
        start, end = budget_period_bounds(value, today)
        last = end - dt.timedelta(days=1)
        periods.append({"value": value, "label": label, "now": f"{start:%Y-%m-%d} to {last:%Y-%m-%d}"})
    return page(request, "frontend/team.html", {
        "team": team, "members": members, "admins": admins, "roles": ROLES, "periods": periods,
        "is_admin": user_can(request.user, team, Role.ADMIN), "budgets": budgets_for_team(team),
        "status_now": now, "errors": errors or {}, "form": form,
        "max_limit": f"{BUDGET_MAX_DEVICE_HOURS:,.0f}", "min_limit": f"{BUDGET_MIN_DEVICE_HOURS:g}",
        "now_last_day": now.period_end - dt.timedelta(days=1) if now.period_end else None,
        "retention_max_days": RETENTION_MAX_DAYS,
    }, status=status)


@login_required
@refuse_malformed
@require_http_methods(["GET", "POST"])
def team(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the page. POST (admins): ``action`` add_member, set_budget or set_retention, the page's forms.
    One address for the page and its forms: fewer routes, each walked by the malformed-input test."""
    if request.method == "GET":
        return _page(request, _team_or_404(request, slug))
    team = _admin_team(request, slug)
    action = request.POST.get("action", "")
    if action == "add_member":
        return _member_add(request, team)
    if action == "set_budget":
        return _budget_set(request, team)
    if action == "set_retention":
        return _retention_set(request, team)
    raise BadRequest(f"unknown action {action!r}: the team page's forms send add_member, set_budget or set_retention")


def _retention_set(request: HttpRequest, team: Team) -> HttpResponse:
    raw = request.POST.get("telemetry_retention_days", "")
    try:
        team = team_set_telemetry_retention(team=team, days=raw, by=request.user)
    except TeamSettingInvalid as exc:
        return _page(request, team, status=400, errors={"retention": exc.message},
                     form={"telemetry_retention_days": raw})
    days = team.telemetry_retention_days
    messages.success(request, "Per-prompt telemetry is kept in the database for good." if days is None else
                     f"Per-prompt telemetry of runs finished more than {days} day{'s' if days != 1 else ''} ago "
                     "will be archived to Parquet files.")
    return redirect("frontend:team", slug=team.slug)


# -- members ------------------------------------------------------------------------------------------------


def _member_or_404(team: Team, member_id: int) -> Membership:
    membership = Membership.objects.select_related("user", "team").filter(team=team, pk=member_id).first()
    if membership is None:
        raise Http404(f"no member {member_id} in team {team.slug}")
    return membership


def _member_add(request: HttpRequest, team: Team) -> HttpResponse:
    username, role = request.POST.get("username", ""), request.POST.get("role", "")
    try:
        membership = membership_add(team=team, username=username, role=role, by=request.user)
    except MembershipError as exc:
        return _page(request, team, status=400, errors={f"add_{exc.field or 'username'}": exc.message},
                     form={"username": username, "role": role})
    messages.success(request, f"{membership.user.username} added to {team.name} as {membership.role}.")
    return redirect("frontend:team", slug=team.slug)


@login_required
@refuse_malformed
@require_POST
def member(request: HttpRequest, slug: str, member_id: int) -> HttpResponse:
    """``action`` role (with ``role``) or remove (the team page's confirmation step sends it)."""
    team = _admin_team(request, slug)
    membership = _member_or_404(team, member_id)
    action = request.POST.get("action", "")
    name = membership.user.username
    try:
        if action == "role":
            membership = membership_change_role(membership=membership, role=request.POST.get("role", ""),
                                                by=request.user)
            messages.success(request, f"{name} is now {membership.role} in {team.name}.")
        elif action == "remove":
            membership_remove(membership=membership, by=request.user)
            messages.success(request, f"{name} removed from {team.name}.")
            if membership.user_id == request.user.pk:
                return redirect("frontend:runs")  # no longer a member: the team page is not theirs to see
        else:
            raise BadRequest(f"unknown action {action!r}: send role (with a role) or remove")
    except MembershipError as exc:
        return _page(request, team, status=400, errors={f"member_{membership.pk}": exc.message})
    return redirect("frontend:team", slug=team.slug)


# -- budgets ------------------------------------------------------------------------------------------------


def _budget_set(request: HttpRequest, team: Team) -> HttpResponse:
    form = {k: request.POST.get(k, "") for k in ("period", "day", "limit")}
    try:
        budget = budget_set_period(team=team, period=form["period"], day=parse_day(form["day"]),
                                   limit_device_hours=parse_limit(form["limit"]), by=request.user)
    except BudgetInvalid as exc:
        return _page(request, team, status=400, errors={f"budget_{exc.field}": exc.message}, form=form)
    messages.success(request, f"Budget set: {budget.limit_device_hours:g} device-hours from "
                              f"{budget.period_start:%Y-%m-%d} to {budget.period_end - dt.timedelta(days=1):%Y-%m-%d}.")
    return redirect("frontend:team", slug=team.slug)


def _budget_or_404(team: Team, budget_id: int) -> Budget:
    budget = Budget.objects.select_related("team").filter(team=team, pk=budget_id).first()
    if budget is None:
        raise Http404(f"no budget {budget_id} in team {team.slug}")
    return budget


@login_required
@refuse_malformed
@require_POST
def budget(request: HttpRequest, slug: str, budget_id: int) -> HttpResponse:
    """``action`` limit (with ``limit``) or remove (the team page's confirmation step sends it)."""
    team = _admin_team(request, slug)
    budget = _budget_or_404(team, budget_id)
    action = request.POST.get("action", "")
    try:
        if action == "limit":
            budget = budget_change_limit(budget=budget, limit_device_hours=parse_limit(request.POST.get("limit", "")),
                                         by=request.user)
            messages.success(request, f"Budget from {budget.period_start:%Y-%m-%d} now {budget.limit_device_hours:g} "
                                      "device-hours.")
        elif action == "remove":
            budget_remove(budget=budget, by=request.user)
            messages.success(request, f"Budget from {budget.period_start:%Y-%m-%d} removed: that period has no limit.")
        else:
            raise BadRequest(f"unknown action {action!r}: send limit (with a limit) or remove")
    except BudgetInvalid as exc:
        return _page(request, team, status=400, errors={f"budget_{budget.pk}": exc.message})
    return redirect("frontend:team", slug=team.slug)
