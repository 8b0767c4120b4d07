"""Teams, and who may do what in them."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Retention of per-prompt telemetry (observations, decisions): a finished run older than this
    # many days has them exported to Parquet and removed from the database
    # (controlplane.telemetry.retention). Null: kept in the database for good.
    telemetry_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="days a finished run's per-prompt rows stay in the database; "
                                         "empty: forever (older runs' rows are archived to Parquet)")

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    VIEWER = "viewer"  # reads runs, datasets, budgets
    LAUNCHER = "launcher"  # also uploads datasets, launches and cancels runs
    ADMIN = "admin"  # also manages members and budgets


ROLE_RANK = {Role.VIEWER: 0, Role.LAUNCHER: 1, Role.ADMIN: 2}


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    def allows(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class SignInOutcome(models.TextChoices):
    PENDING = "pending"  # the password is being checked
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A refused attempt (throttled, locked out) is not kept: a flood of them stores nothing.


class SignInAttempt(models.Model):
    """One sign-in (browser, API token or admin), kept for the throttling windows only: the
    rows are the shared memory of every web process (controlplane.accounts.services.signin_*)."""

    at = models.DateTimeField(db_index=True)
    address = models.CharField(max_length=45, blank=True)  # REMOTE_ADDR ("" when there is none)
    username = models.CharField(max_length=150)  # casefolded, as typed (the user may not exist)
    outcome = models.CharField(max_length=16, choices=SignInOutcome.choices, default=SignInOutcome.PENDING)

    class Meta:
        indexes = [models.Index(fields=["username", "at"], name="signin_username_at"),
                   models.Index(fields=["address", "at"], name="signin_address_at")]

    def __str__(self) -> str:
        return f"{self.username} from {self.address or '?'} at {self.at:%Y-%m-%d %H:%M:%S}: {self.outcome}"
