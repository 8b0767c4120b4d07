"""Reads for budgets: where a team stands this period, and who and what spent it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.models import UsageEntry
from controlplane.budgets.services import budget_status

WARN_SHARE = 0.8  # the budget warns at 80% used and is exhausted at 100%
# The linear forecast divides by the time elapsed; at least this much, so the first
# minutes of a period do not extrapolate one step to an absurd figure.
MIN_ELAPSED = dt.timedelta(hours=1)


@dataclass(frozen=True)
class BudgetOverview:
    team: str
    limit_device_hours: float | None  # None: no budget for the current period
    used_device_hours: float
    remaining_device_hours: float | None
    period_start: dt.date | None
    period_end: dt.date | None  # exclusive
    forecast_device_hours: float | None  # at period end, linear from usage so far
    uniform_device_hours: float  # what uniform GRPO would have used for the same steps
    saved_device_hours: float  # uniform_device_hours - used_device_hours
    warning: bool  # used >= 80% of the limit
    exhausted: bool  # used >= the limit
    by_run: list[dict[str, Any]] = field(default_factory=list)
    by_user: list[dict[str, Any]] = field(default_factory=list)


def _period_usage(team: Team, start: dt.date | None, end: dt.date | None) -> QuerySet[UsageEntry]:
    """The team's usage entries in [start, end), or all of them without a period (as
    budget_status counts them)."""
    usage = UsageEntry.objects.filter(team=team)
    if start is not None and end is not None:
        usage = usage.filter(recorded_at__gte=timezone.make_aware(dt.datetime.combine(start, dt.time())),
                             recorded_at__lt=timezone.make_aware(dt.datetime.combine(end, dt.time())))
    return usage


def _hours(seconds: float | None) -> float:
    return float(seconds or 0.0) / 3600.0


def budget_overview(team: Team, at: dt.datetime | None = None) -> BudgetOverview:
    now = at or timezone.now()
    status = budget_status(team, at=now)
    usage = _period_usage(team, status.period_start, status.period_end)
    totals = usage.aggregate(used=Sum("device_seconds"), uniform=Sum("uniform_device_seconds"))
    used, uniform = _hours(totals["used"]), _hours(totals["uniform"])

    forecast = None
    if status.period_start is not None and status.period_end is not None:
        start = timezone.make_aware(dt.datetime.combine(status.period_start, dt.time()))
        end = timezone.make_aware(dt.datetime.combine(status.period_end, dt.time()))
        elapsed = max(min(now, end) - start, MIN_ELAPSED)
        forecast = used * max((end - start) / elapsed, 1.0)

    by_run = [
        {"run": row["run_id"], "name": row["run__name"], "user": row["user__username"],
         "device_hours": _hours(row["used"]), "uniform_device_hours": _hours(row["uniform"]),
         "saved_device_hours": _hours(row["uniform"]) - _hours(row["used"])}
        for row in usage.values("run_id", "run__name", "user__username")
        .annotate(used=Sum("device_seconds"), uniform=Sum("uniform_device_seconds")).order_by("-used", "run_id")
    ]
    by_user = [
        {"user": row["user__username"], "device_hours": _hours(row["used"]),
         "uniform_device_hours": _hours(row["uniform"]),
         "saved_device_hours": _hours(row["uniform"]) - _hours(row["used"])}
        for row in usage.values("user__username")
        .annotate(used=Sum("device_seconds"), uniform=Sum("uniform_device_seconds")).order_by("-used")
    ]
    limit = status.limit_device_hours
    return BudgetOverview(
        team=team.slug,
        limit_device_hours=limit,
        used_device_hours=used,
        remaining_device_hours=None if limit is None else max(limit - used, 0.0),
        period_start=status.period_start,
        period_end=status.period_end,
        forecast_device_hours=forecast,
        uniform_device_hours=uniform,
        saved_device_hours=uniform - used,
        warning=limit is not None and used >= WARN_SHARE * limit,
        exhausted=limit is not None and used >= limit,
        by_run=by_run,
        by_user=by_user,
    )
