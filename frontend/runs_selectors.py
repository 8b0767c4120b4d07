"""Reads of the runs list: a page of the user's current team's runs, filtered, searched and
sorted in the database, and the arrival times of the recent steps of those that train (their
pace, for the ETA). Visibility is ``runs_for_user``'s: only the teams the user belongs to,
and the caller names one of them."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from django.db.models import (
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Lower, Now, NullIf, RowNumber

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.selectors import runs_for_user, runs_totals
from controlplane.telemetry.models import Evaluation, StepSummary
from frontend.runs_list import PACE_STEPS, Sort

PAGE = 50
SEARCH_MAX = 200  # a run name's column


def _step_sum(column: str) -> Cast:
    """The run's total of a step column, as a float: a ratio of two integer sums must not be an
    integer division (SQLite divides integers as integers)."""
    sums = (StepSummary.objects.filter(run=OuterRef("pk")).order_by().values("run")
            .annotate(total=Sum(column)).values("total"))
    return Cast(Subquery(sums), FloatField())


# The database expression each sortable column orders by.
def _sort_expressions() -> dict[str, object]:
    uniform = _step_sum("rollouts_uniform")
    return {
        "name": Lower("name"),
        "status": F("status"),
        "progress": Cast(F("steps_completed"), FloatField()) / NullIf(Cast(KT("config__steps"), FloatField()),
                                                                      Value(0.0)),
        "savings": Value(1.0) - _step_sum("rollouts_generated") / NullIf(uniform, Value(0.0)),
        "pass1": F("latest_pass_at_1"),
        "device_hours": _step_sum("device_seconds"),
        "launched": F("created_at"),
        "elapsed": ExpressionWrapper(Coalesce(F("finished_at"), Now()) - F("started_at"),
                                     output_field=DurationField()),
    }


def runs_page(user, *, team: str, status: str | None = None, method: str | None = None,
              dataset: int | None = None, tag: str | None = None, search: str = "", sort: Sort,
              page: int = 1, per_page: int = PAGE) -> tuple[list[Run], bool]:
    """A page (1-based) of the team's runs and whether another follows. Each run carries its
    latest Pass@1 (``latest_pass_at_1``, ``latest_eval_step``) and its totals (``run.totals``).
    ``search``: the name contains it, any case. Runs without the sorted figure come last, in
    either direction; ties newest first."""
    runs: QuerySet[Run] = runs_for_user(user, status=status, method=method, dataset=dataset, team=team, tag=tag)
    if search:
        runs = runs.filter(name__icontains=search[:SEARCH_MAX])
    latest = Evaluation.objects.filter(run=OuterRef("pk")).order_by("-step")
    runs = runs.annotate(
        latest_pass_at_1=Subquery(latest.values("pass_at_1")[:1], output_field=FloatField()),
        latest_eval_step=Subquery(latest.values("step")[:1], output_field=IntegerField()),
        sort_value=_sort_expressions()[sort.key],
    )
    value = F("sort_value")
    order = value.desc(nulls_last=True) if sort.descending else value.asc(nulls_last=True)
    start = (page - 1) * per_page
    found = list(runs.order_by(order, "-id")[start:start + per_page + 1])
    more = len(found) > per_page
    found = found[:per_page]
    totals = runs_totals(found)  # the one run-totals selector, one query for the page
    for run in found:
        run.totals = totals[run.pk]
    return found, more


def recent_step_times(runs: Sequence[Run], limit: int = PACE_STEPS + 1) -> dict[int, list[dt.datetime]]:
    """When each of the last ``limit`` steps of the training runs among ``runs`` arrived, in step
    order, by run id: one query for the page."""
    ids = [run.pk for run in runs if run.status == RunStatus.RUNNING]
    if not ids:
        return {}
    rows = (StepSummary.objects.filter(run_id__in=ids)
            .annotate(recent=Window(RowNumber(), partition_by=[F("run_id")], order_by=F("step").desc()))
            .filter(Q(recent__lte=limit)).values_list("run_id", "step", "created_at"))
    times: dict[int, list[tuple[int, dt.datetime]]] = defaultdict(list)
    for run_id, step, at in rows:
        times[run_id].append((step, at))
    return {run_id: [at for _, at in sorted(found)] for run_id, found in times.items()}
