"""Reads for teams: what a user may see. Another team's object is simply not found."""

from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Membership, Team


def teams_for_user(user) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user=user).order_by("slug")


def membership_of(user, team: Team | int) -> Membership | None:
    team_id = team if isinstance(team, int) else team.id
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(user=user, team_id=team_id).first()


def user_can(user, team: Team | int, role: str) -> bool:
    membership = membership_of(user, team)
    return membership is not None and membership.allows(role)
