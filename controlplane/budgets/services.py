"""Budget writes: budgets set, and the usage ledger fed by every step. Reads (where a team
stands, forecasts, what active runs still need) are in ``budgets.selectors``."""

from __future__ import annotations

import datetime as dt
import math

from django.db import transaction
from django.db.models import F

from controlplane.accounts.models import Team
from controlplane.budgets.models import (
    USAGE_MAX_SECONDS,
    USAGE_MAX_UNIFORM_SECONDS,
    Budget,
    UsageEntry,
    UsageKind,
)
from controlplane.notifications.services import notification_budget_check


class BudgetExceeded(Exception):
    def __init__(self, forecast_device_hours: float, remaining_device_hours: float) -> None:
        self.forecast_device_hours = forecast_device_hours
        self.remaining_device_hours = remaining_device_hours
        super().__init__(
            f"the run is forecast to use {forecast_device_hours:.4f} device-hours, but the team has "
            f"{remaining_device_hours:.4f} left this period: lower steps, B or N (or the response length, model "
            f"size, evaluation or warm-up: docs/limits.md prices each), or raise the budget"
        )


def budget_set(*, team: Team, period_start: dt.date, period_end: dt.date, limit_device_hours: float) -> Budget:
    if not (isinstance(limit_device_hours, (int, float)) and math.isfinite(limit_device_hours)
            and limit_device_hours >= 0):
        raise ValueError(f"a budget limit must be a finite number of device-hours >= 0, got {limit_device_hours!r}")
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


def _device_time(name: str, value: float, maximum: float) -> float:
    """``value`` as a float in [0, maximum], else a ValueError naming it: the ledger takes no
    negative (it would free budget), NaN or infinite (the totals would be NaN) device time."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be a finite number in [0, {maximum:g}] of device-seconds, got {value!r}")
    return float(value)


@transaction.atomic
def usage_record(*, run, step: int, device_seconds: float, uniform_seconds: float) -> UsageEntry:
    """The step's entry in the ledger (a replayed step replaces it)."""
    device_seconds = _device_time("device_seconds", device_seconds, USAGE_MAX_SECONDS)
    uniform_seconds = _device_time("uniform_seconds", uniform_seconds, USAGE_MAX_UNIFORM_SECONDS)
    entry, _ = UsageEntry.objects.update_or_create(
        run=run, kind=UsageKind.STEP, step=step,
        defaults={"team_id": run.team_id, "user_id": run.created_by_id, "device_seconds": device_seconds,
                  "uniform_device_seconds": uniform_seconds},
    )
    notification_budget_check(team_id=run.team_id)
    return entry


@transaction.atomic
def usage_add_warmup(*, run, device_seconds: float) -> UsageEntry:
    """Add the device-seconds a warm-up heartbeat reports to the run's one warm-up entry.
    Uniform GRPO would warm up alike, so its figure grows by the same amount."""
    device_seconds = _device_time("device_seconds", device_seconds, USAGE_MAX_SECONDS)
    entry, created = UsageEntry.objects.select_for_update().get_or_create(
        run=run, kind=UsageKind.WARMUP, step=0,
        defaults={"team_id": run.team_id, "user_id": run.created_by_id, "device_seconds": device_seconds,
                  "uniform_device_seconds": device_seconds},
    )
    if not created:
        if entry.device_seconds + device_seconds > USAGE_MAX_SECONDS:
            raise ValueError(f"the warm-up of run {run.pk} would exceed {USAGE_MAX_SECONDS:g} device-seconds")
        UsageEntry.objects.filter(pk=entry.pk).update(device_seconds=F("device_seconds") + device_seconds,
                                                      uniform_device_seconds=F("uniform_device_seconds")
                                                      + device_seconds)
        entry.refresh_from_db()
    notification_budget_check(team_id=run.team_id)
    return entry
