"""The New run form through Django's test client: every problem at once (beside its field and
in the summary), the live check answering the same as the launch, the methods it never
pre-ticks in conflict, advice that follows the form's state, and cloning a run's config
(``/runs/new/?from=<id>``)."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from django.utils import timezone

from controlplane.budgets.services import budget_set
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run
from controlplane.runs.services import run_create
from frontend.forms import NewRunForm
from frontend.new_run import advice
from workers.engines.config import RunConfig
from workers.selection.registry import REGISTRY

pytestmark = pytest.mark.django_db


def form_data(dataset, **overrides) -> dict:
    data = {"name": "form-run", "dataset": str(dataset.id), "engine": "local", "model": "tiny", "batch_size": "8",
            "group_size": "4", "steps": "5", "seed": "0", "method": ["hive", "hora"], "selectors.hora.n0": "2"}
    data.update(overrides)
    return data


def budget(team, limit: float) -> None:
    today = timezone.now().date()
    budget_set(team=team, period_start=today - dt.timedelta(days=10), period_end=today + dt.timedelta(days=20),
               limit_device_hours=limit)


def summary(page: str) -> list[str]:
    """The lines of the summary of problems at the top of the page, as text."""
    start = page.index('id="problems"')
    block = page[start:page.index("</section>", start)]
    return [html.unescape(" ".join(re.sub(r"<[^>]+>", "", item).split()))
            for item in re.findall(r"<li[^>]*>(.*?)</li>", block, flags=re.DOTALL)]


def beside(page: str, field: str) -> str:
    start = page.index(f'data-field="{field}"')
    return html.unescape(page[start:page.index("</div>", start)])


MANY = {"batch_size": "0", "steps": "x", "method": ["grpo", "rlzvp", "dapo", "hora"], "selectors.hora.n0": "9",
        "selectors.rlzvp.alpha": "99", "name": ""}


def test_every_problem_of_a_posted_form_is_listed_at_once_beside_its_field_and_at_the_top(bob, dataset, enqueued):
    response = bob.post("/runs/new/", form_data(dataset, **MANY))
    assert response.status_code == 400 and enqueued == [] and not Run.objects.exists()
    page = response.content.decode()
    lines = summary(page)
    expected = [  # in the page's order: name, main fields, methods, their parameters
        "Run name: give the run a name",
        "B (prompts per step): must be >= 1, got 0",
        "Steps: must be a whole number, got 'x'",
        "Selection methods: grpo and rlzvp both set the advantage",
        "Selection methods: dapo drops the zero-variance groups that rlzvp draws its signal from",
        "HORA n0: the probe (n0 = 9) must be smaller than N = 4",
        "RL-ZVP alpha: must be <= 10, got 99",
    ]
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert "7 problems to fix before launching" in page
    assert "must be &gt;= 1, got 0" in page and "must be >= 1, got 0" in beside(page, "batch_size")
    assert "got 'x'" in beside(page, "steps") and "smaller than N = 4" in beside(page, "selectors.hora.n0")
    assert "must be <= 10" in beside(page, "selectors.rlzvp.alpha")
    assert "both set the advantage" in beside(page, "selectors") and "choose one of them" in beside(page, "selectors")
    unreadable = bob.post("/runs/new/", form_data(dataset, **{"selectors.hora.n0": "x"})).content.decode()
    assert beside(unreadable, "selectors.hora.n0").count('class="field-error"') == 1  # said once, not twice
    assert summary(unreadable) == ["HORA n0: must be a whole number, got 'x'"]


def test_the_live_check_answers_what_the_launch_answers(bob, mallory, vera, dataset, enqueued):
    data = form_data(dataset, **MANY)
    posted = summary(bob.post("/runs/new/", data).content.decode())
    checked = bob.get("/runs/new/check/", {**data, "team": "acme"})
    assert checked.status_code == 200 and checked["Cache-Control"] == "no-store"
    problems = checked.json()["problems"]
    assert [f"{p['label']}: {p['message']}" for p in problems] == posted
    assert {p["field"] for p in problems} >= {"name", "batch_size", "steps", "selectors", "selectors.hora.n0",
                                             "selectors.rlzvp.alpha"}
    assert bob.get("/runs/new/check/", {**form_data(dataset), "team": "acme"}).json()["problems"] == []
    assert vera.get("/runs/new/check/", {**data, "team": "acme"}).status_code == 200  # a read: any member
    assert mallory.get("/runs/new/check/", {**data, "team": "acme"}).status_code == 404
    assert not Run.objects.exists()


def test_the_budget_is_listed_with_the_other_problems_and_its_fix_follows_the_state(alice, bob, acme, dataset,
                                                                                       enqueued):
    budget(acme, 1e-9)  # something left, less than any run
    page = bob.post("/runs/new/", form_data(dataset, batch_size="0")).content.decode()
    lines = summary(page)
    assert lines[0].startswith("B (prompts per step)") and lines[-1].startswith("Budget: the run is forecast")
    assert "lower steps, B or N" in lines[-1] and "ask an admin of the team to raise its budget" in lines[-1]
    alone = bob.post("/runs/new/", form_data(dataset))
    assert alone.status_code == 409 and "exceeds" in alone.content.decode()  # the budget alone: a conflict
    assert "raise the team's budget (Budget page)" in summary(alice.post("/runs/new/", form_data(dataset))
                                                               .content.decode())[-1]
    budget(acme, 0.0)  # nothing left: no smaller run fits, so lowering steps is no advice
    spent = summary(bob.post("/runs/new/", form_data(dataset)).content.decode())[-1]
    assert "no device-hours left this period" in spent and "lower steps" not in spent


def test_the_form_never_starts_with_a_conflict_and_says_what_ticking_a_method_would_break(bob, dataset):
    response = bob.get("/runs/new/")
    form = response.context["form"]
    ticked = {m.name: {} for m in form.methods if m.checked}
    assert ticked and RunConfig.problems({"selectors": ticked}) == []
    for method in form.methods:  # every method ticked alone on the blank form, as the form shows it, composes
        shown = {f.name.rsplit(".", 1)[1]: f.value for f in method.params if f.value is not None}
        assert RunConfig.problems({"selectors": {method.name: shown}}) == [], method.name
    # HORA starts at the paper's quarter of N (8 of 32) there, while its own default stays SELECTORS.md's 8
    [n0] = [f for m in form.methods if m.name == "hora" for f in m.params if f.name == "selectors.hora.n0"]
    assert (n0.default, n0.value) == (8, 2)
    notes = {m.name: m.note for m in form.methods}
    assert "grpo and rlzvp both set the advantage" in notes["rlzvp"]  # grpo is ticked
    assert all(not notes[n] for n in ("dapo", "greso", "hive", "hora", "lze")), notes
    answer = bob.get("/runs/new/check/", {**form_data(dataset, method=["lze"]), "team": "acme"}).json()
    notes = {m["name"]: m["note"] for m in answer["methods"]}
    assert "rlzvp would shape nothing" in notes["rlzvp"] and not notes["grpo"]


def test_a_method_the_engine_cannot_run_is_shown_disabled_with_the_reason(bob, dataset, monkeypatch):
    from dataclasses import dataclass
    from typing import ClassVar

    from workers.selection.decisions import Layer
    from workers.selection.params import MethodParams
    from workers.selection.selector import Selector

    @dataclass(frozen=True)
    class SignParams(MethodParams):
        method: ClassVar[str] = "sign"

    class Sign(Selector):
        name, label, help, layers, Params = "sign", "Sign", "the sign of GRPO's advantage", frozenset(
            {Layer.ADVANTAGE}), SignParams

    monkeypatch.setitem(REGISTRY, "sign", Sign)
    local = bob.get("/runs/new/check/", {**form_data(dataset, method=["hive"]), "team": "acme"}).json()
    assert all(not m["unavailable"] for m in local["methods"])
    verl = bob.get("/runs/new/check/", {**form_data(dataset, engine="verl", device="cpu", method=["hive"]),
                                        "team": "acme"}).json()
    reasons = {m["name"]: m["unavailable"] for m in verl["methods"]}
    assert "the verl engine cannot run it" in reasons["sign"] and "use the local engine" in reasons["sign"]
    assert all(not reasons[n] for n in ("grpo", "dapo", "greso", "hive", "hora", "rlzvp", "lze"))
    ticked = bob.post("/runs/new/", form_data(dataset, engine="verl", device="cpu", method=["sign"]))
    assert ticked.status_code == 400 and "not run by the verl engine" in beside(ticked.content.decode(),
                                                                                 "selectors.sign")


def test_each_advice_shows_only_in_its_state(acme, dataset, run):
    form = NewRunForm.blank()
    base = RunConfig.from_mapping({})
    said = advice(form, base, forecast=0.5, dataset=dataset, baseline=None)
    assert said == []  # grpo ticked, no cap, no baseline: nothing to say
    for m in form.methods:
        m.checked = False
    assert any("No method is ticked" in a for a in advice(form, base, forecast=0.5, dataset=dataset, baseline=None))
    form = NewRunForm.blank()
    capped = RunConfig.from_mapping({"max_device_hours": 0.25})
    assert any("below its forecast of 0.5000" in a for a in advice(form, capped, forecast=0.5, dataset=dataset,
                                                                     baseline=None))
    assert advice(form, capped, forecast=0.2, dataset=dataset, baseline=None) == []  # the cap is above
    assert advice(form, base, forecast=0.5, dataset=dataset, baseline=run) == []  # same dataset
    other = dataset_import_builtin(team=acme, task="mul", n_train=8, n_test=2, name="mul-small")
    mismatch = advice(form, base, forecast=0.5, dataset=other, baseline=run)
    assert len(mismatch) == 1 and "trained on add-small, this run on mul-small" in mismatch[0]


def test_lzes_advice_in_the_form_follows_its_pruner(bob, dataset):
    def said(**params) -> str:
        data = form_data(dataset, method=["lze", "rlzvp"], **{f"selectors.lze.{k}": v for k, v in params.items()})
        problems = bob.get("/runs/new/check/", {**data, "team": "acme"}).json()["problems"]
        return next(p["message"] for p in problems if p["field"] == "selectors.lze.backward")

    assert "keeps its pruner" not in said(prune="false") and "turn LZE's pruner on" in said(prune="false")
    assert "LZE keeps its pruner" in said(prune="true")


# -- clone a run's config into the form --------------------------------------------------------------------------

def posted(form: NewRunForm) -> dict:
    """What a browser posts for the form as the page shows it."""
    return {k: v if len(v) > 1 else v[0] for k, v in form.as_data().lists()}


def test_a_clone_prefills_every_field_and_launches_the_same_config(bob, acme, dataset, run, enqueued):
    source = run_create(team=acme, dataset=dataset, name="source", baseline=run, config={
        "steps": 7, "batch_size": 6, "group_size": 8, "seed": 11, "max_device_hours": 2.5, "lr": 1 / 3 * 1e-3,
        "max_new_tokens": 12, "selectors": {"hive": {"lam": 0.7, "gate": "band"}, "hora": {"n0": 3},
                                            "rlzvp": {"alpha": 0.2}, "lze": {"prune": True, "backward": False}}})
    response = bob.get(f"/runs/new/?from={source.id}")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'value="source (copy)"' in page and "A copy of the settings of" in page
    form = response.context["form"]
    assert form.problems == [] and form.dataset == str(dataset.id) and form.baseline == str(run.id)
    assert {m.name for m in form.methods if m.checked} == {"hive", "hora", "rlzvp", "lze"}
    assert 'name="selectors.hive.lam" value="0.7"' in page and 'name="max_device_hours" value="2.5"' in page
    assert 'name="lr" value="0.0003333333333333333"' in page  # exact: the clone keeps the value itself
    assert "(default 0.0833333)" in page and "0.08333333" not in page  # a default still reads short
    bob.post(f"/runs/new/?from={source.id}", posted(form))
    clone = Run.objects.get(name="source (copy)")
    assert clone.config == source.config and clone.dataset == source.dataset and clone.baseline == run


def test_a_clone_keeps_a_methods_own_default_where_the_blank_form_starts_elsewhere(bob, acme, dataset, enqueued):
    # The blank form starts HORA's n0 at a quarter of N; a run that left n0 to HORA's default (8, at
    # N = 32) must clone as 8, not as the form's start.
    source = run_create(team=acme, dataset=dataset, name="wide", config={"group_size": 32, "selectors": {"hora": {}}})
    form = bob.get(f"/runs/new/?from={source.id}").context["form"]
    [n0] = [f for m in form.methods if m.name == "hora" for f in m.params if f.name == "selectors.hora.n0"]
    assert n0.shown == "8"
    bob.post(f"/runs/new/?from={source.id}", posted(form))
    assert Run.objects.get(name="wide (copy)").config == source.config


def test_tags_are_set_in_the_form_listed_with_the_other_problems_and_carried_by_a_clone(bob, acme, dataset, enqueued):
    bad = bob.post("/runs/new/", form_data(dataset, tags="ok, tag!, " + "x" * 40, batch_size="0"))
    page = bad.content.decode()
    lines = summary(page)
    tags = [line for line in lines if line.startswith("Tags: ")]
    assert len(tags) == 2 and "'tag!' is not a tag" in tags[0] and "'" + "x" * 40 + "' is not a tag" in tags[1]
    assert lines.index(tags[0]) < next(i for i, line in enumerate(lines) if line.startswith("B (prompts")), lines
    assert "'tag!' is not a tag" in beside(page, "tags")  # beside its input too
    assert not Run.objects.filter(name="form-run").exists()  # nothing launched while any problem stands
    bob.post("/runs/new/", form_data(dataset, tags="Ablation lr.1e-3, ablation"))
    source = Run.objects.get(name="form-run")
    assert source.tags == ["ablation", "lr.1e-3"]  # lowercased, once each, as the API stores them
    form = bob.get(f"/runs/new/?from={source.id}").context["form"]
    assert form.tags == "ablation, lr.1e-3"
    bob.post(f"/runs/new/?from={source.id}", posted(form))
    assert Run.objects.get(name="form-run (copy)").tags == ["ablation", "lr.1e-3"]


def test_another_teams_run_or_no_run_cannot_be_cloned(bob, mallory, run):
    assert mallory.get(f"/runs/new/?from={run.id}").status_code == 404
    for raw in ("999999", "x", "-1", ""):
        assert bob.get(f"/runs/new/?from={raw}").status_code == 404


def test_a_config_that_no_longer_validates_prefills_what_it_can_and_lists_the_problems(bob, acme, globex, dataset,
                                                                                      run, enqueued):
    stale = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="old-data")
    source = run_create(team=acme, dataset=stale, name="stale", config={"steps": 9, "group_size": 8})
    # what changed since: the dataset left the team, a method is gone, a parameter is out of
    # today's range, and two methods that once composed conflict now
    Run.objects.filter(pk=source.pk).update(config={**source.config, "selectors": {
        "gone": {}, "hora": {"n0": 5000}, "grpo": {}, "rlzvp": {"alpha": 0.3}}})
    stale.team = globex
    stale.save()
    response = bob.get(f"/runs/new/?from={source.id}")
    assert response.status_code == 200
    form = response.context["form"]
    assert form.value_of("steps") == 9 and form.value_of("group_size") == 8 and form.name == "stale (copy)"
    assert {m.name for m in form.methods if m.checked} == {"hora", "grpo"}  # never a conflict ticked
    lines = summary(response.content.decode())
    assert any(line.startswith("Dataset: stale trained on old-data, which is no longer") for line in lines), lines
    assert any("'gone', which this server no longer has" in line for line in lines)
    assert any(line.startswith("Selection methods: RL-ZVP is left unticked: grpo and rlzvp") for line in lines)
    assert any(line.startswith("HORA n0: must be <= 1024, got 5000") for line in lines), lines
    assert "5000" in beside(response.content.decode(), "selectors.hora.n0")


def test_the_api_lists_every_problem_of_a_config_at_once(bob, acme, dataset):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(username="bob"))
    response = client.post("/api/runs/", {"team": "acme", "dataset": dataset.id, "name": "api-run", "config": {
        "batch_size": 0, "selectors": {"grpo": {}, "rlzvp": {"alpha": 99}, "dapo": {}, "hora": {"n0": 0}}}},
        format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert len(errors["selectors"]) == 2 and {"batch_size", "selectors.rlzvp.alpha", "selectors.hora.n0"} <= set(errors)
    nowhere = client.post("/api/runs/", {"team": "acme", "dataset": 10**9, "name": "api-run", "config": {
        "batch_size": 0, "selectors": {"grpo": {}, "rlzvp": {}}}}, format="json")
    assert nowhere.status_code == 400 and {"dataset", "batch_size", "selectors"} <= set(nowhere.json()["errors"])
    assert not Run.objects.exists()
