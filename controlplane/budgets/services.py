"""Budget writes: budgets set, and the usage ledger fed by every step. Reads (where a team
stands, forecasts, what active runs still need) are in ``budgets.selectors``."""

from __future__ import annotations

import datetime as dt
import logging
import math

from django.db import connection, transaction
from django.db.models import F, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.models import (
    USAGE_MAX_SECONDS,
    USAGE_MAX_UNIFORM_SECONDS,
    Budget,
    UsageDay,
    UsageEntry,
    UsageKind,
)
from controlplane.budgets.selectors import BudgetStatus, budget_now
from controlplane.notifications.services import notification_budget_check

log = logging.getLogger(__name__)


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


# -- budgets per period, as a team's admin sets them (the dashboard's team page) --------------------------------

# The periods a budget can cover, aligned to the calendar so that two budgets of the same kind never
# overlap: a day, a week from Monday, a month from its 1st (end exclusive, as Budget.period_end).
BUDGET_PERIODS = {"day": "a day", "week": "a week (Monday to Sunday)", "month": "a calendar month"}
# The largest limit taken: ten thousand devices busy for a whole 41-day period. A bigger figure is
# a typo (an extra zero), not a budget.
BUDGET_MAX_DEVICE_HOURS = 1e7
# The smallest: the budget page shows device-hours to four decimals.
BUDGET_MIN_DEVICE_HOURS = 1e-4


class BudgetInvalid(ValueError):
    """A budget refused; ``field`` names the form field it is about, the message says what to do."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def budget_period_bounds(period: str, day: dt.date) -> tuple[dt.date, dt.date]:
    """The [start, end) of the ``period`` ("day", "week", "month") that holds ``day``."""
    if period not in BUDGET_PERIODS:
        raise BudgetInvalid(f"unknown period {period!r}: choose one of {', '.join(BUDGET_PERIODS)}", field="period")
    try:
        if period == "day":
            return day, day + dt.timedelta(days=1)
        if period == "week":
            start = day - dt.timedelta(days=day.weekday())
            return start, start + dt.timedelta(days=7)
        start = day.replace(day=1)
        return start, (start + dt.timedelta(days=32)).replace(day=1)
    except OverflowError:  # a period reaching past the last day of year 9999
        raise BudgetInvalid(f"{day:%Y-%m-%d} is at the end of the calendar: choose a nearer day", field="day") from None


def budget_limit_checked(value) -> float:
    """A budget limit as the dashboard takes it: a finite number of device-hours from
    BUDGET_MIN_DEVICE_HOURS to BUDGET_MAX_DEVICE_HOURS, else BudgetInvalid saying why."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BudgetInvalid(f"the limit must be a number of device-hours, got {value!r}", field="limit")
    if value <= 0:
        raise BudgetInvalid("the limit must be more than 0 device-hours: a budget of 0 refuses every launch and stops "
                            "running runs. To have no limit, remove the budget instead.", field="limit")
    if value < BUDGET_MIN_DEVICE_HOURS:
        raise BudgetInvalid(f"{value:g} device-hours is below the smallest limit taken ({BUDGET_MIN_DEVICE_HOURS:g}, "
                            f"{BUDGET_MIN_DEVICE_HOURS * 3600:g} s of device time): the budget page would show it as 0",
                            field="limit")
    if value > BUDGET_MAX_DEVICE_HOURS:
        raise BudgetInvalid(f"{value:g} device-hours is over the largest limit taken ({BUDGET_MAX_DEVICE_HOURS:,.0f}): "
                            "check for an extra zero", field="limit")
    return float(value)


def _refuse_past(budget_end: dt.date, today: dt.date, doing: str) -> None:
    if budget_end <= today:
        raise BudgetInvalid(f"cannot {doing}: its period ended on {budget_end - dt.timedelta(days=1):%Y-%m-%d}; a past "
                            "period's budget stays as the record of what the team was given", field="period")


def _lock_team_budgets(team: Team) -> None:
    # Two admins setting overlapping budgets at once must not both pass the overlap check.
    Team.objects.select_for_update().filter(pk=team.pk).exists()


@transaction.atomic
def budget_set_period(*, team: Team, period: str, day: dt.date, limit_device_hours: float, by=None,
                      today: dt.date | None = None) -> Budget:
    """The team's budget for the ``period`` holding ``day``: created, or its limit changed when the
    team already has a budget for exactly that period. Refused: a limit out of range
    (budget_limit_checked), a period already over, or one overlapping another budget of the team
    (which of two would count is ambiguous: change or remove that one instead)."""
    limit = budget_limit_checked(limit_device_hours)
    start, end = budget_period_bounds(period, day)
    _refuse_past(end, today or timezone.now().date(), "set a budget for that period")
    _lock_team_budgets(team)
    overlapping = Budget.objects.filter(team=team, period_start__lt=end, period_end__gt=start)
    other = overlapping.exclude(period_start=start, period_end=end).order_by("period_start").first()
    if other is not None:
        raise BudgetInvalid(
            f"{start:%Y-%m-%d} to {end:%Y-%m-%d} overlaps the team's budget of {other.period_start:%Y-%m-%d} to "
            f"{other.period_end:%Y-%m-%d} ({other.limit_device_hours:g} device-hours): change that budget's limit, "
            "or remove it first", field="period")
    budget, created = Budget.objects.update_or_create(team=team, period_start=start, period_end=end,
                                                      defaults={"limit_device_hours": limit})
    log.info("budget %s: team=%s period=%s..%s limit=%g device-hours by=%s", "set" if created else "changed",
             team.slug, start, end, limit, getattr(by, "username", None))
    return budget


