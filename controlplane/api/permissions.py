"""Who may see and do what. Another team's object is not found (404), never forbidden:
a 403 would confirm that it exists. A member without the role gets 403."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions, permissions

from controlplane.accounts.models import Role, Team
from controlplane.accounts.selectors import membership_of, teams_for_user
from controlplane.api.authentication import RunTokenAuth
from controlplane.runs.models import Run
from controlplane.runs.selectors import run_for_user_or_none


def team_or_404(user, slug: str) -> Team:
    team = teams_for_user(user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"no team {slug!r} among yours")
    return team


def run_or_404(user, run_id: int) -> Run:
    run = run_for_user_or_none(user, run_id)
    if run is None:
        raise Http404(f"no run {run_id} in your teams")
    return run


def require_role(user, team: Team | int, role: Role) -> None:
    """PermissionDenied (403) unless the user holds ``role`` or higher in the team."""
    membership = membership_of(user, team)
    if membership is None:
        raise Http404("no such team among yours")
    if not membership.allows(role):
        raise exceptions.PermissionDenied(
            f"this needs the {role.value} role or higher in the team; you are {membership.role}")


class RunTokenScoped(permissions.BasePermission):
    """The request carries a live run token for exactly the run in the URL."""

    message = "this run token belongs to another run"

    def has_permission(self, request, view) -> bool:
        auth = request.auth
        return isinstance(auth, RunTokenAuth) and auth.run_id == int(view.kwargs["run_id"])
