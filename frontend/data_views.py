"""JSON for the dashboard's charts. Thin: parse the cursor, read through the selectors,
shape with ``frontend.charts``, answer.

Cursor endpoints take ``?after=N`` (the last step the page has; -1 for none) and answer
``{status, next_after, has_more, ...series}`` with only what is newer. ``status`` is read
before the rows, so once it says the run has ended, every step is already in the answer
(or in an earlier one): the page stops polling then. Another team's run is a 404.

The per-step series (series, actions, hora) also take ``?points=N``: then one answer holds
every step after the cursor (through ``?until=`` when given, the zoomed window), cut to at
most N rows by ``frontend.downsample`` (extremes kept; the answer says ``downsampled`` and
``points_from``). The run page asks so at first, one request a chart at the resolution it
can show, then polls with the cursor alone: new steps only, at full resolution. Without
``points`` (or with 0) an answer is a page of full-resolution rows, as before.
"""

from __future__ import annotations

import math
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from controlplane.accounts.selectors import teams_for_user
from controlplane.runs.models import FINISHED, Run
from controlplane.runs.selectors import run_for_user_or_none, run_totals, run_waiting_for, run_warmup
from frontend import charts
from frontend import selectors as sel
from frontend.charts import HeatmapLayout
from frontend.downsample import MAX_POINTS, minmax
from frontend.forms import STEP_MAX, BadParameter, NewRunForm, id_or_none, int_param, refuse_malformed
from workers.engines.config import ConfigError
from workers.selection.registry import REGISTRY


def _int(request: HttpRequest, name: str, default: int | None = None, minimum: int = -1,
         maximum: int = STEP_MAX) -> int | None:
    """A whole-number parameter within the column it meets (a step: 32-bit), else BadParameter."""
    raw = request.GET.get(name, "")
    if raw == "":
        return default
    return int_param(raw, name, minimum=minimum, maximum=maximum)


def run_json(view):
    """Login, the run through the caller's teams (404 otherwise), 400 for a bad parameter."""

    @login_required
    @require_GET
    @refuse_malformed
    @wraps(view)
    def wrapper(request: HttpRequest, run_id: int) -> JsonResponse:
        run = run_for_user_or_none(request.user, run_id)
        if run is None:
            raise Http404(f"no run {run_id} in your teams")
        try:
            payload = view(request, run)
        except BadParameter as exc:
            return JsonResponse({"errors": {"parameters": [str(exc)]}}, status=400)
        response = JsonResponse(payload)
        response["Cache-Control"] = "no-store"
        return response

    return wrapper


def _run_state(run: Run) -> dict[str, Any]:
    return {"status": run.status, "finished": run.status in FINISHED, "steps_completed": run.steps_completed,
            "steps_planned": run.steps_planned, "cancel_requested": run.cancel_requested,
            "reason": run.status_reason}


def _live_state(run: Run) -> dict[str, Any]:
    """The run's state with what the run page's head shows beside it: the warm-up's progress
    (and the device time booked for it) and, while queued, why the run waits."""
    return {**_run_state(run), "warmup": charts.warmup_progress(run_warmup(run)),
            "waiting_for": charts.waiting_for(run_waiting_for(run))}


def _page(run: Run, after: int, upto: int, newest: int | None = None) -> dict[str, Any]:
    """The cursor fields: rows through ``upto`` were sent; more exist past it."""
    newest = sel.last_step(run) if newest is None else newest
    return {**_run_state(run), "next_after": max(upto, after), "has_more": upto < newest}


def _window(request: HttpRequest, after: int) -> tuple[int | None, int]:
    """(points, the newest step): ``points`` (None: full-resolution pages) and, read once, the
    newest step. ``?until=`` (with points) ends the window there: a zoomed chart's range."""
    points = _int(request, "points", None, minimum=0, maximum=MAX_POINTS) or None
    until = _int(request, "until", None, minimum=0)
    if until is not None and points is None:
        raise BadParameter("until needs points (the resolution of the window), e.g. ?after=99&until=400&points=600")
    if until is not None and until <= after:
        raise BadParameter(f"until must be after the cursor (after={after}), got {until}")
    return points, until


FIRST_READ_SECONDS = 300  # a whole-run aggregate read at a run's newest step, kept for the next visit


