"""Dashboard pages: server-rendered templates over the controlplane selectors and
services. Views stay thin: read the request, call one selector or service, render.

Visibility is the API's: another team's run, prompt or budget is a 404 (the same answer
as an id that does not exist); a member without the launcher role gets a 403 for writes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from controlplane.accounts.models import Role, Team
from controlplane.accounts.selectors import membership_of, teams_for_user, user_can
from controlplane.budgets.selectors import budget_overview
from controlplane.budgets.services import BudgetExceeded
from controlplane.datasets.selectors import prompt_by_key
from controlplane.runs.models import ACTIVE, FINISHED, Run, RunStatus
from controlplane.runs.selectors import (
    SAVINGS,
    RunDetail,
    run_for_user_or_none,
    runs_waiting_for,
    runs_warmup,
)
from controlplane.runs.selectors import run_detail as run_detail_selector
from controlplane.runs.services import IdempotencyKeyReused, RunStateError, run_cancel, run_create
from frontend import charts, exports
from frontend import selectors as sel
from frontend.audit_filters import audit_filters
from frontend.forms import ID_MAX, STEP_MAX, NewRunForm, id_or_none, refuse_malformed
from workers.engines.config import ConfigError, RunConfig
from workers.selection.accounting import rollout_savings
from workers.selection.decisions import Action
from workers.selection.ledger import Bucket

SESSION_TEAM = "edgeplane_team"
RUN_NAME_MAX = Run._meta.get_field("name").max_length
POLL_MS = 2000  # a finished step shows within this plus one second


# -- shared context -----------------------------------------------------------------------------------


def current_team(request: HttpRequest) -> Team | None:
    """The team the user works in: the session's choice if still theirs, else their first."""
    teams = teams_for_user(request.user)
    chosen = teams.filter(slug=request.session.get(SESSION_TEAM, "")).first()
    return chosen or teams.first()


def page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    team = context.get("team") or current_team(request)
    membership = membership_of(request.user, team) if team else None
    base = {"teams": teams_for_user(request.user), "team": team, "role": membership.role if membership else None,
            "can_launch": bool(membership and membership.allows(Role.LAUNCHER))}
    return render(request, template, {**base, **context}, status=status)


def run_or_404(request: HttpRequest, run_id: int) -> Run:
    run = run_for_user_or_none(request.user, run_id)
    if run is None:
        raise Http404(f"no run {run_id} in your teams")
    return run


# "step.id" of the audit trail's keyset: a step and a decision id, each within its column.
AUDIT_CURSOR = re.compile(r"^([0-9]{1,10})\.([0-9]{1,19})$")


def _audit_cursor(raw: str) -> tuple[str | None, str | None]:
    """(the cursor, None) when ``raw`` is one; (None, the problem) otherwise; (None, None) when empty."""
    if not raw:
        return None, None
    match = AUDIT_CURSOR.match(raw)
    if match is None or int(match.group(1)) > STEP_MAX or int(match.group(2)) > ID_MAX:
        return None, f"cursor must be the page link's step.id, got {raw!r}; start again from the first page"
    return raw, None


# -- sign in, team switcher ---------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    redirect_authenticated_user = True
    next_page = "frontend:runs"


class LogoutView(auth_views.LogoutView):
    next_page = "frontend:login"


@login_required
@refuse_malformed
@require_POST
def team_switch(request: HttpRequest) -> HttpResponse:
    team = teams_for_user(request.user).filter(slug=request.POST.get("team", "")).first()
    if team is None:
        raise Http404("no such team among yours")
    request.session[SESSION_TEAM] = team.slug
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("frontend:runs")
    return redirect(target)


# -- runs ----------------------------------------------------------------------------------------------


