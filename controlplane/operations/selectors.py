"""Reads for the metrics: one aggregate query each, at scrape time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Q, Sum
from django.utils import timezone

from controlplane.budgets.models import Budget, UsageDay
from controlplane.runs.models import Run, RunStatus


def runs_count_by_status() -> dict[str, int]:
    """Runs per status, every status present (0 when none), so a series never vanishes."""
    counts = dict.fromkeys(RunStatus.values, 0)
    for row in Run.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


@dataclass(frozen=True)
class TeamBudgetUse:
    team: str  # the team's slug
    used_device_hours: float
    limit_device_hours: float | None  # None: no budget for the current period


def teams_budget_use(at: dt.datetime | None = None) -> list[TeamBudgetUse]:
    """Device-hours each team used as budgets.selectors.budget_status counts them (within the
    current budget's period; all of the team's usage when it has no current budget), and its
    current budget. Two queries: the current budgets, then one grouped sum of the ledger's days
    (UsageDay)."""
    now = at or timezone.now()
    today = now.date()
    budgets: dict[int, dict] = {}
    for b in (Budget.objects.filter(period_start__lte=today, period_end__gt=today).order_by("team_id", "id")
              .values("team_id", "team__slug", "period_start", "period_end", "limit_device_hours")):
        budgets.setdefault(b["team_id"], b)  # as budget_current: the first when periods overlap
    in_period = ~Q(team_id__in=list(budgets))  # no current budget: all of the team's usage counts
    for team_id, b in budgets.items():
        in_period |= Q(team_id=team_id, day__gte=b["period_start"], day__lt=b["period_end"])
    used = {row["team__slug"]: float(row["seconds"] or 0.0) / 3600.0
            for row in UsageDay.objects.filter(in_period).order_by().values("team__slug")
            .annotate(seconds=Sum("device_seconds"))}
    out = {b["team__slug"]: TeamBudgetUse(b["team__slug"], used.get(b["team__slug"], 0.0), b["limit_device_hours"])
           for b in budgets.values()}
    for slug, hours in used.items():
        out.setdefault(slug, TeamBudgetUse(slug, hours, None))
    return [out[slug] for slug in sorted(out)]


# -- the worker's log lines of a run (run_logs.py keeps them) ---------------------------------------------

RUN_LOG_PAGE = 500  # lines per cursor read; the answer says has_more when more follow


@dataclass(frozen=True)
class RunLogPage:
    lines: list[dict]  # id, seq, attempt, at, level (a number), logger, message; in the order logged
    has_more: bool
    kept: int  # lines the run's log holds now (any level)
    dropped: int  # lines logged but no longer held: beyond the cap, or lost while the database was away


def run_log_page(run: Run, *, after: int = 0, min_level: int = 0, limit: int = RUN_LOG_PAGE,
                 count: bool = True) -> RunLogPage:
    """The run's lines after the cursor (a line id) at ``min_level`` or above, oldest first; a read on the
    (run, id) index whatever the log's length."""
    from django.db.models import Max

    from controlplane.operations.models import RunLogLine

    rows = list(RunLogLine.objects.filter(run=run, id__gt=after, level__gte=min_level).order_by("id").values(
        "id", "seq", "attempt", "at", "level", "logger", "message")[:limit + 1])
    totals = (RunLogLine.objects.filter(run=run).aggregate(kept=Count("id"), newest=Max("seq")) if count
              else {"kept": 0, "newest": 0})
    kept = totals["kept"] or 0
    return RunLogPage(lines=rows[:limit], has_more=len(rows) > limit, kept=kept,
                      dropped=max((totals["newest"] or 0) - kept, 0))


def run_log_lines(run: Run, *, min_level: int = 0, chunk: int = 2000):
    """Every line the run's log holds at ``min_level`` or above, oldest first, read a chunk at a time
    (a download streams them)."""
    after = 0
    while True:
        page = run_log_page(run, after=after, min_level=min_level, limit=chunk, count=False)
        yield from page.lines
        if not page.has_more:
            return
        after = page.lines[-1]["id"]
