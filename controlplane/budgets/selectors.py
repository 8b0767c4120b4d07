"""Reads for budgets: where a team stands this period, what a run is forecast to use and what
active runs still need, and who and what spent it. Every query on budgets and the usage
ledger is here; writes are in ``budgets.services``."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db.models import FloatField, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.models import Budget, UsageDay, UsageEntry
from controlplane.datasets.models import Dataset, Prompt
from controlplane.datasets.selectors import datasets_prompt_shape
from controlplane.runs.models import ACTIVE, Run
from controlplane.telemetry.models import StepSummary
from workers.engines.config import RunConfig
from workers.engines.cost import run_cost
from workers.engines.local import warm_start

# Device-seconds per rollout assumed before a team has any history: the tiny model on
# 2 CPU cores measured about 0.002 s per rollout for a whole step (bench/engine_throughput.py).
DEFAULT_SECONDS_PER_ROLLOUT = 0.002
# The same for a kind of run that spends far more: verl on this machine's CPU (the tiny Llama,
# B=2, N=4, 4 new tokens) measured 2.4-3.4 device-seconds per 8-rollout step, Ray's overhead mostly.
DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND = {("verl", "cpu"): 0.35}
# The configs those defaults were measured with, so a config unlike them is priced by the
# ratio of its cost to theirs (workers/engines/cost.py); prompts of the add tasks, ~12 characters.
DEFAULT_MEASURED_CONFIG = {"engine": "local", "model": "tiny", "model_layers": 3, "model_dim": 96, "max_new_tokens": 8}
DEFAULT_MEASURED_CONFIG_BY_KIND = {("verl", "cpu"): {"engine": "verl", "device": "cpu", "model": "tiny",
                                                    "max_new_tokens": 4}}
DEFAULT_PROMPT_CHARS = 12.0
MEASURED_RUNS = 200  # the team's most recent runs with steps that set its rate
FORECAST_MAX_DEVICE_HOURS = 1e12  # a forecast that overflows: refused by any budget, stored as a number


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


WARN_SHARE = 0.8  # the budget warns at 80% used and is exhausted at 100%
# The linear forecast divides by the time elapsed; at least this much, so the first
# minutes of a period do not extrapolate one step to an absurd figure.
MIN_ELAPSED = dt.timedelta(hours=1)


def budget_current(team: Team | int, at: dt.datetime | None = None) -> Budget | None:
    today = (at or timezone.now()).date()
    team_id = team if isinstance(team, int) else team.id
    return Budget.objects.filter(team_id=team_id, period_start__lte=today, period_end__gt=today).first()


def budget_status(team: Team | int, at: dt.datetime | None = None) -> BudgetStatus:
    budget = budget_current(team, at)
    team_id = team if isinstance(team, int) else team.id
    # The ledger summed per run and day (UsageDay): the period's days, not its entries (one a step).
    usage = UsageDay.objects.filter(team_id=team_id)
    if budget is not None:
        usage = usage.filter(day__gte=budget.period_start, day__lt=budget.period_end)
    seconds = usage.aggregate(total=Sum("device_seconds"))["total"] or 0.0
    return BudgetStatus(
        limit_device_hours=budget.limit_device_hours if budget else None,
        used_device_hours=seconds / 3600.0,
        period_start=budget.period_start if budget else None,
        period_end=budget.period_end if budget else None,
    )


def budget_now(team: Team | int) -> BudgetStatus | None:
    """The team's budget status this period, or None when it has no budget (and no sum is made)."""
    return budget_status(team) if budget_current(team) is not None else None


def _team_steps(team: Team | int, *, engine: str | None, device: str | None) -> QuerySet[StepSummary]:
    """The team's stored steps, of runs on ``engine`` and ``device`` when given: the history a rate is measured on."""
    team_id = team if isinstance(team, int) else team.id
    steps = StepSummary.objects.filter(run__team_id=team_id)
    if engine is not None:
        steps = steps.filter(run__engine=engine)
    if device is not None:
        steps = steps.filter(run__config__device=device)
    return steps


def seconds_per_rollout(team: Team | int, *, engine: str | None = None, device: str | None = None) -> float:
    """The team's measured device-seconds per generated rollout, from its past steps of runs on
    the same engine and device when given: a verl run on this machine's CPU spends about a
    hundred times more per rollout than the local engine's tiny model, so one rate for every
    kind of run would misjudge the next run of the other kind."""

    steps = _team_steps(team, engine=engine, device=device)
    totals = steps.aggregate(seconds=Sum("device_seconds"), rollouts=Sum("rollouts_generated"))
    if totals["rollouts"]:
        return float(totals["seconds"]) / float(totals["rollouts"])
    return DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND.get((engine, device), DEFAULT_SECONDS_PER_ROLLOUT)


