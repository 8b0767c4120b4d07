"""Notifications, who has read them, and the team's webhook with its delivery log.

A notification is recorded once per event: its ``dedupe_key`` is unique, built from what the
event is (the run and its attempt's end, the budget period and threshold, the run and the
alert's kind), so a replayed step, a retried task or a sink's repeated report finds the row
already there and records nothing.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


class Kind(models.TextChoices):
    RUN_SUCCEEDED = "run_succeeded", "run finished"
    RUN_FAILED = "run_failed", "run failed"
    RUN_DIVERGED = "run_diverged", "training diverged"
    RUN_CANCELLED = "run_cancelled", "run cancelled"
    RUN_BUDGET_STOPPED = "run_budget_stopped", "run stopped by the budget"
    BUDGET_WARNING = "budget_warning", "budget at 80%"
    BUDGET_EXHAUSTED = "budget_exhausted", "budget used up"
    RUN_ALERT = "run_alert", "step alert"


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    ERROR = "error", "error"


class Notification(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="notifications")
    # Kept when the run is deleted: the team still learns what happened.
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.INFO)
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="the event's figures, sent in the webhook's payload")
    dedupe_key = models.CharField(max_length=200, unique=True,
                                  help_text="what makes two reports the same event: recorded once")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["team", "-created_at"], name="notification_team_newest")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.title}"


class NotificationRead(models.Model):
    """Read state is per user: a teammate reading a notification does not read it for you."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="reads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_reads")
    read_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "notification"], name="one_read_per_user")]


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """One per team: where its notifications are POSTed, signed with ``secret``."""

    team = models.OneToOneField("accounts.Team", on_delete=models.CASCADE, related_name="webhook")
    url = models.URLField(max_length=2000)
    # Kept as is: signing needs it (an HMAC key cannot be stored hashed). Shown to an admin once.
    secret = models.CharField(max_length=100, default=new_secret)
    enabled = models.BooleanField(default=True)
    last_status = models.CharField(max_length=300, blank=True, help_text="the last delivery's outcome, in words")
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"webhook of {self.team_id}: {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "waiting to be sent"
    RETRYING = "retrying", "failed, will retry"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed, gave up"


class WebhookDelivery(models.Model):
    """One event sent (or to be sent) to an endpoint: the body is stored, so every retry sends
    the same event; each attempt is signed afresh (its timestamp is part of the signature)."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # Null for the settings page's test event.
    notification = models.ForeignKey(Notification, null=True, blank=True, on_delete=models.CASCADE,
                                      related_name="deliveries")
    event = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_newest")]
        constraints = [models.UniqueConstraint(fields=["endpoint", "notification"], name="one_delivery_per_event",
                                               condition=models.Q(notification__isnull=False))]
