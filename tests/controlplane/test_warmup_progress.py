"""The warm-up's progress, from the engine's heartbeats to the run: each warm-up heartbeat's
step and total steps are stored on the run for the attempt that sent them, through the
in-process sink and the HTTP sink alike; the run's current attempt is "warming up" until its RL
starts; the device time booked for the warm-up rides along. Real Postgres, a live server for
the HTTP sink, nothing patched but the launch's enqueue."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.selectors import run_detail, run_warmup
from controlplane.runs.services import run_claim, run_create, run_lose
from controlplane.telemetry.services import (
    ControlPlaneSink,
    heartbeat_ingest,
    run_started_ingest,
    step_ingest,
    token_issue,
)
from tests.frontend.helpers import step_record
from workers.engines.verl.http_sink import REJECTED, HttpSink
from workers.record import Control, RecordError

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(acme, enqueued):
    from controlplane.datasets.services import dataset_import_builtin

    dataset = dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")
    run = run_create(team=acme, dataset=dataset, name="warming", config={"steps": 4, "batch_size": 2,
                                                                          "group_size": 2})
    assert run_claim(run_id=run.id, worker="test:1") is not None
    return run


def sink_of(kind: str, run, live_server, tmp_path):
    if kind == "in_process":
        return ControlPlaneSink(run.id, attempt=1)
    return HttpSink(base_url=live_server.url, run_id=run.id, token=token_issue(run_id=run.id), run_dir=tmp_path,
                    attempt=1, backoff_s=0.01, request_timeout_s=5.0)


@pytest.mark.parametrize("kind", ["in_process", "http"])
def test_warmup_heartbeats_store_the_progress_and_book_the_time_through_either_sink(kind, run, live_server, tmp_path):
    sink = sink_of(kind, run, live_server, tmp_path)
    answers = [sink.heartbeat(phase="warmup", detail=f"supervised warm-up step {done}/4900, loss 1.0",
                              device_seconds=1.25, warmup_step=done, warmup_steps=4900) for done in (1, 1200)]
    assert answers == [Control.CONTINUE, Control.CONTINUE]
    stored = Run.objects.get(pk=run.pk)
    assert (stored.warmup_step, stored.warmup_steps, stored.warmup_attempt) == (1200, 4900, 1)
    progress = run_warmup(stored)
    assert progress is not None and progress.active
    assert (progress.step, progress.steps, progress.device_seconds) == (1200, 4900, pytest.approx(2.5))

    # A heartbeat without figures (a keepalive) keeps them; RL starting ends the warm-up, keeping what it did.
    sink.heartbeat(phase="keepalive", detail="alive")
    assert run_warmup(Run.objects.get(pk=run.pk)).step == 1200
    sink.heartbeat(phase="warmup", detail="supervised warm-up done", device_seconds=0.5, warmup_step=4900,
                   warmup_steps=4900)
    assert run_warmup(Run.objects.get(pk=run.pk)).active  # done, but RL has not started yet
    sink.run_started(config={}, model_parameters=10, dataset_size=12, resumed_from_step=None)
    after = run_warmup(Run.objects.get(pk=run.pk))
    assert not after.active and (after.step, after.steps) == (4900, 4900)
    assert after.device_seconds == pytest.approx(3.0)
    if kind == "http":
        assert not sink.pending and not (tmp_path / REJECTED).exists()


def test_the_first_rl_step_ends_the_warmup_too(run):
    heartbeat_ingest(run_id=run.id, detail="w", phase="warmup", device_seconds=1.0, warmup_step=10, warmup_steps=20)
    step_ingest(run_id=run.id, record=step_record(0, ["edgeplane/add:4"]))
    assert not run_warmup(Run.objects.get(pk=run.pk)).active


def test_a_later_attempt_shows_no_warmup_until_it_reports_its_own(run, settings):
    heartbeat_ingest(run_id=run.id, detail="w", phase="warmup", attempt=1, warmup_step=700, warmup_steps=4900)
    settings.EDGEPLANE_MAX_ATTEMPTS = 3
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    run_lose(run_id=run.id, reason="heartbeat stale", outcome={"requeued": [], "failed": []})
    requeued = Run.objects.get(pk=run.pk)
    assert requeued.status == RunStatus.QUEUED and not run_warmup(requeued).active
    run_claim(run_id=run.id, worker="test:2")
    claimed = Run.objects.get(pk=run.pk)
    assert claimed.status == RunStatus.STARTING and not run_warmup(claimed).active  # attempt 1's figures
    heartbeat_ingest(run_id=run.id, detail="w", phase="warmup", attempt=2, warmup_step=5, warmup_steps=4900)
    again = run_warmup(Run.objects.get(pk=run.pk))
    assert again.active and again.step == 5


def test_a_run_without_a_reported_warmup_has_none(run):
    run_started_ingest(run_id=run.id, resumed_from_step=None)
    assert run_warmup(Run.objects.get(pk=run.pk)) is None
    assert run_detail(Run.objects.get(pk=run.pk)).warmup is None


@pytest.mark.parametrize(("figures", "problem"), [
    ({"warmup_step": 3}, "warmup_step and warmup_steps go together"),
    ({"warmup_steps": 30}, "warmup_step and warmup_steps go together"),
    ({"warmup_step": 31, "warmup_steps": 30}, "warmup_step must be a whole number in [0, 30]"),
    ({"warmup_step": 0, "warmup_steps": 0}, "warmup_steps must be a whole number in [1,"),
    ({"warmup_step": 1.5, "warmup_steps": 30}, "warmup_step must be a whole number"),
    ({"warmup_step": "3", "warmup_steps": 30}, "warmup_step must be a whole number"),
    ({"warmup_step": -1, "warmup_steps": 30}, "warmup_step must be a whole number"),
    ({"warmup_step": 1, "warmup_steps": 10**8}, "warmup_steps must be a whole number in [1, 10000000]"),
    ({"warmup_step": 1, "warmup_steps": 30, "phase": "keepalive"}, "send them with phase 'warmup'"),
])
def test_figures_that_break_the_rules_are_refused_alike_in_process_and_over_http(run, figures, problem):
    body = {"event": "heartbeat", "phase": "warmup", "detail": "w", **figures}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"RunToken {token_issue(run_id=run.id)}")
    answer = client.post(f"/api/ingest/runs/{run.id}/steps/", body, format="json")
    assert answer.status_code == 400 and problem in answer.json()["detail"], answer.json()
    with pytest.raises(RecordError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        ControlPlaneSink(run.id, attempt=1).heartbeat(**{k: v for k, v in body.items() if k != "event"})
    with pytest.raises(RecordError):
        heartbeat_ingest(run_id=run.id, **{k: v for k, v in body.items() if k != "event"})
    stored = Run.objects.get(pk=run.pk)
    assert stored.warmup_step is None and stored.warmup_steps is None  # nothing half-stored


def test_the_run_api_detail_exposes_the_warmup(run):
    from django.contrib.auth import get_user_model

    heartbeat_ingest(run_id=run.id, detail="w", phase="warmup", device_seconds=90.0, warmup_step=1200,
                     warmup_steps=4900)
    api = APIClient()
    api.force_authenticate(get_user_model().objects.get(username="alice"))
    detail = api.get(f"/api/runs/{run.id}/").json()
    assert detail["warmup"] == {"step": 1200, "steps": 4900, "active": True, "device_seconds": 90.0}
    assert detail["waiting_for"] is None  # starting, not queued


def test_the_run_pages_live_poll_carries_the_warmup_bar_as_shown(run):
    from tests.frontend.conftest import client_for

    heartbeat_ingest(run_id=run.id, detail="w", phase="warmup", device_seconds=75.5, warmup_step=1200,
                     warmup_steps=4900)
    live = client_for("bob").get(f"/data/runs/{run.id}/series/?after=-1").json()
    assert live["warmup"] == {
        "active": True, "step": 1200, "steps": 4900, "percent": 24.5, "device_seconds": 75.5,
        "label": "supervised warm-up 1,200 / 4,900 steps", "short": "warming up: 1,200/4,900 warm-up steps",
        "booked": "75.5 s of device time booked for the warm-up"}
    assert live["waiting_for"] is None and live["status"] == "starting"