def seconds_per_unit(team: Team | int, *, engine: str | None = None, device: str | None = None) -> float:
    """The team's measured device-seconds per compute unit (workers/engines/cost.py) on the
    engine and device: its steps' device-seconds over what their rollouts cost under their own
    runs' configs (model size, prompt and response length). Before any history, the default
    rate per rollout over the cost of a rollout of the config it was measured with."""
    steps = _team_steps(team, engine=engine, device=device)
    per_run = list(steps.values("run_id").annotate(seconds=Sum("device_seconds"), rollouts=Sum("rollouts_generated"))
                   .order_by("-run_id")[:MEASURED_RUNS])
    runs = {r["id"]: r for r in Run.objects.filter(pk__in=[p["run_id"] for p in per_run])
            .values("id", "config", "dataset_id")}
    shapes = datasets_prompt_shape({r["dataset_id"] for r in runs.values()})
    seconds = units = 0.0
    for row in per_run:
        run = runs[row["run_id"]]
        chars, held_out = shapes.get(run["dataset_id"], (DEFAULT_PROMPT_CHARS, 0))
        spent, rollouts = float(row["seconds"] or 0.0), float(row["rollouts"] or 0.0)
        per_rollout = run_cost(run["config"] or {}, prompt_chars=chars or DEFAULT_PROMPT_CHARS,
                               eval_prompts_available=held_out).per_rollout
        # A record the ledger should not have taken, or a stored config from before the ranges
        # whose cost overflows, prices nothing (it could otherwise drive the rate to 0).
        if not (math.isfinite(spent) and spent >= 0 and rollouts > 0 and math.isfinite(per_rollout * rollouts)
                and per_rollout > 0):
            continue
        seconds += spent
        units += rollouts * per_rollout
    if units > 0:
        return seconds / units
    measured = DEFAULT_MEASURED_CONFIG_BY_KIND.get((engine, device), DEFAULT_MEASURED_CONFIG)
    rate = DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND.get((engine, device), DEFAULT_SECONDS_PER_ROLLOUT)
    return rate / run_cost(measured, prompt_chars=DEFAULT_PROMPT_CHARS, eval_prompts_available=None).per_rollout


def forecast_device_hours(*, team: Team | int, config: RunConfig | Mapping[str, Any] | None = None,
                          dataset: Dataset | None = None, batch_size: int = 0, group_size: int = 0, steps: int = 0,
                          engine: str | None = None, device: str | None = None) -> float:
    """Device-hours a run is forecast to use (selection only saves).

    With ``config`` (what ``run_create`` checks): the whole config priced, model size, prompt
    and response length, evaluation samples and warm-up (workers/engines/cost.py), at the
    team's measured rate per unit on its engine and device; the dataset gives the prompts'
    mean length and the held-out count. Without one: uniform-GRPO rollouts only, B x N x steps
    at the team's rate per rollout (the launch form's preview from B, N and steps alone)."""
    if config is None:
        rate = seconds_per_rollout(team, engine=engine, device=device)
        return rate * batch_size * group_size * steps / 3600.0
    defaults = {f["name"]: f["default"] for f in RunConfig.describe()}
    values = config.to_dict() if isinstance(config, RunConfig) else {**defaults, **config}
    # Without a dataset the engine evaluates on the built-in task's held-out split; a dataset
    # without held-out prompts is not evaluated.
    chars, held_out = DEFAULT_PROMPT_CHARS, int(values.get("task_test_size", 500) or 0)
    if dataset is not None:
        chars, held_out = datasets_prompt_shape([dataset.pk]).get(dataset.pk, (DEFAULT_PROMPT_CHARS, 0))
    cost = run_cost(values, prompt_chars=chars or DEFAULT_PROMPT_CHARS, eval_prompts_available=held_out)
    total = cost.total
    if cost.warmup and _warmup_loaded(team, dataset, values):
        total -= cost.warmup  # the workers load the warm-up (shipped or cached): no supervised steps to pay for
    rate = seconds_per_unit(team, engine=values.get("engine"), device=values.get("device"))
    forecast = rate * total / 3600.0
    return forecast if math.isfinite(forecast) else FORECAST_MAX_DEVICE_HOURS


