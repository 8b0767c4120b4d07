"""The compare page and the JSON its charts read: several runs side by side.

Which runs: ``?run=<id>`` repeated, in the order given, at most ``MAX_RUNS`` (the page shows
the first ones and says so; the JSON refuses more). A run of a team the user is not in is
silently left out, as an id that does not exist is: the page and the JSON compare the
runs the user may see among those named (``frontend.selectors.runs_by_ids``). A parameter
that is not what it must be (a run id that is not a whole number, a metric or an x axis
the page does not offer) is a 400 that says what to send instead.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from controlplane.runs.models import Run
from frontend import charts
from frontend import compare_charts as cc
from frontend import compare_selectors as csel
from frontend import selectors as sel
from frontend.forms import ID_MAX, BadParameter, int_param, refuse_malformed
from frontend.views import current_team, page

SAVINGS_SHARES = ("rollout_savings", "rollout_savings_vs_dynamic_sampling", "backward_savings_vs_mixed",
                  "effective_share_of_generated", "device_hours_savings")


def run_ids(request: HttpRequest) -> list[int]:
    """The ``run`` parameters as ids, in order, each once; BadParameter for one that is not an id."""
    ids = []
    for raw in request.GET.getlist("run"):
        try:
            ids.append(int_param(raw, "run", minimum=1, maximum=ID_MAX))
        except BadParameter:
            raise BadParameter(f"run must be a run's id (a whole number from 1 to {ID_MAX}), got {raw[:40]!r}: "
                               "tick the runs to compare in the table of runs") from None
    return list(dict.fromkeys(ids))


def metric_param(request: HttpRequest, catalog: list[cc.Metric]) -> cc.Metric:
    name = request.GET.get("metric", "") or cc.DEFAULT_METRIC
    for metric in catalog:
        if metric.name == name:
            return metric
    raise BadParameter(f"metric {name[:cc.KEY_MAX]!r} is not one the runs compared record: pick one from the "
                       f"list of metrics (e.g. {cc.DEFAULT_METRIC!r}, 'seconds.generate', 'metrics.hive/stage1_kept')")


def axis_param(request: HttpRequest) -> str:
    name = request.GET.get("x", "") or cc.DEFAULT_AXIS
    if name not in cc.ACCURACY_AXES:
        raise BadParameter(f"x must be one of {', '.join(cc.ACCURACY_AXES)} (the accuracy chart's x axis), "
                           f"got {name[:40]!r}")
    return name


def catalog_for(runs: list[Run]) -> list[cc.Metric]:
    phases, metrics = csel.catalog_inputs(runs)
    return cc.metric_catalog(phases, metrics)


def label(run: Run) -> str:
    """How a run is named on the charts: its name as written, and its id."""
    return f"{run.name} #{run.id}"


# -- the page ---------------------------------------------------------------------------------------------


@login_required
@refuse_malformed
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    team = current_team(request)
    candidates = sel.run_list(request.user, team=team.slug, limit=50) if team else []
    for candidate in candidates:
        candidate.labels = charts.method_labels(candidate.methods)
    context: dict[str, Any] = {"candidates": candidates, "chosen": [], "chosen_ids": [], "max_runs": cc.MAX_RUNS}
    try:
        ids = run_ids(request)
        context["picked"] = len(ids)
        chosen = sel.runs_by_ids(request.user, ids[:cc.MAX_RUNS])
        catalog = catalog_for(chosen)
        axis = axis_param(request)
        try:
            metric = metric_param(request, catalog)
        except BadParameter:
            # A method's metric or a phase these runs do not record (the runs picked changed under
            # a kept choice): the default metric, and say so. Any other unknown name is a 400.
            asked = request.GET.get("metric", "")
            if asked.split(".", 1)[0] not in ("seconds", "metrics") or len(asked) > cc.KEY_MAX + 8:
                raise
            metric = next(m for m in catalog if m.name == cc.DEFAULT_METRIC)
            context["metric_dropped"] = asked if chosen else ""
    except BadParameter as exc:
        return page(request, "frontend/compare.html", {**context, "error": str(exc)}, status=400)
    table = [{"run": r, "labels": charts.method_labels(r.methods),
              **charts.with_percentages(charts.savings_row(sel.run_totals_row(r)), SAVINGS_SHARES)} for r in chosen]
    evaluations = {r.id: sel.evaluations_of(r) for r in chosen}
    flops = csel.flops_rows_by_run(chosen)
    diff = cc.config_diff([r.config for r in chosen])
    return page(request, "frontend/compare.html", {
        **context, "chosen": chosen, "chosen_ids": [r.id for r in chosen], "table": table,
        "reach": _reach_rows(request, chosen, evaluations),
        "metric": metric, "metric_groups": cc.grouped(catalog), "axis": axis, "axes": cc.ACCURACY_AXIS_CHOICES,
        "axis_words": cc.ACCURACY_AXES[axis],
        "diff": diff, "differing": sum(row["differs"] for row in diff),
        "flops_basis": [{"run": r, **cc.flops_basis(flops[r.id])} for r in chosen], "flops_formula": cc.FLOPS_FORMULA,
        "compare_config": {"data_url": reverse("frontend:data-compare"), "runs": [r.id for r in chosen],
                           "metric": metric.name, "axis": axis, "axes": cc.ACCURACY_AXES},
    })


def _reach_rows(request: HttpRequest, chosen: list[Run], evaluations: dict[int, list]) -> list[dict[str, Any]]:
    """For each compared run that has a baseline (named, else the first run compared), the
    cost to reach that baseline's final Pass@1. ``evaluations`` holds the compared runs'
    and gains those of named baselines that are not compared."""
    rows = []
    for run, baseline, named in sel.compare_baselines(request.user, chosen):
        if baseline is None:
            continue  # the first run compared, naming no baseline: the others' reference
        if baseline.id not in evaluations:
            evaluations[baseline.id] = sel.evaluations_of(baseline)
        rows.append({"run": run, "baseline": baseline, "named": named,
                     **charts.reach_row(evaluations[run.id], evaluations[baseline.id])})
    return rows


# -- the charts' data ----------------------------------------------------------------------------------


@login_required
@require_GET
@refuse_malformed
def compare_data(request: HttpRequest) -> JsonResponse:
    """One metric of every run compared against the step, and their held-out evaluations
    against each x axis of the accuracy chart: one request for all the runs."""
    try:
        ids = run_ids(request)
        if not ids:
            raise BadParameter("name the runs to compare: ?run=<id>&run=<id>")
        if len(ids) > cc.MAX_RUNS:
            raise BadParameter(f"compare at most {cc.MAX_RUNS} runs at once, got {len(ids)}: leave some out")
        runs = sel.runs_by_ids(request.user, ids)
        metric = metric_param(request, catalog_for(runs))
    except BadParameter as exc:
        return JsonResponse({"errors": {"parameters": [str(exc)]}}, status=400)
    steps = csel.step_rows_by_run(runs, metric.name)
    evaluations = csel.evaluations_by_run(runs)
    response = JsonResponse({
        "metric": metric.as_dict(),
        "runs": [{"id": r.id, "name": r.name, "label": label(r), **cc.metric_overlay(steps[r.id], metric.name)}
                 for r in runs],
        "evaluations": [{"id": r.id, "name": r.name, "label": label(r),
                         **cc.accuracy_axes(evaluations[r.id], steps[r.id])} for r in runs],
        "axes": cc.ACCURACY_AXES,
    })
    response["Cache-Control"] = "no-store"
    return response
