"""Dashboard pages: server-rendered templates over the controlplane selectors and
services. Views stay thin: read the request, call one selector or service, render.

Visibility is the API's: another team's run, prompt or budget is a 404 (the same answer
as an id that does not exist); a member without the launcher role gets a 403 for writes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from controlplane.accounts.models import Role, Team
from controlplane.accounts.selectors import membership_of, teams_for_user, user_can
from controlplane.budgets.selectors import budget_overview
from controlplane.budgets.services import BudgetExceeded
from controlplane.datasets.selectors import prompt_by_key
from controlplane.runs.models import ACTIVE, FINISHED, Run, RunStatus
from controlplane.runs.selectors import run_detail as run_detail_selector
from controlplane.runs.selectors import run_for_user_or_none
from controlplane.runs.services import IdempotencyKeyReused, RunStateError, run_cancel, run_create
from frontend import charts, exports, new_run, savings
from frontend import selectors as sel
from frontend.audit_filters import audit_filters
from frontend.forms import ID_MAX, STEP_MAX, NewRunForm, id_or_none, refuse_malformed
from frontend.run_head import head_context
from workers.engines.config import ConfigError, RunConfig
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


# The runs list and the lifecycle buttons (relaunch, resume, tags): frontend/runs_views.py.


@login_required
@refuse_malformed
def run_new(request: HttpRequest) -> HttpResponse:
    """The New run form; ``?from=<run id>`` fills it with that run's config (a clone, in the
    run's team; another team's run is a 404). Every problem is listed at once (frontend/new_run.py)."""
    source = None
    if "from" in request.GET:
        source = run_for_user_or_none(request.user, id_or_none(request.GET["from"]) or 0)
        if source is None:
            raise Http404("no such run in your teams to clone")
    team = source.team if source is not None else current_team(request)
    if team is None:
        raise Http404("you belong to no team")
    datasets = list(team.datasets.order_by("-created_at"))
    form = NewRunForm.blank()
    status = 200
    config: dict[str, Any] = {}  # the defaults, until a post says otherwise
    dataset = datasets[0] if datasets else None  # the one the blank form shows chosen
    # The cost line's (forecast, remaining): what the check priced and judged the budget by, so the
    # figure beside a budget error is the one it names (and the budget is read once a request).
    forecast_figures: tuple[float, float | None] | None = None
    if request.method == "POST":
        if not user_can(request.user, team, Role.LAUNCHER):
            raise PermissionDenied("launching needs the launcher role in the team")
        checked = new_run.check(form, request.POST, team=team, datasets=datasets, user=request.user)
        config, dataset = checked.config, checked.dataset
        forecast_figures = (checked.forecast_device_hours, checked.remaining_device_hours)
        if not checked.errors:
            try:
                run = run_create(team=team, dataset=dataset, name=form.name, config=config, user=request.user,
                                 baseline=checked.baseline, idempotency_key=form.idempotency_key, tags=checked.tags)
            except ConfigError as exc:
                form.place_errors(exc.as_dict())
            except IdempotencyKeyReused as exc:
                form.general_errors.append(f"this form already launched run {exc.run.pk} with other settings: "
                                           "open New run again to launch another")
                status = 409
            except BudgetExceeded as exc:  # spent meanwhile by another launch
                forecast_figures = (exc.forecast_device_hours, exc.remaining_device_hours)
                form.place_errors({"budget": [new_run.budget_problem(team, exc.forecast_device_hours,
                                                                     exc.remaining_device_hours, user=request.user)]})
                status = 409
            else:
                messages.success(request, f"Run {run.id} launched: queued for a worker." if not run.replayed
                                 else f"Run {run.id} was already launched by this form: here it is.")
                return redirect("frontend:run", run_id=run.id)
        elif set(checked.errors) == {"budget"}:
            status = 409  # a config that would run, refused by the budget alone
        if form.has_errors and status == 200:
            status = 400
    elif source is not None:
        known: dict[str, list[str]] = {}
        notes = form.prefill(source.config)  # what of the source could not be prefilled
        if notes:
            known["selectors"] = notes
        form.name = f"{source.name} (copy)"[:RUN_NAME_MAX]
        form.tags = ", ".join(source.tags or [])
        form.dataset, form.baseline = str(source.dataset_id), str(source.baseline_id or "")
        if not any(d.id == source.dataset_id for d in datasets):
            known["dataset"] = [(f"{source.name} trained on {source.dataset.name}, which is no longer among the "
                                "team's datasets: choose another")]
        checked = new_run.check(form, form.as_data(), team=team, datasets=datasets, user=request.user, known=known)
        config, dataset = checked.config, checked.dataset
        forecast_figures = (checked.forecast_device_hours, checked.remaining_device_hours)
    else:
        new_run.method_states(form, engine=str(form.value_of("engine")), batch_size=form.value_of("batch_size"),
                              group_size=form.value_of("group_size"))
        form.advice = new_run.advice(form, RunConfig.from_mapping({}), forecast=None, dataset=dataset,
                                     baseline=None)
    if forecast_figures is None:  # the blank form: the defaults priced
        forecast_figures = sel.launch_forecast_figures(team, config=RunConfig.from_mapping({}), dataset=dataset)
    return page(request, "frontend/run_new.html", {
        "team": team, "form": form, "datasets": datasets, "baseline_runs": sel.baseline_choices(team),
        "forecast": charts.launch_forecast(*forecast_figures), "source": source,
    }, status=status)


@login_required
@refuse_malformed
@require_GET
def run_new_check(request: HttpRequest) -> JsonResponse:
    """The form's live check: the page sends its fields as they stand and shows what comes
    back (every problem by input, advice, the methods' states): the server's rules, never
    a copy of them in the browser. Nothing is stored."""
    team = teams_for_user(request.user).filter(slug=request.GET.get("team", "")).first()
    if team is None:
        raise Http404("no such team among yours")
    form = NewRunForm.blank()
    new_run.check(form, request.GET, team=team, datasets=list(team.datasets.order_by("-created_at")),
                  user=request.user)
    response = JsonResponse({
        "problems": [dataclasses.asdict(p) for p in form.problems], "advice": form.advice,
        "methods": [{"name": m.name, "unavailable": m.unavailable, "note": m.note} for m in form.methods],
    })
    response["Cache-Control"] = "no-store"
    return response


@login_required
@refuse_malformed
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_or_404(request, run_id)
    detail = run_detail_selector(run)
    methods = list(run.config.get("selectors", {}))
    shown = savings.savings_tiles(detail.totals, run.config)  # one tile per method family (frontend/savings.py)
    tiles = shown["tiles"]
    data_urls = {name: reverse(f"frontend:data-{name}", args=[run.id]) for name in (
        "series", "evaluations", "actions", "edge", "heatmap", "recent")}
    # the endpoints of the panel views drawn from their own data, by view name (workers/selection/panels.py)
    view_urls = {view: reverse(f"frontend:data-{name}", args=[run.id]) for view, name in (
        ("hora_allocation", "hora"), ("lze_energy", "energy"))}
    panels = charts.method_panels(methods)
    page_config = {
        "run": run.id, "methods": methods, "labels": {m["name"]: m["label"] for m in charts.method_labels(methods)},
        "urls": {**data_urls, **view_urls, "audit": reverse("frontend:audit", args=[run.id]),
                 "savings": reverse("frontend:data-savings", args=[run.id]),
                 "prompt": reverse("frontend:prompt", args=[run.id])},
        "panels": [p for m in panels for p in m["panels"]], **charts.page_names(run.engine),
        "status": run.status, "finished": run.status in FINISHED, "steps_planned": run.steps_planned,
        "poll_ms": POLL_MS, "last_step": run.steps_completed - 1,
        # what the live updates rewrite and the savings chart draws, one entry per yardstick
        "tiles": [{**{k: t[k] for k in ("yardstick", "element", "series", "saving")},
                   "legend": charts.LEGENDS[t["series"]]} for t in tiles],
        "empty": charts.chart_notes(run.config, panels),  # what each chart will show, and when
    }
    page_config["tools"] = exports.run_page_tools(run, page_config["panels"])  # downloads, logs (frontend/exports.py)
    return page(request, "frontend/run.html", {
        **head_context(request, run),
        "team": run.team, "run": run, "detail": detail, "totals": detail.totals, "tiles": tiles,
        "effective_tile": shown["effective"], "device_tile": shown["device"],
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


# -- budget (the compare page is in frontend/compare_views.py) ------------------------------------------------


@login_required
@refuse_malformed
@require_GET
def budget(request: HttpRequest, slug: str) -> HttpResponse:
    team = teams_for_user(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"no team {slug!r} among yours")
    overview = budget_overview(team)
    usage = sel.usage_by_hour(team, overview.period_start, overview.period_end)
    series = charts.budget_series(usage, period_start=overview.period_start, period_end=overview.period_end,
                                  limit_device_hours=overview.limit_device_hours,
                                  forecast_device_hours=overview.forecast_device_hours, now=timezone.now())
    return page(request, "frontend/budget.html", {"team": team, "overview": overview, "series": series})
