"""Writes for teams and memberships; password checks; sign-in throttling."""

from __future__ import annotations

import datetime as dt
import logging
import math

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from controlplane.accounts.models import Membership, Role, SignInAttempt, SignInOutcome, Team

log = logging.getLogger(__name__)


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


@transaction.atomic
def membership_set(*, team: Team, username: str, role: str) -> Membership:
    """Add ``username`` to the team or change their role (scripts, tests, team_create). Never
    demotes the team's last admin (LastAdmin)."""
    user = get_user_model().objects.get(username=username)
    role = Role(role)
    _lock_team(team)
    existing = Membership.objects.filter(team=team, user=user).first()
    if existing is not None and role != Role.ADMIN:
        _refuse_losing_last_admin(team, existing, f"make {username} a {role.value}")
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    return membership


# -- members, as a team's admin manages them (the dashboard's team page) ----------------------------------------


class MembershipError(ValueError):
    """A membership change refused; ``field`` names the form field it is about, the message says
    what to do instead."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class LastAdmin(MembershipError):
    """The change would leave the team without an admin, and nobody could manage it any more."""


def _lock_team(team: Team) -> None:
    # Two admins demoting each other at once must not both see the other as the remaining
    # admin: the team's row serialises membership changes (a no-op lock on SQLite, whose
    # writers are serialised anyway).
    Team.objects.select_for_update().filter(pk=team.pk).exists()


def _refuse_losing_last_admin(team: Team, membership: Membership, doing: str) -> None:
    if membership.role != Role.ADMIN:
        return
    if not Membership.objects.filter(team=team, role=Role.ADMIN).exclude(pk=membership.pk).exists():
        raise LastAdmin(f"cannot {doing}: {membership.user.username} is the team's last admin, and a team needs "
                        "one to manage members and budgets. Make another member an admin first.", field="role")


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise MembershipError(f"unknown role {role!r}: choose one of {', '.join(r.value for r in Role)}",
                              field="role") from None


@transaction.atomic
def membership_add(*, team: Team, username: str, role: str, by=None) -> Membership:
    """An existing user joins the team with ``role``. Refused: no such user (accounts are made by
    whoever runs Edgeplane), or already a member (change their role instead)."""
    role = _role(role)
    username = username.strip()
    if not username:
        raise MembershipError("give the username of the person to add", field="username")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise MembershipError(f"no user named {username!r}: check the spelling, or ask whoever runs Edgeplane to "
                              "create the account (Django admin, Users) first", field="username")
    _lock_team(team)
    existing = Membership.objects.filter(team=team, user=user).first()
    if existing is not None:
        raise MembershipError(f"{username} is already a member ({existing.role}): change their role in the list "
                              "instead", field="username")
    membership = Membership.objects.create(team=team, user=user, role=role)
    log.info("membership added: team=%s user=%s role=%s by=%s", team.slug, username, role.value,
             getattr(by, "username", None))
    return membership


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, by=None) -> Membership:
    """Give a member another role; the team's last admin keeps theirs (LastAdmin)."""
    role = _role(role)
    team = membership.team
    _lock_team(team)
    membership = Membership.objects.select_related("user").get(pk=membership.pk)  # as it is now, under the lock
    old = membership.role
    if role == old:
        return membership
    if role != Role.ADMIN:
        _refuse_losing_last_admin(team, membership, f"make {membership.user.username} a {role.value}")
    membership.role = role
    membership.save(update_fields=["role"])
    log.info("membership role changed: team=%s user=%s role=%s->%s by=%s", team.slug, membership.user.username,
             old, role.value, getattr(by, "username", None))
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, by=None) -> None:
    """Take a member out of the team (their runs and datasets stay the team's); never the last admin."""
    team = membership.team
    _lock_team(team)
    membership = Membership.objects.select_related("user").filter(pk=membership.pk).first()
    if membership is None:
        return  # already removed (a second click, another admin): nothing to do
    _refuse_losing_last_admin(team, membership, f"remove {membership.user.username}")
    membership.delete()
    log.info("membership removed: team=%s user=%s role=%s by=%s", team.slug, membership.user.username,
             membership.role, getattr(by, "username", None))


# -- telemetry retention -------------------------------------------------------------------------------------

RETENTION_MAX_DAYS = 36500  # a hundred years: beyond it, say "forever" (empty)


class TeamSettingInvalid(ValueError):
    """A team setting refused; ``field`` names the form field, the message says what to type."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def retention_days_checked(value: object) -> int | None:
    """A retention as whole days >= 1, or None (keep forever) for None or an empty text.

    Accepts an int or a text of digits ("30", " 30 ", "1_000"); refuses fractions, zero,
    negatives, booleans and anything else with a message that says what to type."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    what = f"the retention must be a whole number of days, 1 or more (or empty to keep forever); got {value!r}"
    if isinstance(value, bool):
        raise TeamSettingInvalid(what, field="telemetry_retention_days")
    if isinstance(value, int):
        days = value
    elif isinstance(value, str) and value.strip().replace("_", "").lstrip("+-").isdigit():
        days = int(value.strip().replace("_", ""))
    else:
        raise TeamSettingInvalid(what, field="telemetry_retention_days")
    if days < 1 or days > RETENTION_MAX_DAYS:
        raise TeamSettingInvalid(f"{what.split('; got')[0]}, at most {RETENTION_MAX_DAYS}; got {value!r}",
                                 field="telemetry_retention_days")
    return days


