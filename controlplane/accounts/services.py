"""Writes for teams and memberships; password checks."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from controlplane.accounts.models import Membership, Role, Team


@transaction.atomic
def team_create(*, name: str, owner_username: str, owner_password: str | None = None) -> Team:
    """A team and its first admin (created if the user does not exist yet)."""
    slug = slugify(name)
    if not slug:
        raise ValueError(f"team name {name!r} has no letters or digits to make a slug from")
    User = get_user_model()
    user, created = User.objects.get_or_create(username=owner_username)
    if owner_password is not None:
        user.set_password(owner_password)
        user.save(update_fields=["password"])
    elif created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": name})
    membership_set(team=team, username=owner_username, role=Role.ADMIN)
    return team


def membership_set(*, team: Team, username: str, role: str) -> Membership:
    user = get_user_model().objects.get(username=username)
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": Role(role)})
    return membership


# -- passwords ---------------------------------------------------------------------------------------


def password_problems(password: str, *, username: str = "") -> list[str]:
    """What Django's password validators (settings.AUTH_PASSWORD_VALIDATORS) hold against
    ``password`` for the user ``username``; empty when it passes."""
    User = get_user_model()
    user = User.objects.filter(username=username).first() or User(username=username)
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        return list(exc.messages)
    return []