# What the tiny model's warm-up depends on besides the data (the engine's cache key).
WARMUP_FIELDS = ("model", "model_layers", "model_dim", "model_heads", "max_new_tokens", "warmup_steps", "warmup_lr",
                 "warmup_noise_steps", "warmup_noise", "warmup_seed")


def _warmup_loaded(team: Team | int, dataset: Dataset | None, values: Mapping[str, Any]) -> bool:
    """Whether the workers load this run's warm-up instead of training it: it ships with the
    code (the built-in warm start, workers/engines/local/warm_start.py), or it is in their cache."""
    if dataset is not None:
        family = _builtin_family(dataset)
    else:  # the engine draws the built-in task unless the config names a dataset file
        family = "" if values.get("dataset") else str(values.get("task") or "")
    if family and warm_start.shipped_for(values, family):
        return True
    return dataset is not None and _warmed_up_before(team, dataset, values)


def _builtin_family(dataset: Dataset) -> str:
    """The built-in family a dataset's prompts come from, as the engine tells it (its first
    training prompt's data source, "edgeplane/<family>"); "" for a user's own prompts."""
    source = (Prompt.objects.filter(dataset=dataset).exclude(split="test").order_by("id")
              .values_list("data_source", flat=True).first()) or ""
    return source.removeprefix("edgeplane/") if source.startswith("edgeplane/") else ""


def _warmed_up_before(team: Team | int, dataset: Dataset, values: Mapping[str, Any]) -> bool:
    """Whether a run of the team on this dataset with the same warm-up already trained a step:
    its warm-up is then in the workers' cache, and a new run loads it instead of paying again."""
    team_id = team if isinstance(team, int) else team.id
    measured = StepSummary.objects.filter(run__team_id=team_id, run__dataset=dataset, run__engine="local")
    run_ids = set(measured.values_list("run_id", flat=True).distinct()[:MEASURED_RUNS])
    wanted = [values.get(name) for name in WARMUP_FIELDS]
    return any([config.get(name) for name in WARMUP_FIELDS] == wanted
               for config in Run.objects.filter(pk__in=run_ids).values_list("config", flat=True))


def budget_committed_device_hours(team: Team) -> float:
    """What queued and running runs are still forecast to use: already promised."""
    runs = Run.objects.filter(team=team, status__in=ACTIVE).annotate(
        used_seconds=Coalesce(Sum("usage__device_seconds"), Value(0.0), output_field=FloatField()))
    return sum(max(run.forecast_device_hours - run.used_seconds / 3600.0, 0.0) for run in runs)


def budget_remaining_for_launch(team: Team) -> float | None:
    """Device-hours a new run may be forecast to use: the period's remainder less what active
    runs still need; None without a budget. ``run_create`` refuses a run that needs more, and
    the launch form shows the same figure."""
    remaining = budget_status(team).remaining_device_hours
    if remaining is None:
        return None
    return max(remaining - budget_committed_device_hours(team), 0.0)


def budget_usage_by_hour(team: Team, start: dt.date | None,
                         end: dt.date | None) -> list[tuple[dt.datetime, float, float]]:
    """The team's device-seconds and uniform device-seconds per hour, in time order."""
    rows = (_period_usage(team, start, end).annotate(hour=TruncHour("recorded_at")).values("hour")
            .annotate(used=Sum("device_seconds"), uniform=Sum("uniform_device_seconds")).order_by("hour"))
    return [(r["hour"], float(r["used"] or 0.0), float(r["uniform"] or 0.0)) for r in rows]


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


def budgets_for_team(team: Team, at: dt.datetime | None = None, past: int = 3) -> list[dict[str, Any]]:
    """The team's budgets the team page lists: current and upcoming ones (which its admins may
    change or remove), then the last ``past`` ones that ended (kept as the record), newest first.
    Each: the budget, ``state`` ("current", "upcoming" or "past"), the days it covers and the
    last of them (``period_end`` is exclusive)."""
    today = (at or timezone.now()).date()
    budgets = Budget.objects.filter(team=team)
    live = list(budgets.filter(period_end__gt=today).order_by("period_start"))
    ended = list(budgets.filter(period_end__lte=today).order_by("-period_start")[:past])
    return [{"budget": b, "days": (b.period_end - b.period_start).days, "last_day": b.period_end - dt.timedelta(days=1),
             "state": "past" if b.period_end <= today else "current" if b.period_start <= today else "upcoming"}
            for b in live + ended]
