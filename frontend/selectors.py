"""Reads the dashboard needs beyond controlplane's selectors, shaped as plain rows for
``frontend.charts``. Every function takes a ``Run`` (or ``Team``) the caller may see:
visibility is decided once, by ``controlplane.runs.selectors.run_for_user_or_none``.

Cursor reads (``after`` = the last step the browser has) fetch at most ``STEP_PAGE``
steps at a time. On Postgres decisions and observations are partitioned by run
(``controlplane.telemetry.partitions``): a read of one run scans that run's partition only,
through its (prompt_key, step) and (step, method, action) indexes (observations: (prompt_key,
step) and a BRIN on step), so a poll costs the same at step 10 and step 10,000, whatever the
other runs hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from django.db import connection
from django.db.models import Avg, Count, F, FloatField, IntegerField, OuterRef, Subquery, Sum

from controlplane.accounts.models import Team
from controlplane.budgets.selectors import (
    budget_remaining_for_launch,
    budget_usage_by_hour,
    forecast_device_hours,
)
from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run
from controlplane.runs.selectors import run_totals, runs_for_user, runs_totals
from controlplane.telemetry.archive import DECISIONS, OBSERVATIONS, archive_rows, archive_table
from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    SelectionDecision,
    StepDecisionCount,
    StepSummary,
)
from workers.engines.config import ConfigError, RunConfig

# Steps per cursor read; the answer says has_more when there are more. Step summaries are one
# small row a step; decision counts and heat-map cells aggregate B rows or more a step.
STEP_PAGE = 500
AGGREGATE_STEP_PAGE = 100
EDGE_POINTS = 4000  # most prompts drawn on the learning-edge map at once
RECENT_DECISIONS = 20
AUDIT_PAGE = 100

STEP_FIELDS = ("step", "rollouts_generated", "rollouts_uniform", "rollouts_effective", "rollouts_trained",
               "groups_generated", "groups_all_correct", "groups_all_wrong", "rollout_savings",
               "effective_share_of_generated", "device_seconds", "uniform_device_seconds", "reward_mean",
               "rollouts_dynamic_sampling", "backward_tokens", "backward_tokens_mixed", "seconds", "metrics")


def last_step(run: Run) -> int:
    """The newest recorded step, -1 before the first."""
    row = StepSummary.objects.filter(run=run).order_by("-step").values_list("step", flat=True).first()
    return -1 if row is None else int(row)


def newest_step_version(run: Run) -> tuple[int, int]:
    """(the newest step, its summary row's id): the id changes when that step is written again
    (a retried step is deleted and re-inserted), so a cache keyed by it never serves old rows."""
    row = StepSummary.objects.filter(run=run).order_by("-step").values_list("step", "id").first()
    return (-1, 0) if row is None else (int(row[0]), int(row[1]))


def step_rows(run: Run, after: int, limit: int | None = None, upto: int | None = None) -> list[dict[str, Any]]:
    """Step summaries after ``after`` (through ``upto`` when given), at most ``limit`` of them."""
    limit = STEP_PAGE if limit is None else limit
    rows = StepSummary.objects.filter(run=run, step__gt=after)
    if upto is not None:
        rows = rows.filter(step__lte=upto)
    return list(rows.order_by("step").values(*STEP_FIELDS)[:limit])


def evaluation_rows(run: Run, after: int, limit: int | None = None) -> list[dict[str, Any]]:
    limit = STEP_PAGE if limit is None else limit
    return list(Evaluation.objects.filter(run=run, step__gt=after).order_by("step").values(
        "step", "k", "pass_at_1", "pass_at_k", "rollouts_generated_total", "device_seconds_total")[:limit])


def page_end(run: Run, after: int, limit: int | None = None) -> int:
    """The last step of the page that starts after ``after``: the newest step, at most
    ``limit`` steps on. Reads one index entry."""
    limit = STEP_PAGE if limit is None else limit
    steps = list(StepSummary.objects.filter(run=run, step__gt=after).order_by("step")
                 .values_list("step", flat=True)[limit - 1:limit])
    return int(steps[0]) if steps else last_step(run)


def action_count_rows(run: Run, after: int, upto: int) -> list[tuple[int, str, str, int]]:
    """Decisions per (step, method, action) for after < step <= upto, from the steps' counts
    (``StepDecisionCount``: a few rows a step, kept when the run's decisions are archived)."""
    rows = (StepDecisionCount.objects.filter(run=run, step__gt=after, step__lte=upto)
            .values_list("step", "method", "action").annotate(n=Sum("decisions")).order_by("step"))
    return [(s, m, a, int(n)) for s, m, a, n in rows]


def hora_rows(run: Run, after: int, upto: int, steps_per_column: int = 1) -> list[tuple[int, int, int, float]]:
    """HORA allocations per (step, probe successes): (step, successes, prompts, extra rollouts),
    from the steps' decision counts. With ``steps_per_column`` > 1 the steps are binned
    (step // width * width: the column's first step), prompts and extra rollouts summed over the
    bin, so means stay exact."""
    counts = StepDecisionCount.objects.filter(run=run, method="hora", action="allocated", step__gt=after,
                                              step__lte=upto)
    w = max(1, int(steps_per_column))
    column = F("step") if w == 1 else F("step") / w * w  # integer division in SQL
    rows = (counts.annotate(column=column).values_list("column", "successes")
            .annotate(n=Sum("decisions"), extra=Sum("extra")).order_by("column"))
    return [(int(s), int(h or 0), int(n), float(e or 0.0)) for s, h, n, e in rows]


# An archived run (``run.telemetry_archived_at``) has its observations in a Parquet file sorted by
# prompt key (``controlplane.telemetry.archive``): the charts below read the columns they need of
# the rows of a step (or a window of steps) from it and aggregate them with Arrow, answering what
# the database answered. A step's rows are spread over the whole file, so such a read scans it.


def _archived_observations(run: Run, columns: tuple[str, ...], **filters: Any) -> pa.Table:
    return archive_table(run.telemetry_archive_path, OBSERVATIONS, columns=columns, **filters)


def energy_rows(run: Run, step: int) -> list[tuple[float | None, bool]]:
    """(energy, trained) of every group observed at ``step``."""
    if run.telemetry_archived_at is not None:
        rows = _archived_observations(run, ("energy", "trained"), step_min=step, step_max=step)
        return list(zip(rows["energy"].to_pylist(), rows["trained"].to_pylist(), strict=True))
    return list(PromptObservation.objects.filter(run=run, step=step).values_list("energy", "trained"))


def edge_points(run: Run, step: int | None, limit: int = EDGE_POINTS) -> tuple[list[tuple], int]:
    """Prompts to place on the learning-edge map and how many there are in all.

    With a step: the groups observed at that step (bucket as of then). Without: every
    prompt's current state, the most recently seen first when there are more than ``limit``.
    """
    if step is not None and run.telemetry_archived_at is not None:
        fields = ("prompt_key", "pass_rate", "response_entropy", "bucket")
        table = _archived_observations(run, fields, step_min=step, step_max=step)
        page = table.sort_by("prompt_key").slice(0, limit)  # byte order: the C collation compose's database has
        return list(zip(*(page[f].to_pylist() for f in fields), strict=True)), table.num_rows
    if step is not None:
        rows = PromptObservation.objects.filter(run=run, step=step)
        total = rows.count()
        points = rows.order_by("prompt_key").values_list("prompt_key", "pass_rate", "response_entropy", "bucket")
        return list(points[:limit]), total
    states = PromptState.objects.filter(run=run)
    total = states.count()
    points = states.order_by("-last_step", "prompt_key").values_list(
        "prompt_key", "pass_rate", "response_entropy", "bucket")
    return list(points[:limit]), total


# -- the heat map by prompt ----------------------------------------------------------------------------

HEATMAP_RANK_SECONDS = 300  # a ranking of steps through N never changes: kept for the page's polls


def heatmap_prompt_stats(run: Run, since: int, through: int,
                         version: int = 0) -> list[tuple[str, int, float | None, float | None]]:
    """(key, observations, first pass rate, last pass rate) of every prompt observed in steps
    since..through, for ``charts.heatmap_prompts`` to rank. Those steps are written once, so the
    answer is cached for the page's polls (the same window ranks the same rows); ``version``
    (``newest_step_version``'s row id) misses the cache when the newest step is written again."""
    from django.core.cache import cache

    if through < since:
        return []
    cache_key = f"edgeplane:heatmap-rank:{run.id}:{since}:{through}:{version}"
    stats = cache.get(cache_key)
    if stats is None and run.telemetry_archived_at is not None:
        stats = _archived_heatmap_stats(run, since, through)
        cache.set(cache_key, stats, HEATMAP_RANK_SECONDS)
    if stats is None:
        sql = (
            "SELECT prompt_key, COUNT(*), "
            "(array_agg(pass_rate ORDER BY step) FILTER (WHERE pass_rate IS NOT NULL))[1], "
            "(array_agg(pass_rate ORDER BY step DESC) FILTER (WHERE pass_rate IS NOT NULL))[1] "
            f"FROM {PromptObservation._meta.db_table} WHERE run_id = %s AND step >= %s AND step <= %s "
            "GROUP BY prompt_key"
        )
        if connection.vendor != "postgresql":  # SQLite (a quick local run): no ordered aggregates
            sql = (
                "SELECT o.prompt_key, COUNT(*), "
                f"(SELECT f.pass_rate FROM {PromptObservation._meta.db_table} f WHERE f.run_id = o.run_id AND "
                "f.prompt_key = o.prompt_key AND f.step >= %s AND f.step <= %s AND f.pass_rate IS NOT NULL "
                "ORDER BY f.step LIMIT 1), "
                f"(SELECT f.pass_rate FROM {PromptObservation._meta.db_table} f WHERE f.run_id = o.run_id AND "
                "f.prompt_key = o.prompt_key AND f.step >= %s AND f.step <= %s AND f.pass_rate IS NOT NULL "
                "ORDER BY f.step DESC LIMIT 1) "
                f"FROM {PromptObservation._meta.db_table} o WHERE o.run_id = %s AND o.step >= %s AND o.step <= %s "
                "GROUP BY o.prompt_key"
            )
            params = [since, through, since, through, run.id, since, through]
        else:
            params = [run.id, since, through]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            stats = [(k, int(n), f, la) for k, n, f, la in cursor.fetchall()]
        cache.set(cache_key, stats, HEATMAP_RANK_SECONDS)
    return stats


def _archived_heatmap_stats(run: Run, since: int, through: int) -> list[tuple[str, int, float | None, float | None]]:
    """``heatmap_prompt_stats`` of an archived run: each prompt's rows in step order, its first
    and last pass rate that is not null (Arrow's first/last skip nulls, as the SQL's FILTER)."""
    table = _archived_observations(run, ("prompt_key", "step", "pass_rate"), step_min=since, step_max=through)
    table = table.sort_by([("prompt_key", "ascending"), ("step", "ascending")])
    stats = table.group_by("prompt_key", use_threads=False).aggregate(  # ordered: first/last need one thread
        [("step", "count"), ("pass_rate", "first"), ("pass_rate", "last")])
    return list(zip(stats["prompt_key"].to_pylist(), stats["step_count"].to_pylist(),
                    stats["pass_rate_first"].to_pylist(), stats["pass_rate_last"].to_pylist(), strict=True))


def _archived_key_cells(run: Run, keys: list[str], w: int, after: int,
                        upto: int) -> list[tuple[str, int, float | None, int]]:
    table = _archived_observations(run, ("prompt_key", "step", "pass_rate"), prompts=keys, step_gt=after,
                                   step_max=upto)
    table = table.append_column("column", pc.divide(table["step"], pa.scalar(w, pa.int64())))  # integer division
    cells = table.group_by(["prompt_key", "column"]).aggregate([("pass_rate", "mean"), ("step", "count")])
    return [(k, int(c), m, int(n)) for k, c, m, n in zip(
        cells["prompt_key"].to_pylist(), cells["column"].to_pylist(), cells["pass_rate_mean"].to_pylist(),
        cells["step_count"].to_pylist(), strict=True)]


def heatmap_key_cells(run: Run, keys: list[str], steps_per_column: int, after: int,
                      upto: int) -> list[tuple[str, int, float | None, int]]:
    """(key, column, mean pass rate, observations) of these prompts for after < step <= upto
    (the (run, prompt_key, step) index: a few rows a prompt)."""
    if upto <= after or not keys:
        return []
    w = max(1, int(steps_per_column))
    if run.telemetry_archived_at is not None:
        return _archived_key_cells(run, keys, w, after, upto)
    rows = (PromptObservation.objects.filter(run=run, prompt_key__in=keys, step__gt=after, step__lte=upto)
            .annotate(column=F("step") / w).values_list("prompt_key", "column")
            .annotate(mean=Avg("pass_rate"), n=Count("id")).order_by())
    return [(k, int(c), float(m) if m is not None else None, int(n)) for k, c, m, n in rows]


# -- decisions -------------------------------------------------------------------------------------------


RECENT_FIELDS = ("id", "step", "prompt_key", "method", "action", "message")
AUDIT_FIELDS = ("id", "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message")
PROMPT_OBSERVATION_FIELDS = ("step", "pass_rate", "response_entropy", "prompt_entropy", "group_size", "successes",
                             "bucket", "trained")
PROMPT_DECISION_FIELDS = ("step", "layer", "method", "action", "reason", "message")


def recent_decisions(run: Run, limit: int = RECENT_DECISIONS) -> list[dict[str, Any]]:
    """The newest decisions, newest first (the run page's audit section). An archived run's
    come from its Parquet file (a scan of the file: the archive is sorted by prompt)."""
    if run.telemetry_archived_at is not None:
        return archive_rows(run.telemetry_archive_path, DECISIONS, columns=RECENT_FIELDS, order=("-step", "-id"),
                            limit=limit)
    return list(SelectionDecision.objects.filter(run=run).order_by("-step", "-id").values(
        "id", "step", "prompt_key", "method", "action", "message")[:limit])


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None  # "step.id" of the last row when more follow


def audit_page(run: Run, *, prompt: str | None = None, method: str | None = None, action: str | None = None,
               step_min: int | None = None, step_max: int | None = None, cursor: str | None = None,
               limit: int | None = None) -> AuditPage:
    """Decisions in (step, id) order after an opaque keyset cursor, filtered.

    The keyset keeps every page as cheap as the first, at a million decisions and more. An
    archived run's decisions come from its Parquet file, in the same order and pages (with a
    prompt, only that prompt's row groups are read; without, the file is scanned).
    """
    from controlplane.runs.selectors import decisions_query

    limit = AUDIT_PAGE if limit is None else limit
    if run.telemetry_archived_at is not None:
        after_key = None
        if cursor:
            step, _, row_id = cursor.partition(".")
            after_key = (int(step), int(row_id))
        rows = archive_rows(run.telemetry_archive_path, DECISIONS, columns=AUDIT_FIELDS, order=("step", "id"),
                            limit=limit + 1, prompt=prompt or None, method=method or None, action=action or None,
                            step_min=step_min, step_max=step_max, after_key=after_key)
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(rows=rows, next_cursor=f"{rows[-1]['step']}.{rows[-1]['id']}" if more else None)
    decisions = decisions_query(run, prompt=prompt, method=method, action=action, step_min=step_min,
                                step_max=step_max)
    if cursor:
        step, _, row_id = cursor.partition(".")
        # step >= s AND NOT (step = s AND id <= i): a range on the step-led index,
        # where an OR of the two cases would not be.
        decisions = decisions.filter(step__gte=int(step)).exclude(step=int(step), id__lte=int(row_id))
    rows = list(decisions.order_by("step", "id").values(
        "id", "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message")[:limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows=rows, next_cursor=f"{rows[-1]['step']}.{rows[-1]['id']}" if more else None)


# -- one prompt ----------------------------------------------------------------------------------------


def prompt_observations(run: Run, key: str) -> list[dict[str, Any]]:
    """One prompt's observations in step order; an archived run's from its Parquet file (only the
    row groups whose prompt_key range holds ``key`` are read)."""
    if run.telemetry_archived_at is not None:
        return archive_rows(run.telemetry_archive_path, OBSERVATIONS, columns=PROMPT_OBSERVATION_FIELDS,
                            order=("step", "id"), prompt=key)
    return list(PromptObservation.objects.filter(run=run, prompt_key=key).order_by("step").values(
        *PROMPT_OBSERVATION_FIELDS))


def prompt_decisions(run: Run, key: str) -> list[dict[str, Any]]:
    """One prompt's decisions in (step, id) order; an archived run's from its Parquet file."""
    if run.telemetry_archived_at is not None:
        return archive_rows(run.telemetry_archive_path, DECISIONS, columns=PROMPT_DECISION_FIELDS,
                            order=("step", "id"), prompt=key)
    return list(SelectionDecision.objects.filter(run=run, prompt_key=key).order_by("step", "id").values(
        *PROMPT_DECISION_FIELDS))


def prompt_state(run: Run, key: str) -> PromptState | None:
    return PromptState.objects.filter(run=run, prompt_key=key).first()


def prompt_in_other_runs(user, run: Run, key: str) -> list[dict[str, Any]]:
    """The same prompt in the user's other runs on this dataset: its current state there."""
    others = runs_for_user(user).filter(dataset_id=run.dataset_id).exclude(pk=run.pk)
    states = {s.run_id: s for s in PromptState.objects.filter(run__in=others, prompt_key=key)}
    return [{"run": r, "state": states.get(r.id)} for r in others[:50]]


# -- lists, budgets, forecasts ------------------------------------------------------------------------------


def run_list(user, *, team: str | None, status: str | None = None, method: str | None = None,
             dataset: int | None = None, before: int | None = None, limit: int = 50) -> list[Run]:
    """A page of runs (newest first, keyset on id) with their latest Pass@1 and their totals
    (``run.totals``, a ``RunTotals``)."""
    runs = runs_for_user(user, status=status, method=method, dataset=dataset, team=team)
    if before is not None:
        runs = runs.filter(pk__lt=before)
    latest = Evaluation.objects.filter(run=OuterRef("pk")).order_by("-step")
    page = list(runs.annotate(
        latest_pass_at_1=Subquery(latest.values("pass_at_1")[:1], output_field=FloatField()),
        latest_eval_step=Subquery(latest.values("step")[:1], output_field=IntegerField()),
    )[:limit])
    totals = runs_totals(page)  # the one run-totals selector, one query for the page
    for run in page:
        run.totals = totals[run.pk]
        # the names the runs list read before RunTotals rode along (None: no step yet)
        run.generated = run.totals.rollouts_generated if run.totals.steps else None
        run.uniform = run.totals.rollouts_uniform if run.totals.steps else None
        run.device_seconds = run.totals.device_seconds if run.totals.steps else None
    return page


def usage_by_hour(team: Team, start: dt.date | None, end: dt.date | None) -> list[tuple[dt.datetime, float, float]]:
    """The team's device-seconds and uniform device-seconds per hour, in time order."""
    return budget_usage_by_hour(team, start, end)


def priced_config(mapping: dict[str, Any]) -> RunConfig:
    """The config a launch form's cost line prices. The forecast is uniform GRPO's cost (selection
    only saves), so a method parameter not yet right (HORA's n0 before N is raised) does not
    stop the preview: the config is priced without its selectors then. Raises ConfigError when
    the rest is not a config either."""
    try:
        return RunConfig.from_mapping(mapping)
    except ConfigError:
        return RunConfig.from_mapping({k: v for k, v in mapping.items() if k != "selectors"})


def launch_forecast_figures(team: Team, *, config: RunConfig, dataset: Dataset | None) -> tuple[float, float | None]:
    """(forecast device-hours of a run, device-hours the team has left for it), the same
    figures ``run_create`` checks: the whole config priced (model size, lengths, evaluation,
    warm-up) at the team's rate on the run's engine and device, against the period's remainder
    less what active runs still need."""
    forecast = forecast_device_hours(team=team, config=config, dataset=dataset)
    return forecast, budget_remaining_for_launch(team)


def runs_by_ids(user, ids: list[int]) -> list[Run]:
    """The user's runs among ``ids``, in the order given (unknown or foreign ids dropped)."""
    found = {r.id: r for r in runs_for_user(user).filter(pk__in=ids)}
    return [found[i] for i in ids if i in found]


def compare_baselines(user, runs: list[Run]) -> list[tuple[Run, Run | None, bool]]:
    """Each compared run with the run it is measured against and whether that one was named:
    its baseline when it names one, else the first run compared (None for that run itself)."""
    named = {r.id: r for r in runs_for_user(user).filter(pk__in=[r.baseline_id for r in runs if r.baseline_id])}
    out = []
    for run in runs:
        if run.baseline_id in named:
            out.append((run, named[run.baseline_id], True))
        else:
            out.append((run, runs[0] if run is not runs[0] else None, False))
    return out


def baseline_choices(team: Team, limit: int = 100) -> list[Run]:
    """The team's runs a new run may name as its baseline, newest first."""
    return list(Run.objects.filter(team=team).order_by("-id")[:limit])


def team_run(team: Team, raw_id: str) -> Run | None:
    """The team's run with this id (as posted), or None."""
    ok = raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 19 and 0 < int(raw_id) < 2**63  # a bigint id
    return Run.objects.filter(team=team, pk=int(raw_id)).first() if ok else None


def evaluations_of(run: Run) -> list[dict[str, Any]]:
    return evaluation_rows(run, -1, limit=100_000)


def run_totals_row(run: Run) -> dict[str, Any]:
    """The run's cumulative accounting (controlplane's RunTotals: one definition) as a mapping."""
    return dataclasses.asdict(run_totals(run))

