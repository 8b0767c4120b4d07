"""Budget writes: budgets set, and the usage ledger fed by every step. Reads (where a team
stands, forecasts, what active runs still need) are in ``budgets.selectors``."""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from controlplane.accounts.models import Team
from controlplane.budgets.models import Budget, UsageEntry


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
