"""Why a queued run waits, and for what, in words, from what the control plane knows: its
launch not yet at the broker; queued runs launched before it; the workers busy with training
runs; or nothing ahead of it. Runs of the same engine are counted (they share a queue); the
run's own team's are named by id, another team's only counted, never named, on the run page,
the runs list and in the API alike."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models.functions import Now
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.selectors import run_detail, run_waiting_for, runs_waiting_for
from controlplane.runs.services import run_cancel, run_claim, run_create, run_lose
from controlplane.telemetry.services import run_started_ingest
from tests.frontend.conftest import client_for

pytestmark = pytest.mark.django_db

CONFIG = {"steps": 4, "batch_size": 2, "group_size": 2}


@pytest.fixture
def datasets(acme, globex, enqueued, fast_passwords):
    return (dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="add-acme"),
            dataset_import_builtin(team=globex, task="add", n_train=8, n_test=2, name="add-globex"))


def launch(dataset, name: str, *, engine: str = "local", sent: bool = True) -> Run:
    """A queued run whose launch message reached the broker (``sent``), as run_enqueue leaves it."""
    config = {**CONFIG, "engine": engine, **({"selectors": {"greso": {}}} if engine == "verl" else {})}
    run = run_create(team=dataset.team, dataset=dataset, name=name, config=config)
    if sent:
        Run.objects.filter(pk=run.pk).update(launch_sent_at=Now())
    return Run.objects.get(pk=run.pk)


def training(dataset, name: str, **kwargs) -> Run:
    run = launch(dataset, name, **kwargs)
    run_claim(run_id=run.id, worker="test:1")
    run_started_ingest(run_id=run.id, resumed_from_step=None)
    return Run.objects.get(pk=run.pk)


def test_a_run_with_nothing_ahead_waits_for_a_worker_to_claim_it(datasets):
    acme_data, _ = datasets
    run = launch(acme_data, "alone")
    waiting = run_waiting_for(run)
    assert waiting.kind == "worker" and (waiting.training, waiting.queued_ahead) == (0, 0)
    assert waiting.message.startswith("queued: next in line (no run is training now, none queued ahead of it)")
    assert "check that a worker is running" in waiting.message


def test_training_runs_ahead_take_the_worker_slots_and_another_teams_are_counted_not_named(datasets):
    acme_data, globex_data = datasets
    mine = [training(acme_data, f"mine-{i}") for i in range(2)]
    theirs = training(globex_data, "globex-secret-run")
    training(acme_data, "on-the-gpu-queue", engine="verl")  # another engine's queue: not in the way
    finished = training(acme_data, "done")
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.SUCCEEDED)
    run = launch(acme_data, "waits")
    waiting = run_waiting_for(run)
    assert waiting.kind == "slot"
    assert waiting.training_team == (mine[0].id, mine[1].id) and waiting.training_other_teams == 1
    assert waiting.message == (f"queued: waiting for a free worker slot — 3 runs are training now "
                               f"(#{mine[0].id}, #{mine[1].id} of this team; 1 of another team)")
    assert f"#{theirs.id}" not in waiting.message and "globex" not in waiting.message

    # Globex's queued run sees acme's two only as a count, and its own by id.
    other = launch(globex_data, "globex-waits")
    seen = run_waiting_for(other)
    assert seen.training_team == (theirs.id,) and seen.training_other_teams == 2
    assert seen.queued_ahead_team == () and seen.queued_ahead_other_teams == 1  # acme's "waits", launched before
    assert f"#{mine[0].id}" not in seen.message and f"#{run.id}" not in seen.message
    assert f"(#{theirs.id} of this team; 2 of other teams)" in seen.message
    assert "waiting behind 1 queued run launched before it (1 of another team)" in seen.message


def test_queued_runs_launched_before_it_are_counted_and_those_after_it_are_not(datasets):
    acme_data, globex_data = datasets
    first = launch(acme_data, "first")
    launch(globex_data, "globex-first")
    cancelled = launch(acme_data, "cancelled")
    run_cancel(run=cancelled)
    busy = training(acme_data, "busy")
    run = launch(acme_data, "third")
    launch(acme_data, "after")  # launched after it: not ahead
    waiting = run_waiting_for(run)
    assert waiting.kind == "queue" and waiting.queued_ahead == 2
    assert waiting.message == (f"queued: waiting behind 2 queued runs launched before it (#{first.id} of this team; "
                               f"1 of another team); 1 run is training now (#{busy.id} of this team)")
    # the first in line, with nothing training: it waits for a worker, and says what to check
    Run.objects.filter(pk=busy.pk).update(status=RunStatus.SUCCEEDED)
    assert run_waiting_for(Run.objects.get(pk=first.pk)).kind == "worker"
    assert run_waiting_for(Run.objects.get(pk=run.pk)).message.endswith(
        "no run is training now: if this stays, check that a worker is running and consumes the run's queue")


def test_a_launch_not_at_the_broker_says_so_with_the_outboxs_reason(datasets):
    acme_data, _ = datasets
    training(acme_data, "busy")
    fresh = launch(acme_data, "unsent", sent=False)
    waiting = run_waiting_for(fresh)
    assert waiting.kind == "broker" and waiting.message.startswith("queued, not yet sent to a worker")
    # the reason the launch outbox stores when the broker could not be reached is shown as it is
    reason = ("queued, not yet sent to a worker: the broker (127.0.0.1:6390/0) could not be reached "
              "(OperationalError: Connection refused); the launch is re-sent automatically every 120 s")
    Run.objects.filter(pk=fresh.pk).update(status_reason=reason)
    assert run_waiting_for(Run.objects.get(pk=fresh.pk)).message == reason


def test_a_requeued_run_is_unsent_until_its_new_launch_reaches_the_broker(datasets, settings):
    acme_data, _ = datasets
    settings.EDGEPLANE_MAX_ATTEMPTS = 3
    run = training(acme_data, "lost")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    run_lose(run_id=run.id, reason="heartbeat stale", outcome={"requeued": [], "failed": []})
    requeued = Run.objects.get(pk=run.pk)
    assert requeued.status == RunStatus.QUEUED and requeued.launch_sent_at is not None  # the first launch's
    assert run_waiting_for(requeued).kind == "broker"  # its re-launch was not sent (enqueue is off here)
    Run.objects.filter(pk=run.pk).update(launch_sent_at=Now())
    assert run_waiting_for(Run.objects.get(pk=run.pk)).kind == "worker"


def test_only_queued_runs_wait_and_a_page_of_runs_is_read_in_few_queries(datasets, django_assert_max_num_queries):
    acme_data, _ = datasets
    running = training(acme_data, "busy")
    assert run_waiting_for(running) is None and run_detail(running).waiting_for is None
    queued = [launch(acme_data, f"q{i}") for i in range(6)]
    with django_assert_max_num_queries(2):
        found = runs_waiting_for([running, *queued])
    assert sorted(found) == [run.id for run in queued]
    assert [found[run.id].queued_ahead for run in queued] == list(range(6))
    last = found[queued[-1].id]  # five named, the rest counted: a long queue makes no long line
    assert last.queued_ahead_team == tuple(run.id for run in queued[:5])
    assert (f"waiting behind 5 queued runs launched before it ({', '.join(f'#{r.id}' for r in queued[:5])} of this "
            f"team)") in last.message
    six = launch(acme_data, "q6")
    assert f"#{queued[4].id} and 1 more of this team)" in run_waiting_for(six).message


def test_the_api_run_page_and_runs_list_say_why_a_queued_run_waits_and_never_name_another_teams_runs(datasets):
    acme_data, globex_data = datasets
    mine = training(acme_data, "mine-training")
    theirs = training(globex_data, "globex-secret-run")
    run = launch(acme_data, "acme-queued-run")
    expected = (f"queued: waiting for a free worker slot — 2 runs are training now (#{mine.id} of this team; "
                "1 of another team)")

    api = APIClient()
    api.force_authenticate(run.team.memberships.get(user__username="bob").user)
    detail = api.get(f"/api/runs/{run.id}/").json()
    assert detail["waiting_for"] == {
        "kind": "slot", "message": expected, "training": 2, "training_team": [mine.id], "training_other_teams": 1,
        "queued_ahead": 0, "queued_ahead_team": [], "queued_ahead_other_teams": 0}
    assert api.get(f"/api/runs/{mine.id}/").json()["waiting_for"] is None

    bob = client_for("bob")
    page = bob.get(f"/runs/{run.id}/").content.decode()
    listed = bob.get("/").content.decode()
    live = bob.get(f"/data/runs/{run.id}/series/").json()
    assert expected in page and expected in listed and live["waiting_for"]["message"] == expected
    for html in (page, listed, str(live)):
        assert "globex-secret-run" not in html and f"#{theirs.id} " not in html and f"#{theirs.id}," not in html

    # Globex's member sees acme's queued and training runs as counts only
    other = launch(globex_data, "globex-waits")
    mallory_sees = client_for("mallory").get(f"/runs/{other.id}/").content.decode()
    assert f"(#{theirs.id} of this team; 1 of another team)" in mallory_sees
    assert "1 queued run launched before it (1 of another team)" in mallory_sees
    assert "mine-training" not in mallory_sees and "acme-queued-run" not in mallory_sees
    assert f"#{mine.id} " not in mallory_sees and f"#{run.id} " not in mallory_sees
