"""Reads of the compare page, for runs the caller may see (``frontend.selectors.runs_by_ids``):
plain rows for ``frontend.compare_charts``. One query for all the runs compared, not one each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection

from controlplane.runs.models import Run
from controlplane.telemetry.models import Evaluation, StepSummary
from frontend.charts import method_metrics, phases_of
from frontend.compare_charts import DERIVED, FORWARD_TOKENS, JSON_COLUMNS, UPDATE_TOKENS

# What every compare read carries besides the metric: the running totals and the FLOPs axis.
BASE_FIELDS = ("run_id", "step", "rollouts_generated", "rollouts_uniform", "device_seconds", "flops_estimate",
               *FORWARD_TOKENS, *UPDATE_TOKENS)
DERIVED_FIELDS = ("groups_all_correct", "groups_all_wrong", "groups_generated")


def metric_fields(metric: str) -> tuple[str, ...]:
    """The step-summary columns ``metric`` is read from."""
    column = metric.split(".", 1)[0]
    if "." in metric and column in JSON_COLUMNS:
        return (column,)
    if metric in DERIVED:
        return DERIVED_FIELDS
    return (metric,)


def step_rows_by_run(runs: Sequence[Run], metric: str) -> dict[int, list[dict[str, Any]]]:
    """Each run's step summaries in step order, with the columns ``metric`` needs."""
    fields = tuple(dict.fromkeys((*BASE_FIELDS, *metric_fields(metric))))
    out: dict[int, list[dict[str, Any]]] = {r.id: [] for r in runs}
    for row in StepSummary.objects.filter(run__in=[r.id for r in runs]).order_by("run_id", "step").values(*fields):
        out[row["run_id"]].append(row)
    return out


def evaluations_by_run(runs: Sequence[Run]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {r.id: [] for r in runs}
    for row in Evaluation.objects.filter(run__in=[r.id for r in runs]).order_by("run_id", "step").values(
            "run_id", "step", "k", "pass_at_1", "pass_at_k", "rollouts_generated_total", "device_seconds_total"):
        out[row["run_id"]].append(row)
    return out


def json_keys(runs: Sequence[Run], column: str) -> list[str]:
    """The keys the runs' steps hold in a JSON column of the step summary (seconds, metrics)."""
    if not runs:
        return []
    ids = [r.id for r in runs]
    if connection.vendor == "postgresql":
        table = StepSummary._meta.db_table
        with connection.cursor() as cursor:  # column: one of JSON_COLUMNS, never the request's text
            cursor.execute(f"SELECT DISTINCT jsonb_object_keys({column}) FROM {table} "
                           f"WHERE run_id = ANY(%s) AND jsonb_typeof({column}) = 'object'", [ids])
            return sorted(k for (k,) in cursor.fetchall())
    keys: set[str] = set()
    for value in StepSummary.objects.filter(run__in=ids).values_list(column, flat=True):
        keys.update(value or {})
    return sorted(keys)


def catalog_inputs(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """(phases, selector metrics) the runs can be compared on: what their engines and methods
    report by design, and what their steps hold."""
    phases = [p for r in runs for p in phases_of(r.engine)] + json_keys(runs, "seconds")
    metrics = [m for r in runs for m, (_, per) in method_metrics(r.methods or []).items() if not per]
    return list(dict.fromkeys(phases)), sorted(set(metrics) | set(json_keys(runs, "metrics")))


def flops_rows_by_run(runs: Sequence[Run]) -> dict[int, list[dict[str, Any]]]:
    """Each run's steps with what its FLOPs axis needs, in step order."""
    return step_rows_by_run(runs, "flops_estimate")
