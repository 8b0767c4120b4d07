"""Relaunch and resume as services (controlplane/runs/services.py) and through the API: what
each refuses and why, what the budget holds back, and that no step is lost or counted twice.
The end-to-end resume through a real Celery worker and the local engine is in
test_worker_flow.py (cancel, then resume from the checkpoint)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.budgets.selectors import budget_committed_device_hours, forecast_device_hours
from controlplane.budgets.services import BudgetExceeded, budget_set
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import (
    RunStateError,
    relaunch_name,
    resume_forecast_device_hours,
    run_claim,
    run_create,
    run_relaunch,
    run_resume,
)
from controlplane.telemetry.models import Evaluation, PromptObservation, SelectionDecision, StepSummary
from controlplane.telemetry.services import (
    checkpoint_ingest,
    evaluation_ingest,
    run_finished_ingest,
    step_ingest,
)
from tests.frontend.helpers import CONFIG, step_record
from workers.engines.config import ConfigError

KEYS = [f"edgeplane/add:{i}" for i in range(4, 10)]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(fast_passwords, enqueued) -> None:
    """Cheap passwords; launches recorded, not sent."""


@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")


def stopped(acme, dataset, *, trained: int, checkpoint: int | None, status: str = "cancelled", steps: int = 20,
            name: str = "edge-run") -> Run:
    """A run that trained ``trained`` steps (evaluations every 2), saved a checkpoint at
    ``checkpoint`` (none: None) and ended ``status``."""
    bob = get_user_model().objects.get(username="bob")
    run = run_create(team=acme, dataset=dataset, name=name, config={**CONFIG, "steps": steps}, user=bob,
                     tags=["sweep"])
    run_claim(run_id=run.id, worker="test:1")
    for step in range(trained):
        step_ingest(run_id=run.id, record=step_record(step, KEYS[:4], skipped=KEYS[4:]))
        if step % 2 == 0:
            evaluation_ingest(run_id=run.id, record={"step": step, "k": 4, "pass_at_1": 0.1, "pass_at_k": 0.2,
                                                     "prompts": 4})
    if checkpoint is not None:
        checkpoint_ingest(run_id=run.id, step=checkpoint, attempt=1)
    run_finished_ingest(run_id=run.id, status=status, reason="test", attempt=1)
    run.refresh_from_db()
    return run


def budget(team, limit: float):
    today = timezone.now().date()
    return budget_set(team=team, period_start=today - dt.timedelta(days=1), period_end=today + dt.timedelta(days=20),
                      limit_device_hours=limit)


# -- relaunch -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "relaunched"), [
    ("grpo", "grpo (relaunch)"), ("grpo (relaunch)", "grpo (relaunch 2)"), ("grpo (relaunch 9)", "grpo (relaunch 10)"),
    ("x (relaunch) y", "x (relaunch) y (relaunch)"), ("a" * 200, "a" * 189 + " (relaunch)"),
])
def test_a_relaunch_is_named_after_its_run(name, relaunched):
    assert relaunch_name(name) == relaunched and len(relaunch_name(name)) <= 200


def test_relaunch_copies_config_dataset_baseline_and_tags_into_a_new_queued_run(acme, dataset, enqueued,
                                                                                 django_capture_on_commit_callbacks):
    first = stopped(acme, dataset, trained=3, checkpoint=2)
    base = stopped(acme, dataset, trained=1, checkpoint=None, name="base")
    Run.objects.filter(pk=first.pk).update(baseline=base)
    first.refresh_from_db()
    alice = get_user_model().objects.get(username="alice")
    with django_capture_on_commit_callbacks(execute=True):
        new = run_relaunch(run=first, user=alice)
    assert new.pk != first.pk and new.status == RunStatus.QUEUED and enqueued == [new.pk]
    assert (new.name, new.config, new.dataset_id, new.baseline_id, new.tags, new.created_by) == (
        "edge-run (relaunch)", first.config, first.dataset_id, base.pk, ["sweep"], alice)
    assert new.steps_completed == 0 and new.attempts_count == 0 and new.forecast_device_hours > 0
    first.refresh_from_db()
    assert first.status == RunStatus.CANCELLED  # the old run is left as it was


def test_relaunch_goes_through_the_launch_budget_check(acme, dataset):
    first = stopped(acme, dataset, trained=1, checkpoint=None)
    budget(acme, 1e-9)
    with pytest.raises(BudgetExceeded):
        run_relaunch(run=first)
    assert Run.objects.count() == 1


def test_relaunch_of_a_config_todays_rules_refuse_says_so(acme, dataset):
    first = stopped(acme, dataset, trained=1, checkpoint=None)
    Run.objects.filter(pk=first.pk).update(config={**first.config, "batch_size": -1})
    first.refresh_from_db()
    with pytest.raises(ConfigError, match="batch_size"):
        run_relaunch(run=first)


# -- resume -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["cancelled", "failed", "budget_stopped"])
def test_resume_requeues_from_the_checkpoint_and_drops_the_steps_after_it(acme, dataset, enqueued, status,
                                                                          django_capture_on_commit_callbacks):
    run = stopped(acme, dataset, trained=7, checkpoint=4, status=status)
    bob = get_user_model().objects.get(username="bob")
    with django_capture_on_commit_callbacks(execute=True):
        resumed = run_resume(run=run, user=bob)
    assert resumed.status == RunStatus.QUEUED and enqueued == [run.pk]
    assert resumed.steps_completed == 4 and resumed.finished_at is None and not resumed.cancel_requested
    assert "resumed by bob" in resumed.status_reason and "checkpoint at step 4 of 20" in resumed.status_reason
    # Steps 4-6 were trained after the checkpoint: the engine trains them again, so their records go
    assert sorted(StepSummary.objects.filter(run=run).values_list("step", flat=True)) == [0, 1, 2, 3]
    assert not PromptObservation.objects.filter(run=run, step__gte=4).exists()
    assert not SelectionDecision.objects.filter(run=run, step__gte=4).exists()
    assert sorted(Evaluation.objects.filter(run=run).values_list("step", flat=True)) == [0, 2, 4]
    # the next claim is a new attempt; the replayed step 4 replaces, never adds
    attempt = run_claim(run_id=run.pk, worker="test:2")
    assert attempt.number == 2
    for step in range(4, 20):
        step_ingest(run_id=run.pk, record=step_record(step, KEYS[:4], skipped=KEYS[4:]), attempt=2)
    assert list(StepSummary.objects.filter(run=run).order_by("step").values_list("step", flat=True)) == list(range(20))
    assert run.usage.filter(kind="step").count() == 20
    assert Run.objects.get(pk=run.pk).steps_completed == 20


def test_the_budget_holds_back_only_what_the_remaining_steps_need(acme, dataset):
    run = stopped(acme, dataset, trained=10, checkpoint=10, steps=20)
    whole = forecast_device_hours(team=acme, config=run.config, dataset=dataset)  # at today's measured rate
    half = forecast_device_hours(team=acme, config={**run.config, "steps": 10}, dataset=dataset)
    rest = resume_forecast_device_hours(run)
    assert 0 < rest <= half < whole  # half the steps, and no warm-up (the checkpoint holds the model)
    used = sum(run.usage.values_list("device_seconds", flat=True)) / 3600.0
    assert budget_committed_device_hours(acme) == 0.0  # a stopped run holds nothing back
    run_resume(run=run)
    assert budget_committed_device_hours(acme) == pytest.approx(rest)
    assert Run.objects.get(pk=run.pk).forecast_device_hours == pytest.approx(used + rest)


def test_resume_is_refused_when_the_rest_does_not_fit_the_budget(acme, dataset):
    run = stopped(acme, dataset, trained=10, checkpoint=10)
    used = sum(run.usage.values_list("device_seconds", flat=True)) / 3600.0
    budget(acme, used + resume_forecast_device_hours(run) * 0.5)
    with pytest.raises(BudgetExceeded):
        run_resume(run=run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.steps_completed == 10
    budget(acme, used + resume_forecast_device_hours(run) * 1.5)  # the budget grew: it fits
    assert run_resume(run=run).status == RunStatus.QUEUED


@pytest.mark.parametrize(("trained", "checkpoint", "status", "words"), [
    (3, None, "cancelled", "no checkpoint to resume from: it stopped after 3 steps"),
    (3, None, "failed", "relaunch it to start over"),
    (6, 6, "succeeded", "succeeded: it trained all 6 steps, so there is nothing left to resume"),
    (6, 6, "cancelled", "last checkpoint is at its final step 6"),
])
def test_resume_refuses_saying_why_and_what_to_do(acme, dataset, trained, checkpoint, status, words):
    run = stopped(acme, dataset, trained=trained, checkpoint=checkpoint, status=status, steps=6)
    with pytest.raises(RunStateError, match=words.replace("(", r"\(")):
        run_resume(run=run)
    after = Run.objects.get(pk=run.pk)
    assert after.status == status and after.steps_completed == trained
    assert StepSummary.objects.filter(run=run).count() == trained  # nothing dropped on a refusal


def test_an_active_or_lost_run_cannot_be_resumed(acme, dataset):
    queued = run_create(team=acme, dataset=dataset, name="q", config=dict(CONFIG))
    with pytest.raises(RunStateError, match="is queued: only a cancelled, failed or budget-stopped run"):
        run_resume(run=queued)
    Run.objects.filter(pk=queued.pk).update(status=RunStatus.LOST, last_checkpoint_step=2)
    with pytest.raises(RunStateError, match="requeued by the control plane on its own"):
        run_resume(run=Run.objects.get(pk=queued.pk))


def test_a_second_resume_of_the_same_run_is_refused(acme, dataset):
    run = stopped(acme, dataset, trained=5, checkpoint=4)
    stale = Run.objects.get(pk=run.pk)  # a second tab still shows it cancelled
    run_resume(run=run)
    with pytest.raises(RunStateError, match="is queued"):
        run_resume(run=stale)


# -- the API -----------------------------------------------------------------------------------------------------


def api(username: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.get(username=username))
    return client


def test_the_api_resumes_a_run_and_answers_409_with_the_reason(acme, dataset, globex):
    run = stopped(acme, dataset, trained=5, checkpoint=4)
    assert api("vera").post(f"/api/runs/{run.pk}/resume/").status_code == 403
    assert api("mallory").post(f"/api/runs/{run.pk}/resume/").status_code == 404
    answer = api("bob").post(f"/api/runs/{run.pk}/resume/")
    assert answer.status_code == 202, answer.content
    assert answer.json()["status"] == "queued" and answer.json()["steps_completed"] == 4
    again = api("bob").post(f"/api/runs/{run.pk}/resume/")
    assert again.status_code == 409 and "is queued" in again.json()["detail"]
    early = stopped(acme, dataset, trained=2, checkpoint=None, name="early")
    refused = api("bob").post(f"/api/runs/{early.pk}/resume/")
    assert refused.status_code == 409 and "no checkpoint" in refused.json()["detail"]


def test_the_api_sets_tags_at_launch_and_replaces_them_with_patch(acme, dataset, globex):
    created = api("bob").post("/api/runs/", {"team": "acme", "dataset": dataset.pk, "name": "tagged",
                                             "config": {"steps": 2}, "tags": ["Sweep", "lr.1e-3", "sweep"]},
                              format="json")
    assert created.status_code == 201, created.content
    run_id = created.json()["id"]
    assert created.json()["tags"] == ["sweep", "lr.1e-3"]
    bad = api("bob").post("/api/runs/", {"team": "acme", "dataset": dataset.pk, "name": "bad",
                                         "config": {"steps": 2}, "tags": ["no spaces allowed"]}, format="json")
    assert bad.status_code == 400 and "is not a tag" in bad.json()["errors"]["tags"][0]
    patched = api("bob").patch(f"/api/runs/{run_id}/", {"tags": ["final"]}, format="json")
    assert patched.status_code == 200 and patched.json()["tags"] == ["final"]
    too_many = api("bob").patch(f"/api/runs/{run_id}/", {"tags": [f"t{i}" for i in range(17)]}, format="json")
    assert too_many.status_code == 400 and "at most 16" in str(too_many.json())
    assert api("vera").patch(f"/api/runs/{run_id}/", {"tags": []}, format="json").status_code == 403
    assert api("mallory").patch(f"/api/runs/{run_id}/", {"tags": []}, format="json").status_code == 404
    assert Run.objects.get(pk=run_id).tags == ["final"]
    listed = api("alice").get("/api/runs/", {"tag": "FINAL"}).json()["results"]
    assert [r["id"] for r in listed] == [run_id]
    assert api("alice").get("/api/runs/", {"tag": "fin"}).json()["results"] == []
