"""Runs: launch (201, 400 with field errors, 409 over budget), list, detail, cancel."""

from __future__ import annotations

import pytest

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_claim
from controlplane.telemetry.services import evaluation_ingest, run_finished_ingest, step_ingest
from tests.controlplane.api.helpers import TINY_CONFIG, budget_for, step_record


def launch(client, team, dataset, name="r", config=None):
    return client.post("/api/runs/", {"team": team.slug, "dataset": dataset.id, "name": name,
                                      "config": TINY_CONFIG if config is None else config}, format="json")


@pytest.mark.django_db
def test_a_valid_launch_is_stored_queued_and_enqueued_once_on_commit(bob, team_a, dataset_a, enqueued,
                                                                       django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answer = launch(bob, team_a, dataset_a, name="first")
    assert answer.status_code == 201
    body = answer.json()
    run = Run.objects.get(pk=body["id"])
    assert enqueued == [run.id]
    assert body["status"] == "queued" and body["name"] == "first" and body["team"] == "acme"
    assert body["dataset"] == dataset_a.id and body["created_by"] == "bob"
    assert body["methods"] == ["greso"]
    assert body["steps_planned"] == 3 and body["steps_completed"] == 0
    assert body["config"]["batch_size"] == 4 and body["config"]["steps"] == 3
    assert body["forecast_device_hours"] > 0
    assert body["totals"]["rollouts_generated"] == 0


@pytest.mark.django_db
def test_a_bad_config_is_refused_with_every_field_error_and_nothing_is_stored(bob, team_a, dataset_a, enqueued):
    answer = launch(bob, team_a, dataset_a, config={"batch_size": 0, "steps": "many", "lr": -1, "bogus": 1,
                                                    "selectors": {"nosuch": {}}})
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert {"batch_size", "steps", "lr", "bogus", "selectors"} <= set(errors)
    assert all(isinstance(m, list) and all(isinstance(x, str) for x in m) for m in errors.values())
    assert "whole number" in errors["steps"][0]
    assert not Run.objects.exists()
    assert enqueued == []


@pytest.mark.django_db
def test_a_config_that_names_its_own_dataset_file_is_refused(bob, team_a, dataset_a):
    answer = launch(bob, team_a, dataset_a, config={**TINY_CONFIG, "dataset": "/etc/passwd"})
    assert answer.status_code == 400
    assert "dataset" in answer.json()["errors"]


@pytest.mark.django_db
def test_missing_request_fields_are_field_errors(bob):
    answer = bob.post("/api/runs/", {"config": []}, format="json")
    assert answer.status_code == 400
    assert {"team", "dataset", "name", "config"} <= set(answer.json()["errors"])


@pytest.mark.django_db
def test_a_run_the_team_cannot_afford_is_refused_with_409_naming_forecast_and_remainder(bob, team_a, dataset_a,
                                                                                          enqueued):
    budget_for(team_a, limit_device_hours=0.01)
    answer = launch(bob, team_a, dataset_a, config={"steps": 1000, "batch_size": 64, "group_size": 8})
    assert answer.status_code == 409
    body = answer.json()
    assert body["remaining_device_hours"] == pytest.approx(0.01)
    assert body["forecast_device_hours"] > body["remaining_device_hours"]
    assert "device-hours" in body["detail"]
    assert not Run.objects.exists()
    assert enqueued == []
    # A run small enough still fits (no warm-up: the tiny model's 4,900 supervised steps are priced).
    assert launch(bob, team_a, dataset_a, config={**TINY_CONFIG, "warmup_steps": 0,
                                                  "warmup_noise_steps": 0}).status_code == 201


@pytest.mark.django_db
def test_the_run_list_filters_by_status_method_dataset_and_team(alice, team_a, dataset_a):
    hive = launch(alice, team_a, dataset_a, name="h", config={**TINY_CONFIG, "selectors": {"hive": {}}}).json()
    greso = launch(alice, team_a, dataset_a, name="g").json()
    alice.post(f"/api/runs/{greso['id']}/cancel/")

    def ids(**query):
        return [r["id"] for r in alice.get("/api/runs/", query).json()["results"]]

    assert ids() == [greso["id"], hive["id"]]  # newest first
    assert ids(method="hive") == [hive["id"]]
    assert ids(method="greso") == [greso["id"]]
    assert ids(status="cancelled") == [greso["id"]]
    assert ids(status="queued") == [hive["id"]]
    assert ids(dataset=dataset_a.id, team="acme") == [greso["id"], hive["id"]]
    assert ids(team="globex") == []
    assert alice.get("/api/runs/", {"status": "exploded"}).status_code == 400


@pytest.mark.django_db
def test_the_run_detail_carries_progress_attempts_evaluation_and_cumulative_savings(alice, run_a):
    run_claim(run_id=run_a.id, worker="test:1")
    step_ingest(run_id=run_a.id, record=step_record(0, ["k0", "k1"], skipped=["k2", "k3"], device_seconds=2.0))
    step_ingest(run_id=run_a.id, record=step_record(1, ["k0", "k2", "k3"], skipped=["k1"], device_seconds=4.0))
    evaluation_ingest(run_id=run_a.id, record={"step": 2, "k": 4, "pass_at_1": 0.25, "pass_at_k": 0.5, "prompts": 4})

    body = alice.get(f"/api/runs/{run_a.id}/").json()
    assert body["status"] == "running"
    assert body["steps_completed"] == 2 and body["steps_planned"] == 3
    assert body["attempts_count"] == 1
    assert [a["number"] for a in body["attempts"]] == [1] and body["attempts"][0]["worker"] == "test:1"
    assert body["latest_evaluation"]["step"] == 2 and body["latest_evaluation"]["pass_at_1"] == 0.25
    totals = body["totals"]
    assert totals["steps"] == 2
    assert totals["rollouts_generated"] == 2 * 2 + 3 * 2
    assert totals["rollouts_uniform"] == 4 * 2 + 4 * 2
    assert totals["rollout_savings"] == pytest.approx(1 - 10 / 16)
    assert totals["device_hours"] == pytest.approx(6.0 / 3600)
    assert totals["device_hours_saved"] == pytest.approx(totals["uniform_device_hours"] - totals["device_hours"])
    assert totals["uniform_device_hours"] > totals["device_hours"]


@pytest.mark.django_db
def test_a_run_without_steps_has_no_savings_rather_than_zero_savings(alice, run_a):
    totals = alice.get(f"/api/runs/{run_a.id}/").json()["totals"]
    assert totals["steps"] == 0 and totals["rollouts_uniform"] == 0
    assert totals["rollout_savings"] is None  # nothing to compare against (accounting.saving: one convention)
    assert totals["rollout_savings_vs_dynamic_sampling"] is None and totals["backward_savings_vs_mixed"] is None
    assert totals["effective_share_of_generated"] is None


@pytest.mark.django_db
def test_cancelling_a_queued_run_ends_it_at_once(bob, run_a):
    answer = bob.post(f"/api/runs/{run_a.id}/cancel/")
    assert answer.status_code == 202
    assert answer.json()["status"] == "cancelled" and answer.json()["cancel_requested"] is True


@pytest.mark.django_db
def test_cancelling_a_running_run_asks_it_to_stop_at_the_next_step(bob, run_a):
    run_claim(run_id=run_a.id, worker="test:1")
    answer = bob.post(f"/api/runs/{run_a.id}/cancel/")
    assert answer.status_code == 202
    assert answer.json()["status"] == "starting" and answer.json()["cancel_requested"] is True


@pytest.mark.django_db
def test_cancelling_a_finished_run_is_a_409(bob, run_a):
    run_finished_ingest(run_id=run_a.id, status=RunStatus.SUCCEEDED, reason="done")
    answer = bob.post(f"/api/runs/{run_a.id}/cancel/")
    assert answer.status_code == 409
    assert "succeeded" in answer.json()["detail"]
    run_a.refresh_from_db()
    assert run_a.status == RunStatus.SUCCEEDED and not run_a.cancel_requested


# -- the savings yardsticks --------------------------------------------------------------------------


def test_run_totals_sum_each_yardstick_over_the_steps_that_have_it():
    from workers.selection.accounting import RunTotals

    totals = RunTotals(steps=3, rollouts_generated=12, rollouts_uniform=16, rollouts_effective=8, rollouts_trained=8,
                       device_seconds=6.0, uniform_device_seconds=8.0, rollouts_generated_with_estimate=6,
                       rollouts_dynamic_sampling=16.0, backward_tokens=60, backward_tokens_mixed=75)
    assert totals.rollout_savings == pytest.approx(1 - 12 / 16)
    assert totals.rollout_savings_vs_dynamic_sampling == pytest.approx(1 - 6 / 16)
    assert totals.backward_savings_vs_mixed == pytest.approx(1 - 60 / 75)
    nothing = RunTotals(steps=1, rollouts_generated=4, rollouts_uniform=4, rollouts_effective=4, rollouts_trained=4,
                        device_seconds=1.0, uniform_device_seconds=1.0)
    assert nothing.rollout_savings_vs_dynamic_sampling is None and nothing.backward_savings_vs_mixed is None


@pytest.mark.django_db
def test_the_run_detail_carries_the_cumulative_savings_against_each_yardstick(alice, run_a):
    from workers.selection.accounting import YARDSTICKS

    run_claim(run_id=run_a.id, worker="test:1")
    # step 0: 4 rollouts where dynamic sampling would roll out 10; 20 backward tokens of the mixed groups' 25
    step_ingest(run_id=run_a.id, record=step_record(0, ["k0", "k1"], extra_summary={
        "rollouts_dynamic_sampling": 10.0, "backward_tokens": 20, "backward_tokens_mixed": 25}))
    # step 1: no estimate of the mixed rate yet (NaN): its 6 rollouts count for neither side
    step_ingest(run_id=run_a.id, record=step_record(1, ["k0", "k1", "k2"], extra_summary={
        "rollouts_dynamic_sampling": float("nan"), "backward_tokens": 30, "backward_tokens_mixed": 30}))
    # step 2: 2 rollouts against 6
    step_ingest(run_id=run_a.id, record=step_record(2, ["k3"], extra_summary={
        "rollouts_dynamic_sampling": 6.0, "backward_tokens": 10, "backward_tokens_mixed": 20}))

    body = alice.get(f"/api/runs/{run_a.id}/").json()
    totals = body["totals"]
    assert totals["rollouts_dynamic_sampling"] == pytest.approx(16.0)
    assert totals["rollout_savings_vs_dynamic_sampling"] == pytest.approx(1 - (4 + 2) / (10 + 6))
    assert totals["backward_tokens"] == 60 and totals["backward_tokens_mixed"] == 75
    assert totals["backward_savings_vs_mixed"] == pytest.approx(1 - 60 / 75)
    assert totals["rollout_savings"] == 0.0  # nothing skipped: uniform GRPO's count exactly
    # A GRESO run is measured against uniform GRPO and dynamic sampling, in words.
    assert body["yardsticks"] == [{"name": "uniform", "against": YARDSTICKS["uniform"]},
                                  {"name": "dynamic_sampling", "against": YARDSTICKS["dynamic_sampling"]}]
    steps = alice.get(f"/api/runs/{run_a.id}/steps/").json()["results"]
    assert [s["rollouts_dynamic_sampling"] for s in steps] == [10.0, None, 6.0]


@pytest.mark.django_db
def test_savings_without_a_yardstick_estimate_are_null(alice, team_a, dataset_a):
    from controlplane.runs.services import run_create

    run = run_create(team=team_a, dataset=dataset_a, name="grpo", config={**TINY_CONFIG, "selectors": {"grpo": {}}})
    run_claim(run_id=run.id, worker="test:1")
    step_ingest(run_id=run.id, record=step_record(0, ["k0", "k1"]))
    body = alice.get(f"/api/runs/{run.id}/").json()
    assert body["totals"]["rollout_savings_vs_dynamic_sampling"] is None
    assert body["totals"]["backward_savings_vs_mixed"] is None
    assert [y["name"] for y in body["yardsticks"]] == ["uniform"]


def test_the_api_says_each_savings_formula_and_baseline_in_words():
    from controlplane.api.serializers import RunTotalsSerializer, StepSummarySerializer
    from workers.selection.accounting import YARDSTICKS

    totals = RunTotalsSerializer().fields
    assert YARDSTICKS["dynamic_sampling"] in totals["rollout_savings_vs_dynamic_sampling"].help_text
    assert "1 - rollouts generated / rollouts dynamic sampling would generate" in \
        totals["rollout_savings_vs_dynamic_sampling"].help_text
    assert YARDSTICKS["backward_mixed"] in totals["backward_savings_vs_mixed"].help_text
    assert YARDSTICKS["uniform"] in totals["rollout_savings"].help_text
    step = StepSummarySerializer().fields
    assert step["backward_savings_vs_mixed"].help_text.startswith("1 - backward_tokens / backward_tokens_mixed")


# -- baselines -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_names_a_baseline_of_its_own_team_at_launch(bob, team_a, dataset_a, run_a):
    answer = bob.post("/api/runs/", {"team": "acme", "dataset": dataset_a.id, "name": "vs-greso",
                                     "config": TINY_CONFIG, "baseline": run_a.id}, format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["baseline"] == run_a.id
    assert Run.objects.get(pk=answer.json()["id"]).baseline == run_a
    assert bob.get(f"/api/runs/{run_a.id}/").json()["baseline"] is None


@pytest.mark.django_db
def test_another_teams_run_is_refused_as_a_baseline(bob, team_a, dataset_a, run_b):
    from controlplane.runs.services import run_create
    from workers.engines.config import ConfigError

    answer = bob.post("/api/runs/", {"team": "acme", "dataset": dataset_a.id, "name": "borrowed",
                                     "config": TINY_CONFIG, "baseline": run_b.id}, format="json")
    assert answer.status_code == 400
    assert answer.json()["errors"]["baseline"] == [f"no run {run_b.id} in team acme"]
    # The service refuses it too, whoever calls it.
    with pytest.raises(ConfigError) as refused:
        run_create(team=team_a, dataset=dataset_a, name="borrowed", config=dict(TINY_CONFIG), baseline=run_b)
    assert refused.value.as_dict() == {"baseline": ["no such run in this team"]}
    assert not Run.objects.filter(name="borrowed").exists()
    # ... and so does the model's validation, which the admin's forms call.
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="same team"):
        Run(team=team_a, dataset=dataset_a, name="borrowed", config={}, baseline=run_b).clean()