@login_required
@refuse_malformed
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    team = current_team(request)
    status = request.GET.get("status") or None
    method = request.GET.get("method") or None
    dataset = id_or_none(request.GET.get("dataset"))
    before = id_or_none(request.GET.get("before"))
    rows = []
    if team is not None:
        listed = sel.run_list(request.user, team=team.slug, status=status, method=method, dataset=dataset,
                              before=before)
        warmups, waiting = runs_warmup(listed), runs_waiting_for(listed)  # a few queries for the whole page
        for run in listed:
            uniform = run.uniform or 0
            rows.append({
                "run": run,
                "labels": charts.method_labels(run.methods),
                "progress": charts.progress(run.steps_completed, run.steps_planned),
                "rollout_savings": rollout_savings(run.generated, uniform),
                "device_hours": (run.device_seconds or 0.0) / 3600.0,
                "active": run.status in ACTIVE,
                "warmup": charts.warmup_progress(warmups.get(run.pk)),
                "waiting_for": charts.waiting_for(waiting.get(run.pk)),
            })
    filters = {"status": status or "", "method": method or "", "dataset": dataset or ""}
    next_url = None
    if len(rows) == 50:
        next_url = "?" + urlencode({**{k: v for k, v in filters.items() if v}, "before": rows[-1]["run"].id})
    datasets = team.datasets.order_by("name") if team else []
    return page(request, "frontend/runs.html", {
        "rows": rows, "filters": filters, "statuses": [s.value for s in RunStatus],
        "methods": charts.method_labels(), "datasets": datasets, "next_url": next_url,
        "poll_ms": POLL_MS,
    })


@login_required
@refuse_malformed
def run_new(request: HttpRequest) -> HttpResponse:
    team = current_team(request)
    if team is None:
        raise Http404("you belong to no team")
    datasets = list(team.datasets.order_by("-created_at"))
    form = NewRunForm.blank()
    status = 200
    config: dict[str, Any] = {}  # the defaults, until a post says otherwise
    dataset = datasets[0] if datasets else None  # the one the blank form shows chosen
    if request.method == "POST":
        if not user_can(request.user, team, Role.LAUNCHER):
            raise PermissionDenied("launching needs the launcher role in the team")
        config, errors = form.bind(request.POST)
        dataset = next((d for d in datasets if str(d.id) == form.dataset), None)
        if dataset is None:
            errors.setdefault("dataset", []).append("choose one of the team's datasets")
        if not form.name:
            errors.setdefault("name", []).append("give the run a name")
        elif len(form.name) > RUN_NAME_MAX:
            errors.setdefault("name", []).append(f"at most {RUN_NAME_MAX} characters, got {len(form.name)}")
        baseline = sel.team_run(team, form.baseline) if form.baseline else None
        if form.baseline and baseline is None:
            errors.setdefault("baseline", []).append("choose one of the team's runs, or none")
        if not errors:
            try:
                run = run_create(team=team, dataset=dataset, name=form.name, config=config, user=request.user,
                                 baseline=baseline, idempotency_key=form.idempotency_key)
            except ConfigError as exc:
                errors = exc.as_dict()
            except IdempotencyKeyReused as exc:
                form.general_errors.append(f"this form already launched run {exc.run.pk} with other settings: "
                                           "open New run again to launch another")
                status = 409
            except BudgetExceeded as exc:
                form.general_errors.append(str(exc))
                status = 409
            else:
                messages.success(request, f"Run {run.id} launched: queued for a worker." if not run.replayed
                                 else f"Run {run.id} was already launched by this form: here it is.")
                return redirect("frontend:run", run_id=run.id)
        if errors:
            form.place_errors(errors)
            status = 400
    forecast_figures = sel.launch_forecast_figures(team, config=_priced_config(config), dataset=dataset)
    return page(request, "frontend/run_new.html", {
        "team": team, "form": form, "datasets": datasets, "baseline_runs": sel.baseline_choices(team),
        "forecast": charts.launch_forecast(*forecast_figures),
    }, status=status)


def _priced_config(mapping: dict[str, Any]) -> RunConfig:
    """The config the form's cost line prices: what was posted when it makes one, else the
    defaults (the page beside its errors still shows a figure)."""
    try:
        return sel.priced_config(mapping)
    except ConfigError:
        return RunConfig.from_mapping({})