def _cached(name: str, run: Run, version: tuple[int, int], params: tuple, compute) -> dict[str, Any]:
    """``compute()``, kept by (run, newest step and its row, parameters): the steps it covers
    are written once, so a second visit (or a second user) of a run's page at the same newest
    step reads the aggregate of a million decisions once, not twice."""
    from django.core.cache import cache

    key = f"edgeplane:{name}:{run.id}:{version[0]}:{version[1]}:" + ":".join(map(str, params))
    data = cache.get(key)
    if data is None:
        data = compute()
        cache.set(key, data, FIRST_READ_SECONDS)
    return data


@run_json
def series(request: HttpRequest, run: Run) -> dict[str, Any]:
    """Per-step rollout accounting and method metrics (the "Rollout savings" charts and
    the method panels), with running totals continued from the cursor."""
    after = _int(request, "after", -1)
    points, until = _window(request, after)
    state = _live_state(run)  # before the rows: once it says finished, every step is in
    rows = sel.step_rows(run, after, limit=STEP_MAX if points else None, upto=until)
    upto = rows[-1]["step"] if rows else after
    data = charts.step_series(rows, run_totals(run, through_step=after), methods=list(run.config.get("selectors", {})),
                              phases=charts.phases_of(run.engine))
    if points:
        data = minmax(data, points)
    newest = sel.last_step(run) if (until is not None or not points) else max(upto, after)
    return {**_page(run, after, upto, newest), **state, **data}


@run_json
def evaluations(request: HttpRequest, run: Run) -> dict[str, Any]:
    after = _int(request, "after", -1)
    rows = sel.evaluation_rows(run, after)
    upto = rows[-1]["step"] if rows else after
    newest = run.evaluations.order_by("-step").values_list("step", flat=True).first()
    return {**_run_state(run), "next_after": upto, "has_more": newest is not None and upto < newest,
            **charts.accuracy_series(rows)}


@run_json
def actions(request: HttpRequest, run: Run) -> dict[str, Any]:
    """Decisions per step by method and action (kept, skipped, pruned, replayed, ...)."""
    after = _int(request, "after", -1)
    points, until = _window(request, after)
    if not points:
        upto = sel.page_end(run, after, limit=sel.AGGREGATE_STEP_PAGE)
        return {**_page(run, after, upto), **charts.action_counts(sel.action_count_rows(run, after, upto))}
    version = sel.newest_step_version(run)
    newest = version[0]
    upto = newest if until is None else min(until, newest)
    counts = _cached("actions", run, version, (after, upto, points),
                     lambda: minmax(charts.action_counts(sel.action_count_rows(run, after, upto)), points))
    return {**_page(run, after, max(upto, after), newest), **counts}


@run_json
def hora(request: HttpRequest, run: Run) -> dict[str, Any]:
    """HORA's allocation by probe successes, per step."""
    after = _int(request, "after", -1)
    points, until = _window(request, after)
    params = run.config.get("selectors", {}).get("hora") or {}
    defaults = {d["name"]: d["default"] for d in REGISTRY["hora"].Params.describe()}
    n0 = int(params.get("n0", defaults["n0"]))  # the probe size: the successes axis runs 0..n0
    if not points:
        upto = sel.page_end(run, after, limit=sel.AGGREGATE_STEP_PAGE)
        return {**_page(run, after, upto), **charts.hora_allocation(sel.hora_rows(run, after, upto), max_successes=n0)}
    # A heat map of steps x successes: at most `points` columns, each the mean over its steps.
    version = sel.newest_step_version(run)
    newest = version[0]
    upto = newest if until is None else min(until, newest)
    width = max(1, math.ceil((upto - after) / points))
    data = _cached("hora", run, version, (after, upto, width, n0), lambda: charts.hora_allocation(
        sel.hora_rows(run, after, upto, steps_per_column=width), max_successes=n0))
    return {**_page(run, after, max(upto, after), newest), **data, "steps_per_column": width,
            "downsampled": width > 1, "points_from": max(upto - after, 0), "points_sent": len(data["step"])}


@run_json
def energy(request: HttpRequest, run: Run) -> dict[str, Any]:
    """LZE energy distribution of one step's groups (the newest step by default)."""
    step = _int(request, "step", None, minimum=0)
    step = sel.last_step(run) if step is None else step
    return {**_run_state(run), "at_step": step, **charts.energy_histogram(sel.energy_rows(run, step))}


