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


# The ledger's bounds: an entry holds at most this many device-seconds (a step's are bounded
# far lower by workers.record.MAX_SECONDS; the warm-up entry adds up a run's heartbeats), and
# a uniform-GRPO figure at most USAGE_MAX_UNIFORM_SECONDS. The database refuses NaN, infinities
# and negatives too (Postgres sorts NaN above every number, so the upper bound catches it).
USAGE_MAX_SECONDS = 1e12
USAGE_MAX_UNIFORM_SECONDS = 1e18


class UsageKind(models.TextChoices):
    STEP = "step", "a step"
    WARMUP = "warmup", "the warm-up"


class UsageEntry(models.Model):
    """Device-seconds one step used, beside what uniform GRPO would have used for it; or the
    device-seconds of a run's warm-up (kind ``warmup``, step 0, no uniform counterpart beyond
    itself: uniform GRPO warms up alike).

    One row per (run, kind, step): a replayed step replaces its entry, never adds a second;
    the warm-up's heartbeats add to the run's one warm-up entry.
    """

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="usage")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=8, choices=UsageKind.choices, default=UsageKind.STEP,
                            db_default=UsageKind.STEP)
    step = models.PositiveIntegerField()
    device_seconds = models.FloatField()
    uniform_device_seconds = models.FloatField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "kind", "step"], name="one_usage_entry_per_kind_and_step"),
            models.CheckConstraint(condition=models.Q(device_seconds__gte=0, device_seconds__lte=USAGE_MAX_SECONDS),
                                   name="usage_device_seconds_in_range"),
            models.CheckConstraint(condition=models.Q(uniform_device_seconds__gte=0,
                                                      uniform_device_seconds__lte=USAGE_MAX_UNIFORM_SECONDS),
                                   name="usage_uniform_seconds_in_range"),
        ]
        indexes = [models.Index(fields=["team", "recorded_at"])]


class UsageDay(models.Model):
    """The ledger's device-seconds summed per run and day: the day of each entry's ``recorded_at``
    in the server's time zone, the one budget periods (dates) are read in. The budget answer a run
    gets each step sums these, a few rows per run and day, instead of the period's entries (one a
    step: a million in a busy month took 52 ms a sum, twice a step). ``budgets.services`` keeps it
    with every ledger write, in the same transaction; ``usage_days_rebuild`` remakes it from the
    ledger after a change made around the services."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+", db_index=False)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    device_seconds = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "day"], name="one_usage_day_per_run")]
        indexes = [models.Index(fields=["team", "day"], name="usage_day_team_day")]
