"""Budget writes and the budget arithmetic every launch and every step consults."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.models import Budget, UsageEntry

# Device-seconds per rollout assumed before a team has any history: the tiny model on
# 2 CPU cores measured about 0.002 s per rollout for a whole step (bench/engine_throughput.py).
DEFAULT_SECONDS_PER_ROLLOUT = 0.002
# The same for a kind of run that spends far more: verl on this machine's CPU (the tiny Llama,
# B=2, N=4, 4 new tokens) measured 2.4-3.4 device-seconds per 8-rollout step, Ray's overhead mostly.
DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND = {("verl", "cpu"): 0.35}


@dataclass(frozen=True)
class BudgetStatus:
    limit_device_hours: float | None  # None: the team has no budget for this period
    used_device_hours: float
    period_start: dt.date | None
    period_end: dt.date | None

    @property
    def remaining_device_hours(self) -> float | None:
        if self.limit_device_hours is None:
            return None
        return max(self.limit_device_hours - self.used_device_hours, 0.0)

    @property
    def exhausted(self) -> bool:
        return self.limit_device_hours is not None and self.used_device_hours >= self.limit_device_hours


class BudgetExceeded(Exception):
    def __init__(self, forecast_device_hours: float, remaining_device_hours: float) -> None:
        self.forecast_device_hours = forecast_device_hours
        self.remaining_device_hours = remaining_device_hours
        super().__init__(
            f"the run is forecast to use {forecast_device_hours:.4f} device-hours, but the team has "
            f"{remaining_device_hours:.4f} left this period: lower steps, B or N, or raise the budget"
        )


def budget_set(*, team: Team, period_start: dt.date, period_end: dt.date, limit_device_hours: float) -> Budget:
    if limit_device_hours < 0:
        raise ValueError("a budget limit cannot be negative")
    budget, _ = Budget.objects.update_or_create(
        team=team, period_start=period_start,
        defaults={"period_end": period_end, "limit_device_hours": limit_device_hours},
    )
    return budget


def budget_current(team: Team | int, at: dt.datetime | None = None) -> Budget | None:
    today = (at or timezone.now()).date()
    team_id = team if isinstance(team, int) else team.id
    return Budget.objects.filter(team_id=team_id, period_start__lte=today, period_end__gt=today).first()


def budget_status(team: Team | int, at: dt.datetime | None = None) -> BudgetStatus:
    budget = budget_current(team, at)
    team_id = team if isinstance(team, int) else team.id
    usage = UsageEntry.objects.filter(team_id=team_id)
    if budget is not None:
        start = timezone.make_aware(dt.datetime.combine(budget.period_start, dt.time()))
        end = timezone.make_aware(dt.datetime.combine(budget.period_end, dt.time()))
        usage = usage.filter(recorded_at__gte=start, recorded_at__lt=end)
    seconds = usage.aggregate(total=Sum("device_seconds"))["total"] or 0.0
    return BudgetStatus(
        limit_device_hours=budget.limit_device_hours if budget else None,
        used_device_hours=seconds / 3600.0,
        period_start=budget.period_start if budget else None,
        period_end=budget.period_end if budget else None,
    )


def seconds_per_rollout(team: Team | int, *, engine: str | None = None, device: str | None = None) -> float:
    """The team's measured device-seconds per generated rollout, from its past steps of runs on
    the same engine and device when given: a verl run on this machine's CPU spends about a
    hundred times more per rollout than the local engine's tiny model, so one rate for every
    kind of run would misjudge the next run of the other kind."""
    from controlplane.telemetry.models import StepSummary

    team_id = team if isinstance(team, int) else team.id
    steps = StepSummary.objects.filter(run__team_id=team_id)
    if engine is not None:
        steps = steps.filter(run__engine=engine)
    if device is not None:
        steps = steps.filter(run__config__device=device)
    totals = steps.aggregate(seconds=Sum("device_seconds"), rollouts=Sum("rollouts_generated"))
    if totals["rollouts"]:
        return float(totals["seconds"]) / float(totals["rollouts"])
    return DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND.get((engine, device), DEFAULT_SECONDS_PER_ROLLOUT)


def forecast_device_hours(*, team: Team | int, batch_size: int, group_size: int, steps: int,
                          engine: str | None = None, device: str | None = None) -> float:
    """Uniform-GRPO compute for the run at the team's measured rate on its engine and device
    (selection only saves)."""
    rate = seconds_per_rollout(team, engine=engine, device=device)
    return rate * batch_size * group_size * steps / 3600.0


def uniform_device_seconds(summary: dict) -> float:
    """What uniform GRPO would have spent on this step: generation and scoring scale with
    rollouts generated, the update with rollouts trained, selection costs nothing."""
    seconds = summary.get("seconds", {})
    uniform = summary["rollouts_uniform"]
    per_generated = (seconds.get("generate", 0.0) + seconds.get("reward", 0.0)) / max(summary["rollouts_generated"], 1)
    per_trained = seconds.get("update", 0.0) / max(summary["rollouts_trained"], 1)
    return uniform * (per_generated + per_trained)


@transaction.atomic
def usage_record(*, run, step: int, device_seconds: float, uniform_seconds: float) -> UsageEntry:
    entry, _ = UsageEntry.objects.update_or_create(
        run=run, step=step,
        defaults={"team_id": run.team_id, "user_id": run.created_by_id, "device_seconds": device_seconds,
                  "uniform_device_seconds": uniform_seconds},
    )
    return entry