@transaction.atomic
def team_set_telemetry_retention(*, team: Team, days: object, by=None) -> Team:
    """Set how many days a finished run's per-prompt telemetry stays in the database before it is
    archived to Parquet (``controlplane.telemetry.retention``); None or "" keeps it forever.
    Refused (TeamSettingInvalid) unless whole days >= 1."""
    checked = retention_days_checked(days)
    Team.objects.filter(pk=team.pk).update(telemetry_retention_days=checked)
    team.telemetry_retention_days = checked
    log.info("telemetry retention set: team=%s days=%s by=%s", team.slug, checked, getattr(by, "username", None))
    return team


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


# -- sign-in throttling ------------------------------------------------------------------------------


class SignInThrottled(Exception):
    """A sign-in refused before its password was checked: too many attempts, or a lockout.
    The web layer answers 429 with ``Retry-After: retry_after``."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def _seconds_until(moment: dt.datetime, now: dt.datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def signin_attempt_begin(*, address: str, username: str) -> SignInAttempt:
    """Record a sign-in about to check a password, or refuse it (SignInThrottled).

    Refused: the username is locked out (EDGEPLANE_SIGNIN_LOCKOUT_FAILURES failures within
    EDGEPLANE_SIGNIN_LOCKOUT_SECONDS), or the address or the username made more than
    EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS / EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS attempts within
    EDGEPLANE_SIGNIN_WINDOW_SECONDS. The attempt is written before it is counted, so concurrent
    sign-ins in other processes see it; a refused attempt is deleted again, so hammering neither
    fills the table nor pushes the Retry-After further out."""
    now = timezone.now()
    window = dt.timedelta(seconds=settings.EDGEPLANE_SIGNIN_WINDOW_SECONDS)
    lockout = dt.timedelta(seconds=settings.EDGEPLANE_SIGNIN_LOCKOUT_SECONDS)
    key = username.casefold()[:150]
    address = (address or "")[:45]
    # Nothing older than the longest window is ever read again.
    SignInAttempt.objects.filter(at__lt=now - max(window, lockout)).delete()

    locked_until = _locked_until(key, now, lockout)
    if locked_until is not None:
        raise SignInThrottled(
            f"Too many failed sign-ins for this username: it is locked until {locked_until:%H:%M:%S} UTC "
            f"(in {_seconds_until(locked_until, now)} s). Wait, or ask an admin to clear its failed "
            f"attempts (admin: Sign-in attempts).", retry_after=_seconds_until(locked_until, now))

    attempt = SignInAttempt.objects.create(at=now, address=address, username=key)
    counted = SignInAttempt.objects.filter(at__gt=now - window)
    for label, rows, limit in (
        ("from your address", counted.filter(address=address), settings.EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS),
        ("for this username", counted.filter(username=key), settings.EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS),
    ):
        if rows.count() > limit:
            # A place frees up when the oldest counted attempt leaves the window.
            oldest = rows.exclude(pk=attempt.pk).order_by("at").values_list("at", flat=True).first() or now
            attempt.delete()
            retry_after = _seconds_until(oldest + window, now)
            raise SignInThrottled(
                f"Too many sign-in attempts {label}: at most {limit} every "
                f"{settings.EDGEPLANE_SIGNIN_WINDOW_SECONDS} s. Try again in {retry_after} s.",
                retry_after=retry_after)
    return attempt


def _locked_until(key: str, now: dt.datetime, lockout: dt.timedelta) -> dt.datetime | None:
    """When the username's lockout ends, or None: N failures since its last success within
    the lockout period lock it until that long after the last of them."""
    recent = SignInAttempt.objects.filter(username=key, at__gt=now - lockout)
    last_success = recent.filter(outcome=SignInOutcome.SUCCEEDED).order_by("-at").values_list("at", flat=True).first()
    failures = recent.filter(outcome=SignInOutcome.FAILED)
    if last_success is not None:
        failures = failures.filter(at__gt=last_success)
    times = list(failures.order_by("-at").values_list("at", flat=True)[: settings.EDGEPLANE_SIGNIN_LOCKOUT_FAILURES])
    if len(times) < settings.EDGEPLANE_SIGNIN_LOCKOUT_FAILURES:
        return None
    until = times[0] + lockout
    return until if until > now else None


def signin_attempt_finish(*, attempt: SignInAttempt, succeeded: bool) -> None:
    attempt.outcome = SignInOutcome.SUCCEEDED if succeeded else SignInOutcome.FAILED
    attempt.save(update_fields=["outcome"])
