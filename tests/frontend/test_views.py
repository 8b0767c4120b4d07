"""The dashboard's pages and chart endpoints through Django's test client: what each shows,
who may see it, and that the cursors return only what is new."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from controlplane.budgets.selectors import forecast_device_hours
from controlplane.budgets.services import budget_set
from controlplane.runs.models import Run, RunStatus
from controlplane.telemetry.services import run_finished_ingest, step_ingest
from tests.frontend.conftest import KEYS, train
from tests.frontend.helpers import step_record
from workers.engines.config import RunConfig

pytestmark = pytest.mark.django_db


def budget(team, limit: float):
    today = timezone.now().date()
    return budget_set(team=team, period_start=today - dt.timedelta(days=10), period_end=today + dt.timedelta(days=20),
                      limit_device_hours=limit)


# -- sign in, team switcher -------------------------------------------------------------------------------


def test_pages_send_a_stranger_to_sign_in(client, run):
    for url in ("/", f"/runs/{run.id}/", f"/runs/{run.id}/audit/", "/runs/new/", "/compare/", "/teams/acme/budget/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert client.get(f"/data/runs/{run.id}/series/").status_code == 302


def test_sign_in_with_the_right_password_opens_the_runs_and_sign_out_ends_the_session(client, acme):
    assert b"Wrong user name or password" in client.post("/accounts/login/", {"username": "alice",
                                                                             "password": "nope"}).content
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-pw"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert b"Runs" in client.get("/").content
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_the_team_switcher_changes_the_team_a_member_works_in(alice, acme, globex, run):
    from controlplane.accounts.services import membership_set

    membership_set(team=globex, username="alice", role="viewer")
    assert b"edge-run" in alice.get("/").content
    assert alice.post("/team/", {"team": "globex", "next": "/"}).status_code == 302
    page = alice.get("/").content.decode()
    assert "edge-run" not in page and "Globex" in page
    assert alice.post("/team/", {"team": "nope"}).status_code == 404


# -- runs list -------------------------------------------------------------------------------------------


def test_the_runs_list_shows_status_methods_progress_savings_accuracy_and_hours(alice, run):
    page = alice.get("/").content.decode()
    assert "edge-run" in page and "status-running" in page
    for label in ("HIVE", "HORA", "RL-ZVP", "LZE"):
        assert f">{label}<" in page
    assert "6/20" in page  # progress
    assert "33.3%" in page  # rollouts saved: 16 of 24 a step, written as the run page writes it
    assert "0.180" in page  # latest Pass@1, step 4
    assert "0.0033" in page  # 6 steps x 2 s


def test_the_runs_list_filters_by_status_method_and_dataset(alice, run, acme, dataset, enqueued):
    from controlplane.runs.services import run_create

    run_create(team=acme, dataset=dataset, name="plain-grpo", config={"steps": 2, "selectors": {"grpo": {}}})
    assert "plain-grpo" in alice.get("/").content.decode()
    by_method = alice.get("/", {"method": "hora"}).content.decode()
    assert "edge-run" in by_method and "plain-grpo" not in by_method
    by_status = alice.get("/", {"status": "queued"}).content.decode()
    assert "plain-grpo" in by_status and "edge-run" not in by_status
    assert "No runs match" in alice.get("/", {"dataset": dataset.id + 99}).content.decode()


# -- new run ---------------------------------------------------------------------------------------------


def form_data(dataset, **overrides) -> dict:
    data = {"name": "form-run", "dataset": str(dataset.id), "engine": "local", "model": "tiny", "batch_size": "8",
            "group_size": "4", "steps": "5", "seed": "0", "method": ["hive", "hora"], "selectors.hora.n0": "2"}
    data.update(overrides)
    return data


def test_the_new_run_form_offers_every_method_with_its_parameters_defaults_and_help(bob, dataset):
    page = bob.get("/runs/new/").content.decode()
    for label in ("GRPO", "DAPO dynamic sampling", "GRESO", "HIVE", "HORA", "RL-ZVP", "LZE"):
        assert f"> {label}</label>" in page
    # HORA starts at a quarter of the default N (its own default, 8 of N = 32, shows as the default)
    assert 'name="selectors.hora.n0" value="2"' in page and "(default 8)" in page
    assert "probe rollouts per prompt before allocation" in page
    from workers.engines.config import RunConfig

    default_b = {d["name"]: d["default"] for d in RunConfig.describe()}["batch_size"]
    assert f'name="batch_size" value="{default_b}"' in page and "B: prompts per optimizer step" in page
    assert ">Launch run</button>" in page
    assert "Cost forecast" in page and "no budget limit" in page


def test_a_newly_registered_method_is_offered_by_the_form_with_its_parameters(bob, dataset, monkeypatch):
    from dataclasses import dataclass, field
    from typing import ClassVar

    from workers.selection.params import MethodParams
    from workers.selection.registry import REGISTRY
    from workers.selection.selector import Selector

    @dataclass(frozen=True)
    class ToyParams(MethodParams):
        method: ClassVar[str] = "toy"
        depth: int = field(default=3, metadata={"help": "how deep the toy looks"})

    class Toy(Selector):
        name, label, help, layers, Params = ("toy", "Toy method", "a method the form never heard of",
                                             frozenset(), ToyParams)

    monkeypatch.setitem(REGISTRY, "toy", Toy)
    page = bob.get("/runs/new/").content.decode()
    assert '<input type="checkbox" name="method" value="toy"> Toy method</label>' in page
    assert "a method the form never heard of" in page
    assert 'name="selectors.toy.depth" value="3"' in page and "how deep the toy looks" in page
    assert page.index("> GRPO</label>") < page.index("> LZE</label>") < page.index("> Toy method</label>")


def test_launching_through_the_form_stores_the_run_and_opens_its_page(bob, dataset, enqueued,
                                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = bob.post("/runs/new/", form_data(dataset))
    run = Run.objects.get(name="form-run")
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.id}/"
    assert run.status == RunStatus.QUEUED and enqueued == [run.id]
    assert run.config["selectors"] == {"hive": {}, "hora": {"n0": 2}}
    assert run.config["batch_size"] == 8 and run.config["steps"] == 5


def test_the_same_form_posted_twice_launches_one_run(bob, dataset, enqueued, django_capture_on_commit_callbacks):
    """A double click or a resubmit after a lost answer posts the page's key again: the run the
    first post launched is shown, no second run is stored or sent."""
    page = bob.get("/runs/new/").content.decode()
    key = page.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    assert len(key) == 32 and key != bob.get("/runs/new/").content.decode().split(
        'name="idempotency_key" value="', 1)[1].split('"', 1)[0]  # a fresh key per page
    with django_capture_on_commit_callbacks(execute=True):
        first = bob.post("/runs/new/", form_data(dataset, idempotency_key=key))
        second = bob.post("/runs/new/", form_data(dataset, idempotency_key=key))
    run = Run.objects.get(name="form-run")
    assert first["Location"] == second["Location"] == f"/runs/{run.id}/" and enqueued == [run.id]
    other = bob.post("/runs/new/", form_data(dataset, idempotency_key=key, name="changed-run"))
    assert other.status_code == 409 and f"this form already launched run {run.id}" in other.content.decode()
    assert not Run.objects.filter(name="changed-run").exists()


def test_a_verl_run_on_this_machines_cpu_is_offered_and_launched_through_the_form(bob, dataset, enqueued,
                                                                                  django_capture_on_commit_callbacks):
    page = bob.get("/runs/new/").content.decode()
    device = page[page.index('data-field="device"'):]
    device = device[:device.index("</div>")]
    assert '<option value="cpu">cpu</option>' in device
    assert "cpu runs verl&#x27;s own training loop on this machine" in device and "before spending GPU-hours" in device
    assert page.index('data-field="engine"') < page.index('data-field="device"') < page.index("More settings")
    with django_capture_on_commit_callbacks(execute=True):
        response = bob.post("/runs/new/", form_data(dataset, engine="verl", device="cpu", method=["grpo"]))
    run = Run.objects.get(name="form-run")
    assert response.status_code == 302 and enqueued == [run.id]
    assert run.engine == "verl" and run.config["device"] == "cpu" and run.config["model"] == "tiny"


def test_config_errors_appear_beside_their_fields(bob, dataset, enqueued):
    response = bob.post("/runs/new/", form_data(dataset, batch_size="0", **{"selectors.hora.n0": "9"}, steps="x"))
    assert response.status_code == 400 and enqueued == []
    page = response.content.decode()
    # A value the form cannot read and the config's own problems come together, each once.
    assert 'data-field="steps"' in page and "must be a whole number, got &#x27;x&#x27;" in page
    assert page.count("must be a whole number, got &#x27;x&#x27;") == 2  # beside the field and in the summary

    def field_block(name: str) -> str:
        start = page.index(f'data-field="{name}"')
        return page[start:page.index("</div>", start)]

    assert "must be &gt;= 1, got 0" in field_block("batch_size")
    assert "the probe (n0 = 9) must be smaller than N = 4" in field_block("selectors.hora.n0")
    assert 'value="0"' in field_block("batch_size")  # the posted value stays in the form
    assert not Run.objects.filter(name="form-run").exists()


def test_an_impossible_method_combination_is_reported_beside_the_methods(bob, dataset, enqueued):
    page = bob.post("/runs/new/", form_data(dataset, method=["greso", "hive"])).content.decode()
    assert 'data-field="selectors"' in page and "greso and hive both filter prompts from history" in page


def test_a_launch_over_the_budget_is_refused_with_the_forecast(bob, acme, dataset, enqueued):
    budget(acme, 1e-9)
    response = bob.post("/runs/new/", form_data(dataset))
    assert response.status_code == 409 and enqueued == []
    assert "lower steps, B or N (or the response length" in response.content.decode()
    assert "exceeds" in response.content.decode()


def test_a_run_names_a_baseline_of_its_team_through_the_form_and_never_another_teams(bob, run, globex, dataset,
                                                                                      enqueued):
    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.services import run_create

    foreign = run_create(team=globex, dataset=dataset_import_builtin(team=globex, task="add", n_train=8, n_test=2),
                         name="globex-run", config={"steps": 2})
    page = bob.get("/runs/new/").content.decode()
    assert f'<option value="{run.id}">edge-run #{run.id}</option>' in page and "globex-run" not in page
    response = bob.post("/runs/new/", form_data(dataset, baseline=str(foreign.id)))
    assert response.status_code == 400 and not Run.objects.filter(name="form-run").exists()
    page = response.content.decode()
    block = page[page.index('data-field="baseline"'):]
    assert "choose one of the team&#x27;s runs, or none" in block[:block.index("</div>")]
    bob.post("/runs/new/", form_data(dataset, baseline=str(run.id)))
    launched = Run.objects.get(name="form-run")
    assert launched.baseline == run
    assert f'baseline <a href="/runs/{run.id}/">edge-run #{run.id}</a>' in bob.get(
        f"/runs/{launched.id}/").content.decode()


def test_a_viewer_sees_the_form_but_cannot_launch(vera, dataset, enqueued):
    page = vera.get("/runs/new/").content.decode()
    assert "launching needs the launcher role" in page and "disabled>Launch run" in page
    assert vera.post("/runs/new/", form_data(dataset)).status_code == 403 and enqueued == []


def test_the_forecast_endpoint_prices_the_whole_form_as_the_launch_does(bob, acme, dataset):
    """The cost line is the figure run_create checks: every field of the form counts, not only
    B x N x steps (a long response, a wide model, evaluation and warm-up cost too)."""
    budget(acme, 1.0)
    small = {"batch_size": 8, "group_size": 4, "steps": 100}

    def ask(**fields):
        return bob.get("/data/forecast/", {"team": "acme", "dataset": dataset.id, **small, **fields})

    data = ask().json()
    expected = forecast_device_hours(team=acme, config=RunConfig.from_mapping(small), dataset=dataset)
    assert data["forecast_device_hours"] == pytest.approx(expected) and expected > 0
    assert data["remaining_device_hours"] == pytest.approx(1.0) and data["fits"] is (expected <= 1.0)
    for name, value in (("max_new_tokens", 16), ("model_dim", 192), ("eval_k", 16), ("warmup_steps", 9000),
                        ("steps", 200), ("batch_size", 16)):
        assert ask(**{name: value}).json()["forecast_device_hours"] > expected, name
    verl_cpu = ask(engine="verl", device="cpu").json()  # the rate of that kind of run
    assert verl_cpu["forecast_device_hours"] > expected
    assert bob.get("/data/forecast/", {"team": "globex"}).status_code == 404
    refused = ask(steps="x")
    assert refused.status_code == 400 and "steps" in refused.json()["errors"]
    out_of_range = ask(max_new_tokens=10**7)
    assert out_of_range.status_code == 400 and "max_new_tokens" in out_of_range.json()["errors"]


# -- the run page ------------------------------------------------------------------------------------------


def test_the_run_page_has_the_three_sections_and_a_panel_per_method(bob, run):
    page = bob.get(f"/runs/{run.id}/").content.decode()
    for heading in ("<h2>Rollout savings</h2>", "<h2>Learning edge</h2>", "<h2>Audit trail</h2>"):
        assert heading in page
    for chart in ("chart-rollouts", "chart-shares", "chart-acc-rollouts", "chart-acc-hours", "chart-reward",
                  "chart-seconds", "chart-edge", "chart-heatmap", "chart-hive-kept", "chart-hive-entropy",
                  "chart-hora-allocation", "chart-lze-energy", "chart-lze-pool", "chart-rlzvp-shaped", "chart-actions"):
        assert f'id="{chart}"' in page
    assert "chart-greso-" not in page and "chart-dapo-" not in page
    assert 'src="/static/frontend/vendor/plotly.min.js"' in page and "Cancel run" in page
    assert "kept by HIVE stage 2" in page  # newest decisions
    assert 'id="run-job"' not in page  # trained in the worker: no job outside it


def run_page_config(page: str) -> dict:
    import json
    import re

    return json.loads(
        re.search(r'<script id="run-page" type="application/json">(.*?)</script>', page, re.DOTALL).group(1))


def test_each_method_panel_appears_with_its_element_id_caption_and_width(bob, run):
    import re

    from workers.selection.ledger import Bucket
    from workers.selection.registry import REGISTRY

    page = bob.get(f"/runs/{run.id}/").content.decode()
    sections = re.findall(r'<div class="method-panel" data-method="([a-z0-9_]+)">', page)
    assert sections == [m for m in REGISTRY if m in run.config["selectors"] and REGISTRY[m].panels]
    for method in sections:
        for panel in REGISTRY[method].panels:
            figure = re.search(r'<figure( class="wide-fig")?><figcaption>([^<]*)</figcaption><div class="chart" '
                               f'id="chart-{method}-{panel.key}"></div></figure>', page)
            assert figure, f"chart-{method}-{panel.key}"
            assert figure.group(2) == panel.title and bool(figure.group(1)) == panel.wide
    config = run_page_config(page)
    assert [p["id"] for p in config["panels"]] == [f"chart-{m}-{p.key}" for m in sections
                                                   for p in REGISTRY[m].panels]
    # the views drawn from their own endpoint find it by view name
    assert {p["view"] for p in config["panels"]} - {"steps"} <= set(config["urls"])
    assert bob.get(config["urls"]["hora_allocation"]).status_code == 200
    assert [b["name"] for b in config["buckets"]] == list(Bucket.NAMES)  # the edge map's traces, in Bucket order
    assert config["legends"]["rollouts_generated_total"] == "rollouts generated (cumulative)"


def test_a_newly_registered_methods_panels_show_on_the_run_page_and_its_series_are_sent(bob, run, request):
    from dataclasses import dataclass
    from typing import ClassVar

    from workers.selection.decisions import Layer
    from workers.selection.panels import Panel, Series
    from workers.selection.params import MethodParams
    from workers.selection.registry import register, unregister
    from workers.selection.selector import Selector

    @dataclass(frozen=True)
    class ToyParams(MethodParams):
        method: ClassVar[str] = "toy"

    class Toy(Selector[ToyParams]):
        name, label, help, layers, Params = "toy", "Toy method", "for the test", frozenset({Layer.UPDATE}), ToyParams
        panels = (Panel("energy", "Mean energy per trained rollout", (
            Series("mean energy per trained rollout", metric="lze/energy_mean", per="rollouts_trained"),)),)

    register(Toy)
    request.addfinalizer(lambda: unregister("toy"))
    Run.objects.filter(id=run.id).update(config={**run.config, "selectors": {**run.config["selectors"], "toy": {}}})
    page = bob.get(f"/runs/{run.id}/").content.decode()
    assert '<h3>Toy method</h3>' in page
    assert '<figcaption>Mean energy per trained rollout</figcaption><div class="chart" id="chart-toy-energy">' in page
    series = run_page_config(page)["panels"][-1]["series"]
    assert series == [{"label": "mean energy per trained rollout", "source": "metric", "axis": "left",
                       "column": "lze/energy_mean / rollouts_trained", "style": "line"}]
    data = bob.get(f"/data/runs/{run.id}/series/").json()
    assert data["metrics"]["lze/energy_mean / rollouts_trained"] == [pytest.approx(0.4 / 16)] * 6


def test_a_run_of_a_method_without_panels_has_no_panel_section(bob, acme, dataset, enqueued):
    from controlplane.runs.services import run_create

    plain = run_create(team=acme, dataset=dataset, name="plain", config={"steps": 2, "selectors": {"grpo": {}}})
    page = bob.get(f"/runs/{plain.id}/").content.decode()
    assert 'class="method-panel"' not in page and run_page_config(page)["panels"] == []


def tile_texts(page: str) -> dict[str, str]:
    """{yardstick: the tile's text} of the run page's yardstick tiles."""
    import html
    import re

    return {m.group(1): html.unescape(re.sub(r"<[^>]+>", " ", m.group(2))) for m in re.finditer(
        r'<div class="tile yardstick" data-yardstick="([a-z_]+)"(.*?)</div>', page)}


def test_the_run_page_shows_a_tile_for_each_yardstick_that_applies(bob, run, acme, dataset, enqueued):
    from controlplane.runs.services import run_claim, run_create
    from workers.selection.accounting import YARDSTICKS

    # HIVE and LZE pruning claim savings against dynamic sampling; HORA and RL-ZVP spend uniform
    # GRPO's budget: the effective share stands in their tile, with no saving claimed.
    tiles = tile_texts(bob.get(f"/runs/{run.id}/").content.decode())
    assert list(tiles) == ["uniform", "dynamic_sampling", "uniform_budget"]
    assert "33.3%" in tiles["uniform"] and "33.3% fewer rollouts than uniform GRPO" in tiles["uniform"]
    assert "Filters (HIVE, LZE pruner) vs dynamic sampling" in tiles["dynamic_sampling"]
    assert "–" in tiles["dynamic_sampling"]  # no estimate reported yet: it says when it appears
    assert ("not yet: appears once the filters' 5% audit draws hold 32 uniformly drawn groups"
            in tiles["dynamic_sampling"])
    assert "HORA, RL-ZVP at equal rollouts" in tiles["uniform_budget"]
    assert "no saving claimed" in tiles["uniform_budget"]
    assert "RL-ZVP shapes" in tiles["uniform_budget"]  # what counts as effective
    lze = run_create(team=acme, dataset=dataset, name="lze-backward",
                     config={"steps": 4, "batch_size": 4, "group_size": 4, "selectors": {"lze": {}}})
    run_claim(run_id=lze.id, worker="t")
    for step in range(2):
        step_ingest(run_id=lze.id, record=step_record(step, KEYS[:4], extra_summary={
            "backward_tokens": 40, "backward_tokens_mixed": 64}))
    page = bob.get(f"/runs/{lze.id}/").content.decode()
    tiles = tile_texts(page)
    assert list(tiles) == ["uniform", "backward_mixed"]
    assert "LZE backward selection: backward tokens" in tiles["backward_mixed"] and "37.5%" in tiles["backward_mixed"]
    assert "37.5% fewer backward tokens than GRPO without zero-advantage groups" in tiles["backward_mixed"]
    assert YARDSTICKS["backward_mixed"] in tiles["backward_mixed"]
    assert '<p class="formula-text">1 - response tokens in the update / response tokens of the mixed groups' in page
    assert "1 - 80 / 128 = 37.5%" in tiles["backward_mixed"]  # the formula with the run's numbers
    assert 'id="tile-effective"' in page  # its own tile: no uniform-budget method here
    # the same tiles, as JSON for the live updates
    live = bob.get(f"/data/runs/{lze.id}/savings/").json()
    assert live["tiles"][1]["sentence"] == "37.5% fewer backward tokens than GRPO without zero-advantage groups"
    assert live["effective"]["element"] == "tile-effective"


def test_the_run_page_names_the_job_of_a_run_trained_outside_the_worker(bob, run):
    from controlplane.runs.models import Attempt

    Attempt.objects.filter(run=run).update(job_id="edgeplane-run7-a1-1764000000")
    page = bob.get(f"/runs/{run.id}/").content.decode()
    assert '<code id="run-job">edgeplane-run7-a1-1764000000</code>, attempt 1' in page


def test_plotly_comes_from_the_bundled_copy_as_a_static_file():
    from django.contrib.staticfiles import finders

    path = finders.find("frontend/vendor/plotly.min.js")  # frontend.staticfiles.PlotlyFinder
    body = Path(path).read_bytes()
    assert len(body) > 1_000_000 and b"plotly.js" in body[:2000]
    assert finders.find("frontend/vendor/other.js") is None


def test_another_team_cannot_open_the_run_nor_its_data(mallory, run):
    for url in (f"/runs/{run.id}/", f"/runs/{run.id}/audit/", f"/runs/{run.id}/prompt/?key={KEYS[0]}",
                f"/data/runs/{run.id}/series/", f"/data/runs/{run.id}/edge/", f"/data/runs/{run.id}/heatmap/"):
        assert mallory.get(url).status_code == 404, url
    assert mallory.post(f"/runs/{run.id}/cancel/").status_code == 404
    assert "edge-run" not in mallory.get("/").content.decode()


def test_a_launcher_cancels_through_the_button_and_a_viewer_may_not(bob, vera, run):
    assert vera.post(f"/runs/{run.id}/cancel/").status_code == 403
    assert "Cancel run" not in vera.get(f"/runs/{run.id}/").content.decode()
    response = bob.post(f"/runs/{run.id}/cancel/", follow=True)
    run.refresh_from_db()
    assert run.cancel_requested and "stops at its next step boundary" in response.content.decode()
    assert "Cancel run" not in response.content.decode()


# -- chart endpoints -----------------------------------------------------------------------------------------


def test_the_series_endpoint_returns_only_new_steps_with_running_totals(bob, run):
    url = f"/data/runs/{run.id}/series/"
    first = bob.get(url).json()
    assert first["step"] == [0, 1, 2, 3, 4, 5] and first["next_after"] == 5 and first["has_more"] is False
    assert first["status"] == "running" and first["steps_completed"] == 6
    assert first["rollouts_generated_total"][-1] == 6 * 16 and first["rollouts_uniform_total"][-1] == 6 * 24
    assert first["metrics"]["hive/stage1_kept"] == [4.0] * 6 and "lze/pruned_pool" in first["metrics"]
    assert bob.get(url, {"after": 5}).json()["step"] == []
    train(run, range(6, 8))
    newer = bob.get(url, {"after": 5}).json()
    assert newer["step"] == [6, 7] and newer["next_after"] == 7
    assert newer["rollouts_generated_total"] == [7 * 16, 8 * 16]  # continued from the cursor
    assert bob.get(url, {"after": "x"}).status_code == 400


def test_cursor_endpoints_page_and_say_has_more(bob, run, monkeypatch):
    monkeypatch.setattr("frontend.selectors.STEP_PAGE", 4)
    url = f"/data/runs/{run.id}/series/"
    first = bob.get(url).json()
    assert first["step"] == [0, 1, 2, 3] and first["has_more"] is True
    assert bob.get(url, {"after": first["next_after"]}).json()["step"] == [4, 5]


def test_the_status_says_finished_once_the_run_ends(bob, run):
    run_finished_ingest(run_id=run.id, status="succeeded", reason="trained")
    data = bob.get(f"/data/runs/{run.id}/series/", {"after": 5}).json()
    assert data["status"] == "succeeded" and data["finished"] is True and data["step"] == []


def test_the_evaluations_endpoint_gives_accuracy_against_rollouts_and_hours(bob, run):
    data = bob.get(f"/data/runs/{run.id}/evaluations/").json()
    assert data["step"] == [0, 2, 4] and data["next_after"] == 4
    assert data["rollouts_generated_total"] == [0, 32, 64]
    assert data["pass_at_1"] == [pytest.approx(0.1), pytest.approx(0.14), pytest.approx(0.18)]
    assert bob.get(f"/data/runs/{run.id}/evaluations/", {"after": 4}).json()["step"] == []


def test_the_actions_endpoint_counts_decisions_per_step(bob, run):
    data = bob.get(f"/data/runs/{run.id}/actions/").json()
    assert data["step"] == [0, 1, 2, 3, 4, 5]
    assert data["counts"]["hive.kept"] == [4] * 6 and data["counts"]["hive.skipped"] == [2] * 6
    assert data["counts"]["lze.selected"] == [2] * 6 and data["counts"]["hora.allocated"] == [4] * 6
    assert bob.get(f"/data/runs/{run.id}/actions/", {"after": 5}).json()["step"] == []


def test_the_hora_endpoint_gives_allocation_by_probe_successes(bob, run):
    data = bob.get(f"/data/runs/{run.id}/hora/").json()
    assert data["successes"] == [0, 1, 2] and data["step"] == [0, 1, 2, 3, 4, 5]
    # step 0: successes 0, 1, 2, 3 -> probe hits 0, 1, 2, 2; extra = 2 - hits
    assert [row[0] for row in data["mean_extra"]] == [2.0, 1.0, 0.0]
    assert [row[0] for row in data["prompts"]] == [1, 1, 2]


def test_the_energy_endpoint_gives_the_newest_steps_distribution(bob, run):
    data = bob.get(f"/data/runs/{run.id}/energy/").json()
    assert data["at_step"] == 5 and sum(data["selected"]) == 2 and sum(data["not_selected"]) == 2
    assert bob.get(f"/data/runs/{run.id}/energy/", {"step": 0}).json()["at_step"] == 0


def test_the_edge_endpoint_places_prompts_at_a_step_or_now(bob, run):
    at_zero = bob.get(f"/data/runs/{run.id}/edge/", {"step": 0}).json()
    assert at_zero["at_step"] == 0 and at_zero["shown"] == 4 and at_zero["total"] == 4
    assert at_zero["buckets"]["too_hard"]["key"] == [KEYS[0]]  # 0 of 4 at step 0
    assert at_zero["buckets"]["edge"]["x"] == [0.25, 0.5, 0.75]
    now = bob.get(f"/data/runs/{run.id}/edge/").json()
    assert now["at_step"] is None and now["total"] == 4  # the prompts observed; skipped ones have no state
    assert now["last_step"] == 5


def test_the_heatmap_endpoint_sends_columns_after_the_cursor_with_row_labels_first(bob, run):
    url = f"/data/runs/{run.id}/heatmap/"
    first = bob.get(url).json()
    assert first["rows"] == KEYS[:4]  # the prompts observed, most active first (a tie: by key)
    assert first["step"] == [0, 1, 2, 3, 4, 5] and first["next_after"] == 5
    assert first["z"][0][0] == 0.0 and first["z"][3][0] == 0.75
    again = bob.get(url, {"after": 5, "ranked_through": first["ranked_through"]}).json()
    assert again["step"] == [] and "rows" not in again


def test_the_recent_endpoint_lists_the_newest_decisions_first(bob, run):
    results = bob.get(f"/data/runs/{run.id}/recent/").json()["results"]
    assert len(results) == 20 and results[0]["step"] == 5 and results[-1]["step"] == 4


# -- audit trail, prompt, compare, budget --------------------------------------------------------------------------


def test_the_audit_trail_filters_by_prompt_method_action_and_steps(bob, run):
    page = bob.get(f"/runs/{run.id}/audit/", {"prompt": KEYS[1], "method": "hora"}).content.decode()
    assert page.count("allocated by HORA") == 6 and "kept by HIVE" not in page
    assert f'href="/runs/{run.id}/prompt/?key=edgeplane/add%3A5"' in page
    skipped = bob.get(f"/runs/{run.id}/audit/", {"action": "skipped", "step_min": 2, "step_max": 3}).content.decode()
    assert skipped.count("skipped by HIVE stage 1") == 4
    bad = bob.get(f"/runs/{run.id}/audit/", {"step_min": 4, "step_max": 1, "action": "zap"})
    assert bad.status_code == 400 and "step_max must be &gt;= step_min" in bad.content.decode()


def test_the_audit_trail_pages_with_a_keyset_cursor(bob, run, monkeypatch):
    monkeypatch.setattr("frontend.selectors.AUDIT_PAGE", 10)
    first = bob.get(f"/runs/{run.id}/audit/", {"method": "hive"}).context
    assert len(first["rows"]) == 10 and first["next_url"]
    seen = [r["id"] for r in first["rows"]]
    url = first["next_url"]
    while url:
        context = bob.get(f"/runs/{run.id}/audit/{url}").context
        seen += [r["id"] for r in context["rows"]]
        url = context["next_url"]
    assert len(seen) == len(set(seen)) == 6 * 6  # 4 kept + 2 skipped a step


def test_the_prompt_page_shows_text_answer_history_decisions_and_other_runs(bob, run, acme, dataset, enqueued):
    from controlplane.runs.services import run_claim, run_create

    other = run_create(team=acme, dataset=dataset, name="other-run", config={"steps": 3, "selectors": {"grpo": {}}})
    run_claim(run_id=other.id, worker="t")
    train(other, range(1))
    response = bob.get(f"/runs/{run.id}/prompt/", {"key": KEYS[0]})
    page = response.content.decode()
    assert "edgeplane/add:4" in page and "Answer:" in page
    assert page.count("kept by HIVE stage 2") == 6 and page.count("allocated by HORA") == 6
    series = response.context["series"]
    assert series["step"] == [0, 1, 2, 3, 4, 5] and series["pass_rate"][:2] == [0.0, 0.25]
    assert response.context["changes"][0] == {"step": 0, "from": "unseen", "to": "too_hard"}
    # buckets and layers read as words, not as the names stored
    assert ">too hard</span>" in page and "pre rollout" in page
    assert not any(name in page for name in (">too_hard<", ">pre_rollout<", ">post_rollout<"))
    assert "other-run" in page
    assert bob.get(f"/runs/{run.id}/prompt/", {"key": "nope"}).status_code == 404


def test_compare_overlays_runs_and_tabulates_their_savings(bob, run, acme, dataset, enqueued):
    from controlplane.runs.services import run_claim, run_create

    other = run_create(team=acme, dataset=dataset, name="other-run", config={"steps": 3, "selectors": {"grpo": {}}})
    run_claim(run_id=other.id, worker="t")
    train(other, range(2))
    response = bob.get("/compare/", {"run": [run.id, other.id, 99999]})
    assert [r.id for r in response.context["chosen"]] == [run.id, other.id]
    overlay = bob.get("/data/compare/", {"run": [run.id, other.id, 99999]}).json()  # the charts' data
    assert [s["label"] for s in overlay["evaluations"]] == [f"edge-run #{run.id}", f"other-run #{other.id}"]
    table = response.context["table"]
    assert table[0]["rollout_savings"] == pytest.approx(1 / 3) and table[1]["steps"] == 2
    assert table[0]["rollout_savings_pct"] == "33.3%"  # percentages on the page, like everywhere else
    assert table[0]["device_hours_savings_pct"].endswith("%") and "Device-hours saved vs uniform GRPO" in (
        response.content.decode())
    assert "Pick two or more runs" in bob.get("/compare/").content.decode()


def test_compare_shows_the_cost_to_reach_the_baselines_final_pass_at_1(bob, acme, dataset, enqueued):
    from controlplane.runs.services import run_create
    from controlplane.telemetry.models import Evaluation

    def launched(name: str, evaluations: list[tuple[int, float, int, float]], baseline=None) -> Run:
        run = run_create(team=acme, dataset=dataset, name=name, config={"steps": 20}, baseline=baseline)
        for step, pass_at_1, rollouts, seconds in evaluations:
            Evaluation.objects.create(run=run, step=step, k=4, pass_at_1=pass_at_1, pass_at_k=0.9, prompts=4,
                                      rollouts_generated_total=rollouts, device_seconds_total=seconds)
        return run

    # The baseline peaks at 0.55 and ends at 0.5 (the target), first reached at step 10.
    grpo = launched("grpo", [(0, 0.1, 0, 0.0), (10, 0.5, 1000, 100.0), (15, 0.55, 1500, 150.0),
                             (20, 0.5, 2000, 200.0)])
    fast = launched("fast", [(0, 0.1, 0, 0.0), (10, 0.45, 400, 50.0), (15, 0.52, 600, 75.0)], baseline=grpo)
    slow = launched("slow", [(0, 0.1, 0, 0.0), (20, 0.4, 2000, 250.0)])  # names none: the first compared
    response = bob.get("/compare/", {"run": [grpo.id, fast.id, slow.id]})
    reach = {r["run"].name: r for r in response.context["reach"]}
    assert list(reach) == ["fast", "slow"]  # the first run compared is the reference
    assert reach["fast"]["named"] is True and reach["slow"]["named"] is False
    assert reach["fast"]["target_pass_at_1"] == 0.5 and reach["fast"]["target_step"] == 20
    assert reach["fast"]["cost"] == {"reached": True, "step": 15, "rollouts_generated_total": 600,
                                     "device_seconds_total": 75.0}
    assert reach["fast"]["baseline_cost"]["rollouts_generated_total"] == 1000
    assert reach["fast"]["rollouts_share"] == 0.6
    assert reach["slow"]["cost"]["reached"] is False
    page = response.content.decode()
    table = page[page.index('id="reach"'):page.index("</table>", page.index('id="reach"'))]
    fast_row = table[table.index(f'data-run="{fast.id}"'):]
    fast_row = fast_row[:fast_row.index("</tr>")]
    assert ">0.500<" in fast_row and ">15<" in fast_row and "600" in fast_row and "75.0" in fast_row
    assert "60% of the baseline" in fast_row and "1000" in fast_row and "100.0" in fast_row
    slow_row = table[table.index(f'data-run="{slow.id}"'):]
    assert "not reached" in slow_row[:slow_row.index("</tr>")]
    # A named baseline counts even when it is not among the runs compared.
    alone = bob.get("/compare/", {"run": [fast.id]}).context["reach"]
    assert [(r["run"].name, r["baseline"].name) for r in alone] == [("fast", "grpo")]


def test_the_budget_page_shows_use_forecast_breakdowns_and_warnings(bob, acme, run):
    page = bob.get("/teams/acme/budget/").content.decode()
    assert "no budget this period" in page and "80% of the budget" not in page
    assert "edge-run" in page and ">bob<" in page
    budget(acme, 0.004)  # 6 steps x 2 s = 0.00333 h: 83%
    page = bob.get("/teams/acme/budget/").content.decode()
    assert "80% of the budget used" in page and "Budget exhausted" not in page
    budget(acme, 0.003)
    assert "Budget exhausted" in bob.get("/teams/acme/budget/").content.decode()
    assert bob.get("/teams/globex/budget/").status_code == 404


def test_a_run_of_another_users_team_is_not_in_compare(mallory, run):
    assert mallory.get("/compare/", {"run": [run.id]}).context["chosen"] == []


def test_the_form_shows_floats_short_and_reads_them_back_as_their_defaults(bob, dataset, enqueued):
    page = bob.get("/runs/new/").content.decode()
    assert 'name="selectors.hive.target_easy" value="0.0833333"' in page
    bob.post("/runs/new/", form_data(dataset, method=["hive"], **{"selectors.hive.target_easy": "0.0833333",
                                                                 "selectors.hive.lam": "0.5", "lr": "0.0005"}))
    run = Run.objects.get(name="form-run")
    assert run.config["selectors"] == {"hive": {"lam": 0.5}} and run.config["lr"] == 0.0005
