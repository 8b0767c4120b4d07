"""The New run form's checks, one function for the page's post and for the live check the page
asks while the user ticks methods (``check``): every problem at once (the form's own fields,
RunConfig's fields and the composition of the methods by workers/selection's rules, the
team's budget), the methods the chosen engine cannot run, what ticking each other method
would break, and advice that follows the form's state (``advice``).

The browser never holds a rule: it sends the form and shows what comes back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from controlplane.accounts.models import Role, Team
from controlplane.budgets.selectors import budget_status
from controlplane.runs.models import Run
from controlplane.runs.tags import tags_clean
from frontend import selectors as sel
from frontend.forms import NewRunForm, composition_added
from workers.engines.config import ConfigError, RunConfig

RUN_NAME_MAX = Run._meta.get_field("name").max_length


@dataclass
class Checked:
    """What ``check`` found: the config mapping for run_create, every error by input, the
    chosen dataset and baseline (None when none or refused) and the cost figures."""

    config: dict[str, Any]
    errors: dict[str, list[str]]
    dataset: Any
    baseline: Run | None
    forecast_device_hours: float
    remaining_device_hours: float | None
    tags: list[str]  # as stored (controlplane.runs.tags), [] when none or refused


def check(form: NewRunForm, data: QueryDict, *, team: Team, datasets: list, user: Any,
          known: dict[str, list[str]] | None = None) -> Checked:
    """Bind ``data`` to ``form`` and find every problem; the form then shows them beside their
    inputs and in its summary (``form.problems``), with its advice and method states.
    ``known``: problems the caller found already (a clone's), listed with the rest."""
    config, errors = form.bind(data)
    # RunConfig judges every field that converted (one that did not already has its error).
    judged = {k: v for k, v in config.items() if k not in errors}
    unreadable = set(errors)  # a parameter left out for it takes its default: no second word on it
    for key, messages in (known or {}).items():
        errors.setdefault(key, []).extend(messages)
    dataset = next((d for d in datasets if str(d.id) == form.dataset), None)
    if dataset is None and "dataset" not in errors:
        errors.setdefault("dataset", []).append(
            "choose one of the team's datasets" if datasets else
            "the team has no dataset yet: upload one (API: POST /api/datasets/), then open New run again")
    if not form.name:
        errors.setdefault("name", []).append("give the run a name")
    elif len(form.name) > RUN_NAME_MAX:
        errors.setdefault("name", []).append(f"at most {RUN_NAME_MAX} characters, got {len(form.name)}")
    try:
        tags = tags_clean(form.tags)
    except ConfigError as exc:
        tags = []
        errors.setdefault("tags", []).extend(e.message for e in exc.errors)
    baseline = sel.team_run(team, form.baseline) if form.baseline else None
    if form.baseline and baseline is None:
        errors.setdefault("baseline", []).append("choose one of the team's runs, or none")
    for problem in RunConfig.problems(judged):
        if problem.field in unreadable:
            continue
        errors.setdefault(problem.field, []).append(problem.message)
    priced = _priced(judged)
    # the figures run_create checks; listed with the other problems rather than after them
    forecast, remaining = sel.launch_forecast_figures(team, config=priced, dataset=dataset)
    if remaining is not None and forecast > remaining:
        errors.setdefault("budget", []).append(budget_problem(team, forecast, remaining, user=user))
    form.place_errors(errors)
    method_states(form, engine=str(form.value_of("engine")), batch_size=form.value_of("batch_size"),
                  group_size=form.value_of("group_size"))
    form.advice = advice(form, priced, forecast=forecast, dataset=dataset, baseline=baseline)
    return Checked(config, errors, dataset, baseline, forecast, remaining, tags)


def _priced(mapping: dict[str, Any]) -> RunConfig:
    """The config the cost is forecast for: the form's when it makes one, else without its
    methods (uniform GRPO's cost: selection only saves), else the defaults."""
    try:
        return sel.priced_config(mapping)
    except ConfigError:
        return RunConfig.from_mapping({})


def budget_problem(team: Team, forecast: float, remaining: float, *, user: Any) -> str:
    """Why the team's budget cannot pay for the run, and what this user can do about it: with
    nothing left no smaller run fits, and only an admin can raise the budget."""
    from controlplane.accounts.selectors import user_can

    status = budget_status(team)
    admin = user_can(user, team, Role.ADMIN)
    raise_it = ("raise the team's budget (Budget page)" if admin else
                "ask an admin of the team to raise its budget")
    if remaining <= 0:
        until = (f" until the period ends on {(status.period_end - dt.timedelta(days=1)).isoformat()}"
                 if status.period_end else "")
        return (f"the team has no device-hours left this period (the budget is spent or booked by active runs): "
                f"no run can launch{until}; {raise_it}, or wait for the next period")
    return (f"the run is forecast to use {forecast:.4f} device-hours, but the team has {remaining:.4f} left this "
            f"period: lower steps, B or N (or the response length, model size, evaluation or warm-up), or {raise_it}")


def method_states(form: NewRunForm, *, engine: str, batch_size: Any, group_size: Any) -> None:
    """Each method: why the chosen engine cannot run it (the page shows it disabled), and for a
    method not ticked, what ticking it would break given the methods ticked now."""
    from workers.engines.verl.methods import unavailable

    names = [m.name for m in form.methods]
    blocked = unavailable(dict.fromkeys(names)) if engine == "verl" else {}
    ticked = {m.name: {p.label: p.value for p in m.params if p.value is not None and not p.errors}
              for m in form.methods if m.checked and m.name not in blocked}
    for method in form.methods:
        method.unavailable = f"the verl engine cannot run it: {blocked[method.name]}" if method.name in blocked else ""
        method.note = ""
        if not method.checked and not method.unavailable and ticked:
            shown = {p.label: p.value for p in method.params if p.value is not None and not p.errors}
            added = composition_added(ticked, method.name, shown, batch_size=batch_size, group_size=group_size)
            if added:
                method.note = "with the methods ticked now: " + added[0]


def advice(form: NewRunForm, config: RunConfig, *, forecast: float | None, dataset: Any,
           baseline: Run | None) -> list[str]:
    """Hints on the form as it stands, each shown only in the state it speaks of."""
    out: list[str] = []
    if not any(m.checked for m in form.methods):
        out.append("No method is ticked: the run trains with uniform GRPO, the yardstick the methods are "
                   "measured against.")
    cap = config.max_device_hours
    if forecast is not None and cap > 0 and cap < forecast:
        out.append(f"The run's own cap (max_device_hours = {cap:g}) is below its forecast of {forecast:.4f} "
                   "device-hours: it will stop before its last step. Raise the cap, or set it to 0 for none.")
    if baseline is not None and dataset is not None and baseline.dataset_id != dataset.id:
        out.append(f"The baseline {baseline.name} trained on {baseline.dataset.name}, this run on {dataset.name}: "
                   "the cost to reach its Pass@1 would compare accuracy on different prompts. Choose a baseline "
                   "on the same dataset, or none.")
    return out
