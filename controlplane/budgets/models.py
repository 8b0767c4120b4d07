"""Team budgets in device-hours, and the usage ledger fed by every step."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Budget(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="budgets")
    period_start = models.DateField()
    period_end = models.DateField(help_text="exclusive")
    limit_device_hours = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "period_start"], name="one_budget_per_period"),
            models.CheckConstraint(condition=models.Q(period_end__gt=models.F("period_start")),
                                   name="period_not_empty"),
        ]


class UsageEntry(models.Model):
    """Device-seconds one step used, beside what uniform GRPO would have used for it.

    One row per (run, step): a replayed step replaces its entry, never adds a second.
    """

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="usage")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    step = models.PositiveIntegerField()
    device_seconds = models.FloatField()
    uniform_device_seconds = models.FloatField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_usage_entry_per_step")]
        indexes = [models.Index(fields=["team", "recorded_at"])]