@run_json
def edge(request: HttpRequest, run: Run) -> dict[str, Any]:
    """The learning-edge map: prompts observed at ``?step=`` (their bucket then), or every
    prompt's current state with ``?step=now`` (or no step)."""
    raw = request.GET.get("step", "now")
    step = None if raw in ("", "now") else _int(request, "step", None, minimum=0)
    points, total = sel.edge_points(run, step)
    return {**_run_state(run), "at_step": step, "last_step": sel.last_step(run),
            **charts.edge_map(points, total=total)}


def heatmap_page(request: HttpRequest, run: Run) -> dict[str, Any]:
    """Pass rate by prompt and step for one page of prompts: the most active (``?order=active``,
    the default) or the most changed (``order=changed``) in the steps since ``?since=`` (the
    whole run by default), ``?limit=`` of them (50) from ``?offset=``, among the keys that
    contain ``?q=``. The first read (``after=-1``) ranks them over the steps through the newest
    complete column and says so in ``ranked_through``; a poll passes that back with its
    cursor and gets the same rows' new columns (a column is sent once complete, see
    ``HeatmapLayout.complete_until``)."""
    after = _int(request, "after", -1)
    order = request.GET.get("order", "") or "active"
    if order not in charts.HEATMAP_ORDERS:
        raise BadParameter(f"order must be one of {', '.join(charts.HEATMAP_ORDERS)}, got {order!r}")
    offset = _int(request, "offset", 0, minimum=0, maximum=10_000_000)
    limit = _int(request, "limit", charts.HEATMAP_ROWS, minimum=1, maximum=200)
    since = _int(request, "since", 0, minimum=0)
    search = request.GET.get("q", "")[:200]
    state = _run_state(run)
    finished = run.status in FINISHED
    layout = HeatmapLayout(steps_planned=max(run.steps_planned, 1))
    version = sel.newest_step_version(run)
    newest = layout.complete_until(version[0], finished)
    through = _int(request, "ranked_through", None)
    through = newest if through is None else min(through, newest)
    # a ranking through an older step than the newest is final: no version in its cache key
    stats = sel.heatmap_prompt_stats(run, since, through, version=version[1] if through >= version[0] else 0)
    ranked = charts.heatmap_prompts(stats, order=order, offset=offset, limit=limit, search=search)
    upto = max(newest, after)
    start = max(after, since - 1)  # the cells after this step; columns start at a column's first step
    cells = sel.heatmap_key_cells(run, ranked["rows"], layout.steps_per_column, start, upto)
    data = charts.prompt_heatmap(cells, ranked["rows"], layout.steps_per_column, start + 1, upto)
    page = {**state, "next_after": upto, "has_more": False, "ranked_through": through, "since": since, "q": search}
    if after >= 0:  # a poll: the rows are the page's already
        ranked = {k: v for k, v in ranked.items() if k not in ("rows", "row_observations", "row_change")}
    return {**page, **ranked, **data}


heatmap = run_json(heatmap_page)  # the chart's endpoint; frontend.exports downloads the same page


@run_json
def recent(request: HttpRequest, run: Run) -> dict[str, Any]:
    """The newest decisions, for the run page's audit section."""
    return {**_run_state(run), "results": sel.recent_decisions(run)}


@login_required
@require_GET
@refuse_malformed
def forecast(request: HttpRequest) -> JsonResponse:
    """The New run page's cost line for ?team= and the form's fields (the names it posts): the
    figure ``run_create`` checks for that config and dataset; 400 with the errors while the
    fields do not make a config yet."""
    team = teams_for_user(request.user).filter(slug=request.GET.get("team", "")).first()
    if team is None:
        raise Http404("no such team among yours")
    form = NewRunForm.blank()
    mapping, errors = form.bind(request.GET)
    if errors:
        return JsonResponse({"errors": errors}, status=400)
    try:
        config = sel.priced_config(mapping)
    except ConfigError as exc:
        return JsonResponse({"errors": exc.as_dict()}, status=400)
    dataset_id = id_or_none(form.dataset)
    dataset = team.datasets.filter(pk=dataset_id).first() if dataset_id is not None else None
    return JsonResponse(charts.launch_forecast(*sel.launch_forecast_figures(team, config=config, dataset=dataset)))