def _savings_tiles(detail: RunDetail) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """The run's yardstick tiles, and the effective-share tile when no yardstick tile shows
    that share (the uniform-budget one does)."""
    totals = detail.totals
    figures = {  # None until there is something to divide by
        "rollout_savings": totals.rollout_savings,
        "rollout_savings_vs_dynamic_sampling": totals.rollout_savings_vs_dynamic_sampling,
        "backward_savings_vs_mixed": totals.backward_savings_vs_mixed,
        "effective_share_of_generated": totals.effective_share_of_generated,
    }
    tiles = charts.yardstick_tiles(detail.yardsticks, figures,
                                   {name: formula for name, (_, formula) in SAVINGS.items()})
    if "uniform_budget" in detail.yardsticks:
        return tiles, None
    return tiles, {"shown": charts.percent(figures["effective_share_of_generated"]),
                   "formula": charts.EFFECTIVE_SHARE_FORMULA}


@login_required
@refuse_malformed
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_or_404(request, run_id)
    detail = run_detail_selector(run)
    methods = list(run.config.get("selectors", {}))
    tiles, effective_tile = _savings_tiles(detail)
    data_urls = {name: reverse(f"frontend:data-{name}", args=[run.id]) for name in (
        "series", "evaluations", "actions", "edge", "heatmap", "recent")}
    # the endpoints of the panel views drawn from their own data, by view name (workers/selection/panels.py)
    view_urls = {view: reverse(f"frontend:data-{name}", args=[run.id]) for view, name in (
        ("hora_allocation", "hora"), ("lze_energy", "energy"))}
    panels = charts.method_panels(methods)
    page_config = {
        "run": run.id, "methods": methods, "labels": {m["name"]: m["label"] for m in charts.method_labels(methods)},
        "urls": {**data_urls, **view_urls, "audit": reverse("frontend:audit", args=[run.id]),
                 "prompt": reverse("frontend:prompt", args=[run.id])},
        "panels": [p for m in panels for p in m["panels"]], **charts.page_names(run.engine),
        "status": run.status, "finished": run.status in FINISHED, "steps_planned": run.steps_planned,
        "poll_ms": POLL_MS, "last_step": run.steps_completed - 1,
        # what the live updates rewrite and the savings chart draws, one entry per yardstick
        "tiles": [{k: t[k] for k in ("yardstick", "element", "series", "legend", "saving")} for t in tiles],
    }
    page_config["tools"] = exports.run_page_tools(run, page_config["panels"])  # downloads, logs (frontend/exports.py)
    return page(request, "frontend/run.html", {
        "team": run.team, "run": run, "detail": detail, "totals": detail.totals, "tiles": tiles,
        "effective_tile": effective_tile,
        "labels": charts.method_labels(methods), "method_panels": panels, "page_config": page_config,
        "progress": charts.progress(run.steps_completed, run.steps_planned),
        "can_cancel": run.status in ACTIVE and not run.cancel_requested
        and user_can(request.user, run.team_id, Role.LAUNCHER),
        "recent": sel.recent_decisions(run), "active": run.status in ACTIVE,
        "attempt": run.attempts.order_by("-number").first(),  # its job id, for a verl run
        "warmup": charts.warmup_progress(detail.warmup), "waiting_for": charts.waiting_for(detail.waiting_for),
    })


@login_required
@refuse_malformed
@require_POST
def run_cancel_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_or_404(request, run_id)
    if not user_can(request.user, run.team_id, Role.LAUNCHER):
        raise PermissionDenied("cancelling needs the launcher role in the team")
    try:
        run = run_cancel(run=run)
    except RunStateError as exc:
        messages.error(request, str(exc))
    else:
        if run.status == RunStatus.CANCELLED:
            messages.success(request, "Run cancelled before it started.")
        else:
            messages.success(request, "Cancel requested: the run stops at its next step boundary.")
    return redirect("frontend:run", run_id=run.id)


# -- audit trail and prompts --------------------------------------------------------------------------------


