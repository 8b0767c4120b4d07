"""The runs list (live, sortable, searchable, filtered by tag) and the run lifecycle buttons:
relaunch, resume from the last checkpoint, and a run's tags. Thin: read the query, call the
runs-list selector or one service, shape with ``frontend.runs_list``, render or answer JSON.

Visibility: the list and its JSON show the user's current team's runs only; another team's
run is a 404 for every write, and writes need the launcher role (403).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import user_can
from controlplane.budgets.services import BudgetExceeded
from controlplane.runs.models import ACTIVE, Run, RunStatus
from controlplane.runs.selectors import SAVINGS, runs_waiting_for, runs_warmup
from controlplane.runs.services import RunStateError, resume_refusal, run_relaunch, run_resume, run_tags_set
from controlplane.runs.tags import TAG_MAX, tag_or_none
from frontend import charts, savings
from frontend import runs_list as shape
from frontend.forms import BadParameter, id_or_none, int_param, refuse_malformed
from frontend.runs_selectors import SEARCH_MAX, recent_step_times, runs_page
from frontend.views import POLL_MS, current_team, page, run_or_404
from workers.engines.config import ConfigError
from workers.selection.accounting import YARDSTICKS, rollout_savings

PAGE_MAX = 10_000
FILTERS = ("status", "method", "dataset", "tag", "q", "sort")


def _query(request: HttpRequest) -> dict[str, Any]:
    """The list's filters as queried, each cleaned: what the page shows and its links keep."""
    raw = {name: request.GET.get(name, "").strip() for name in FILTERS}
    try:
        number = int_param(request.GET.get("page", "") or "1", "page", minimum=1, maximum=PAGE_MAX)
    except BadParameter:
        number = 1
    dataset = id_or_none(raw["dataset"])
    return {"status": raw["status"], "method": raw["method"], "dataset": dataset or "", "tag": raw["tag"],
            "q": raw["q"][:SEARCH_MAX], "sort": shape.sort_of(raw["sort"]), "page": number}


def _link(query: dict[str, Any], **changes: Any) -> str:
    """The list's URL with these filters (the empty ones and the default sort left out)."""
    merged = {**query, **changes}
    sort = merged["sort"]
    params = {k: merged[k] for k in ("status", "method", "dataset", "tag", "q") if merged[k]}
    if (sort.param if isinstance(sort, shape.Sort) else sort) != shape.DEFAULT_SORT:
        params["sort"] = sort.param if isinstance(sort, shape.Sort) else sort
    if merged.get("page", 1) != 1:
        params["page"] = merged["page"]
    return "?" + urlencode(params) if params else "?"