@transaction.atomic
def budget_change_limit(*, budget: Budget, limit_device_hours: float, by=None, today: dt.date | None = None) -> Budget:
    """A new limit for a current or future budget, its period kept (one set in Django admin too)."""
    limit = budget_limit_checked(limit_device_hours)
    _lock_team_budgets(budget.team)
    budget = Budget.objects.select_related("team").get(pk=budget.pk)
    _refuse_past(budget.period_end, today or timezone.now().date(), "change that budget")
    old = budget.limit_device_hours
    budget.limit_device_hours = limit
    budget.save(update_fields=["limit_device_hours"])
    log.info("budget changed: team=%s period=%s..%s limit=%g->%g device-hours by=%s", budget.team.slug,
             budget.period_start, budget.period_end, old, limit, getattr(by, "username", None))
    return budget


@transaction.atomic
def budget_remove(*, budget: Budget, by=None, today: dt.date | None = None) -> None:
    """Remove a current or future budget: its period then has no limit. The usage ledger is untouched."""
    _refuse_past(budget.period_end, today or timezone.now().date(), "remove that budget")
    budget.delete()
    log.info("budget removed: team=%s period=%s..%s limit=%g device-hours by=%s", budget.team.slug,
             budget.period_start, budget.period_end, budget.limit_device_hours, getattr(by, "username", None))


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


def usage_record(*, run, step: int, device_seconds: float, uniform_seconds: float) -> BudgetStatus | None:
    """The step's entry in the ledger (a replayed step replaces it): one INSERT ... ON CONFLICT.
    Answers where the team's budget stands after it (None: no budget this period), read once
    for the budget notifications and the step's control answer alike."""
    device_seconds = _device_time("device_seconds", device_seconds, USAGE_MAX_SECONDS)
    uniform_seconds = _device_time("uniform_seconds", uniform_seconds, USAGE_MAX_UNIFORM_SECONDS)
    with transaction.atomic(savepoint=False):  # inside the step's transaction: no savepoint round trips
        return _usage_upsert(run, step, device_seconds, uniform_seconds)


def _usage_upsert(run, step: int, device_seconds: float, uniform_seconds: float) -> BudgetStatus | None:
    # What a replay replaces: its seconds leave the day they were first booked on (recorded_at
    # stays the first write's). The run is locked by the caller, so nothing writes it meanwhile.
    before = (UsageEntry.objects.filter(run=run, kind=UsageKind.STEP, step=step)
              .values_list("device_seconds", "recorded_at").first())
    [entry] = UsageEntry.objects.bulk_create(
        [UsageEntry(run=run, kind=UsageKind.STEP, step=step, team_id=run.team_id, user_id=run.created_by_id,
                    device_seconds=device_seconds, uniform_device_seconds=uniform_seconds)],
        update_conflicts=True, unique_fields=["run", "kind", "step"],
        update_fields=["team_id", "user_id", "device_seconds", "uniform_device_seconds"],  # recorded_at: the first
    )
    booked, recorded_at = before if before is not None else (0.0, entry.recorded_at)
    _usage_day_add(run, recorded_at, device_seconds - booked)
    return _budget_after_booking(run.team_id)


def _budget_after_booking(team_id: int) -> BudgetStatus | None:
    """The team's budget status after usage was booked (None: no budget this period, so no sum),
    with its 80% and 100% notifications."""
    status = budget_now(team_id)
    if status is not None:
        notification_budget_check(team_id=team_id, status=status)
    return status


def _usage_day_add(run, recorded_at: dt.datetime, seconds: float) -> None:
    """Add ``seconds`` (a replay's difference may be negative) to the run's UsageDay of the day
    ``recorded_at`` falls on, in the ledger write's transaction: one upsert."""
    if not seconds:
        return
    table = UsageDay._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (team_id, run_id, day, device_seconds) VALUES (%s, %s, %s, %s) "
                       f"ON CONFLICT (run_id, day) DO UPDATE SET device_seconds = "
                       f"{table}.device_seconds + EXCLUDED.device_seconds",
                       [run.team_id, run.pk, timezone.localdate(recorded_at), seconds])


def usage_days_rebuild(*, team_id: int | None = None, entry_model: type = UsageEntry,
                       day_model: type = UsageDay) -> int:
    """Remake UsageDay from the ledger (one team's, or every team's): after a change to the ledger
    made around ``budgets.services`` (a fix in SQL), and by the migration that made the table
    (which passes its historical models). Steps booking meanwhile wait for it on Postgres (the
    table is locked to writes until it commits) and then add to the rebuilt days. Returns the
    number of days written."""
    entries, days = entry_model.objects.all(), day_model.objects.all()
    if team_id is not None:
        entries, days = entries.filter(team_id=team_id), days.filter(team_id=team_id)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {day_model._meta.db_table} IN EXCLUSIVE MODE")
        days.delete()
        # TruncDate takes the current time zone: the day timezone.localdate gives _usage_day_add
        sums = (entries.annotate(day=TruncDate("recorded_at")).values("run_id", "team_id", "day")
                .annotate(seconds=Sum("device_seconds")).order_by())
        made = day_model.objects.bulk_create(
            [day_model(run_id=row["run_id"], team_id=row["team_id"], day=row["day"], device_seconds=row["seconds"])
             for row in sums], batch_size=5_000)
    return len(made)


@transaction.atomic
def usage_add_warmup(*, run, device_seconds: float) -> BudgetStatus | None:
    """Add the device-seconds a warm-up heartbeat reports to the run's one warm-up entry.
    Uniform GRPO would warm up alike, so its figure grows by the same amount. Answers as
    ``usage_record`` does: the team's budget status after it."""
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
    _usage_day_add(run, entry.recorded_at, device_seconds)  # the entry's day: recorded_at is its first write
    return _budget_after_booking(run.team_id)