@login_required
@refuse_malformed
@require_GET
def audit(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_or_404(request, run_id)
    query, raw, errors = audit_filters(request.GET)
    cursor, problem = _audit_cursor(raw["cursor"])
    if problem:
        errors.append(problem)
    result = None
    if not errors:
        result = sel.audit_page(run, **query, cursor=cursor)
    filters = {k: v for k, v in raw.items() if k != "cursor" and v}
    next_url = "?" + urlencode({**filters, "cursor": result.next_cursor}) if result and result.next_cursor else None
    downloads = {fmt: reverse("frontend:audit-export", args=[run.id]) + "?" + urlencode({**filters, "format": fmt})
                 for fmt in ("csv", "json")}
    return page(request, "frontend/audit.html", {
        "team": run.team, "run": run, "filters": raw, "errors": errors, "rows": result.rows if result else [],
        "next_url": next_url, "first_url": "?" + urlencode(filters) if cursor else None,
        "methods": charts.method_labels(), "actions": [a.value for a in Action], "downloads": downloads,
    }, status=400 if errors else 200)


@login_required
@refuse_malformed
@require_GET
def prompt(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_or_404(request, run_id)
    key = request.GET.get("key", "")
    if not key:
        raise Http404("which prompt? give ?key=")
    record = prompt_by_key(run.dataset_id, key)
    observations = sel.prompt_observations(run, key)
    decisions = sel.prompt_decisions(run, key)
    if record is None and not observations and not decisions:
        raise Http404(f"no prompt {key!r} in this run's dataset")
    return page(request, "frontend/prompt.html", {
        "team": run.team, "run": run, "key": key, "record": record, "decisions": decisions,
        "state": sel.prompt_state(run, key),
        "changes": charts.bucket_changes([(o["step"], o["bucket"]) for o in observations],
                                         [(d["step"], d["action"]) for d in decisions]),
        "series": charts.prompt_series(observations), "others": sel.prompt_in_other_runs(request.user, run, key),
        "unseen": charts.BUCKETS[Bucket.UNSEEN],
    })


# -- compare and budget ---------------------------------------------------------------------------------------


@login_required
@refuse_malformed
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    ids = [i for i in (id_or_none(v) for v in request.GET.getlist("run")) if i is not None]
    chosen = sel.runs_by_ids(request.user, ids)
    team = current_team(request)
    candidates = sel.run_list(request.user, team=team.slug, limit=50) if team else []
    for candidate in candidates:
        candidate.labels = charts.method_labels(candidate.methods)
    table = [{"run": r, "labels": charts.method_labels(r.methods), **charts.with_percentages(
        charts.savings_row(sel.run_totals_row(r)), ("rollout_savings", "rollout_savings_vs_dynamic_sampling",
                                                    "backward_savings_vs_mixed", "effective_share_of_generated"))}
             for r in chosen]
    evaluations = {r.id: sel.evaluations_of(r) for r in chosen}
    series = charts.compare_series([{"id": r.id, "name": r.name, "evaluations": evaluations[r.id]}
                                    for r in chosen])
    return page(request, "frontend/compare.html", {
        "chosen": chosen, "chosen_ids": [r.id for r in chosen], "candidates": candidates, "table": table,
        "series": series, "reach": _reach_rows(request, chosen, evaluations),
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


@login_required
@refuse_malformed
@require_GET
def budget(request: HttpRequest, slug: str) -> HttpResponse:
    team = teams_for_user(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"no team {slug!r} among yours")
    overview = budget_overview(team)
    usage = sel.usage_by_hour(team, overview.period_start, overview.period_end)
    from django.utils import timezone

    series = charts.budget_series(
        [(t.isoformat(), used, uniform) for t, used, uniform in usage],
        period_start=overview.period_start.isoformat() if overview.period_start else None,
        period_end=overview.period_end.isoformat() if overview.period_end else None,
        limit_device_hours=overview.limit_device_hours, forecast_device_hours=overview.forecast_device_hours,
        now=timezone.now().isoformat())
    return page(request, "frontend/budget.html", {"team": team, "overview": overview, "series": series})