def _rows(request: HttpRequest, team, query: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    listed, more = runs_page(request.user, team=team.slug, status=query["status"] or None,
                             method=query["method"] or None, dataset=query["dataset"] or None,
                             tag=query["tag"] or None, search=query["q"], sort=query["sort"], page=query["page"])
    warmups, waiting = runs_warmup(listed), runs_waiting_for(listed)  # a few queries for the whole page
    paces = recent_step_times(listed)
    can_launch = user_can(request.user, team, Role.LAUNCHER)
    now = timezone.now()
    against, formula = YARDSTICKS[SAVINGS["rollout_savings"][0]], SAVINGS["rollout_savings"][1]
    rows = []
    for run in listed:
        totals = run.totals
        active = run.status in ACTIVE
        steps_left = run.steps_planned - run.steps_completed
        eta = shape.eta_seconds(paces.get(run.pk, []), steps_left) if run.status == RunStatus.RUNNING else None
        hours = totals.device_seconds / 3600.0
        members = savings.families(run.config)  # the run's method families, for its savings cell
        rows.append({
            "run": run, "active": active,
            "labels": charts.method_labels(run.methods),
            "progress": charts.progress(run.steps_completed, run.steps_planned),
            "savings": shape.savings_cell(rollout_savings(totals.rollouts_generated, totals.rollouts_uniform)
                                          if totals.steps else None, against, formula,
                                          uniform=savings.family_tile("uniform", totals, run.config, members),
                                          headline=savings.headline(totals, run.config, members)),
            "pass1": f"{run.latest_pass_at_1:.3f}" if run.latest_pass_at_1 is not None else shape.NO_FIGURE,
            "device_hours": hours, "device_hours_shown": f"{hours:.4f}",
            "eta": shape.eta_words(eta, active=run.status == RunStatus.RUNNING),
            "elapsed": shape.duration_words(shape.elapsed_seconds(run.started_at, run.finished_at, now)),
            "warmup": charts.warmup_progress(warmups.get(run.pk)),
            "waiting_for": charts.waiting_for(waiting.get(run.pk)),
            "can_resume": can_launch and resume_refusal(run) is None,
        })
    return rows, more


@login_required
@refuse_malformed
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    team = current_team(request)
    query = _query(request)
    rows, more = _rows(request, team, query) if team is not None else ([], False)
    filtered = any(query[k] for k in ("status", "method", "dataset", "tag", "q"))
    sort = query["sort"]
    headers = {key: {**sort.header(key), "url": _link(query, sort=sort.header(key)["param"], page=1)}
               for key in shape.SORTS}
    return page(request, "frontend/runs.html", {
        "rows": rows, "filters": {k: v for k, v in query.items() if k not in ("sort", "page")},
        "filtered": filtered, "sort": sort.param, "headers": headers,
        "tag_problem": (f"{query['tag']!r} is not a tag: tags are 1-{TAG_MAX} letters, digits, -, _ or ."
                        if query["tag"] and tag_or_none(query["tag"]) is None else ""),
        "statuses": [s.value for s in RunStatus], "methods": charts.method_labels(),
        "datasets": team.datasets.order_by("name") if team else [],
        "next_url": _link(query, page=query["page"] + 1) if more else None,
        "previous_url": _link(query, page=query["page"] - 1) if query["page"] > 1 else None,
        "list_config": {"poll_ms": POLL_MS, "url": reverse("frontend:data-runs") + _link(query).rstrip("?"),
                        "active": any(row["active"] for row in rows)},
    })


@login_required
@refuse_malformed
@require_GET
def runs_live(request: HttpRequest) -> JsonResponse:
    """The runs list's live figures (status, progress, warm-up, savings, Pass@1, ETA, elapsed)
    for the same filters, sort and page as the list's URL; ``active``: whether any run listed
    still runs (the page stops polling once none does). The current team's runs only."""
    team = current_team(request)
    rows, _ = _rows(request, team, _query(request)) if team is not None else ([], False)
    active = any(row["active"] for row in rows)
    response = JsonResponse({"active": active, "finished": not active, "runs": [shape.row_live(row) for row in rows]})
    response["Cache-Control"] = "no-store"
    return response


# -- the lifecycle buttons ------------------------------------------------------------------------------


def _launcher_run(request: HttpRequest, run_id: int, what: str) -> Run:
    run = run_or_404(request, run_id)
    if not user_can(request.user, run.team_id, Role.LAUNCHER):
        raise PermissionDenied(f"{what} needs the launcher role in the team")
    return run


@login_required
@refuse_malformed
@require_POST
def run_relaunch_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _launcher_run(request, run_id, "relaunching")
    try:
        new = run_relaunch(run=run, user=request.user)
    except ConfigError as exc:
        messages.error(request, f"Run {run.id} cannot be relaunched as it is: {exc}. Use “Clone into form” "
                                "to fix its settings and launch.")
    except BudgetExceeded as exc:
        messages.error(request, f"Not relaunched: {exc}")
    else:
        messages.success(request, f"Run {new.id} launched with the config, dataset and tags of run {run.id}: "
                                  "queued for a worker.")
        return redirect("frontend:run", run_id=new.id)
    return redirect("frontend:run", run_id=run.id)


@login_required
@refuse_malformed
@require_POST
def run_resume_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _launcher_run(request, run_id, "resuming")
    try:
        run = run_resume(run=run, user=request.user)
    except RunStateError as exc:
        messages.error(request, f"Not resumed: {exc}.")
    except BudgetExceeded as exc:
        messages.error(request, f"Not resumed: {exc}")
    else:
        messages.success(request, f"Run {run.id} queued to go on from its checkpoint at step "
                                  f"{run.last_checkpoint_step} of {run.steps_planned}.")
    return redirect("frontend:run", run_id=run.id)


@login_required
@refuse_malformed
@require_POST
def run_tags_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _launcher_run(request, run_id, "changing tags")
    try:
        run_tags_set(run=run, tags=request.POST.get("tags", ""))
    except ConfigError as exc:
        messages.error(request, "Tags not saved: " + "; ".join(exc.as_dict()["tags"]))
    else:
        messages.success(request, "Tags saved." if run.tags else "Tags cleared.")
    return redirect("frontend:run", run_id=run.id)
