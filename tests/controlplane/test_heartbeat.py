"""No false "lost" verdicts, and a wrongly replaced attempt resumes instead of failing the run.

- Staleness is judged on the database's clock: a reconciler whose clock runs ahead loses no
  healthy run.
- A phase longer than EDGEPLANE_HEARTBEAT_STALE_SECONDS (here a held-out evaluation of
  several seconds against a 2 s threshold, with the reconciler running all along) keeps the
  heartbeat alive: the worker's keepalive thread stamps it.
- A worker frozen past the threshold is judged lost and its run requeued; when it wakes, the
  old attempt stops quietly (no FAILED over the run, no checkpoint or journal line after it
  learned), and the run resumes from its last checkpoint and succeeds with every step once.

Real Postgres, Redis and Celery worker, as in test_worker_flow.py.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Self

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.accounts.services import team_create
from controlplane.budgets.models import UsageKind
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.local_runs import local_runs_reconcile
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_claim, run_create, run_heartbeat
from controlplane.telemetry.models import StepSummary
from tests.controlplane.test_worker_flow import TINY, Worker, assert_rows_match_the_engines_journal, finished, wait_for

ROOT = Path(__file__).resolve().parents[2]
STALE = 2
IDLE_TRANSACTION = 3  # EDGEPLANE_DB_IDLE_TRANSACTION_SECONDS of the test's workers


@pytest.fixture
def team_and_dataset(db):
    team = team_create(name="Beat", owner_username="beat", owner_password="pw")
    dataset = dataset_import_builtin(team=team, task="add", n_train=24, n_test=400, name="add-beat")
    return team, dataset


@pytest.fixture
def worker(tmp_path, settings, live_database_url):
    runs_dir, var = tmp_path / "runs", tmp_path / "var"
    (var / "warmup").mkdir(parents=True)
    for cached in (ROOT / "var" / "warmup").glob("*.pt"):
        shutil.copy(cached, var / "warmup")
    settings.EDGEPLANE_RUNS_DIR = str(runs_dir)
    settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS = STALE
    env = {**os.environ, "DATABASE_URL": live_database_url, "EDGEPLANE_RUNS_DIR": str(runs_dir),
           "EDGEPLANE_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1", "EDGEPLANE_HEARTBEAT_STALE_SECONDS": str(STALE),
           # A worker frozen inside a step's transaction holds the run's row until Postgres ends it.
           "EDGEPLANE_DB_IDLE_TRANSACTION_SECONDS": str(IDLE_TRANSACTION)}
    w = Worker(env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


def reconciled_until_requeued(run_id: int, log: Path) -> list[int]:
    """Beat's passes until the frozen run is requeued. A pass skips a run whose row the frozen
    worker holds (frozen inside a step's transaction) instead of waiting on it; Postgres ends
    that transaction after IDLE_TRANSACTION seconds and a later pass takes the run."""
    return wait_for(lambda: local_runs_reconcile()["requeued"], 3 * IDLE_TRANSACTION + 30, "the requeue", log,
                    explain=lambda: sessions_and_run(run_id))


def sessions_and_run(run_id: int) -> str:
    """What a requeue that never came waited on: the run's row on the database's clock, and every
    other session of the database (a frozen worker's holds the run's row while it is active)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT status, attempts_count, heartbeat_at, now() - heartbeat_at FROM runs_run WHERE id = %s",
                       [run_id])
        run = cursor.fetchone()
        cursor.execute("SELECT pid, state, wait_event_type, wait_event, now() - xact_start, now() - state_change, "
                       "left(query, 160) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() ORDER BY pid")
        sessions = cursor.fetchall()
    listed = "\n".join(map(str, sessions))
    return (f"run (status, attempts, heartbeat_at, age): {run}\n"
            f"sessions (pid, state, wait, transaction's age, state's age, query):\n{listed}")


class Reconciler:
    """Beat's reconciler, every 0.3 s in a thread of the test, recording what it requeued."""

    def __init__(self) -> None:
        self.requeued: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.3):
                self.requeued += local_runs_reconcile()["requeued"]
        finally:
            connection.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.django_db
def test_a_reconciler_whose_clock_runs_ahead_loses_no_healthy_run(team_and_dataset, settings, monkeypatch, enqueued):
    team, dataset = team_and_dataset
    settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS = 120
    run = run_create(team=team, dataset=dataset, name="healthy", config={"steps": 2})
    attempt = run_claim(run_id=run.id, worker="w:1")
    assert run_heartbeat(run_id=run.id, attempt=attempt.number)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + dt.timedelta(hours=1))  # this machine's clock
    assert local_runs_reconcile() == {"requeued": [], "failed": []}
    assert Run.objects.get(pk=run.id).status == RunStatus.STARTING
    # A heartbeat that really is stale on the database's clock is still judged lost.
    Run.objects.filter(pk=run.id).update(heartbeat_at=real_now() - dt.timedelta(seconds=121))
    assert local_runs_reconcile()["requeued"] == [run.id]


@pytest.mark.django_db
def test_a_replaced_attempts_heartbeat_is_refused(team_and_dataset, enqueued):
    team, dataset = team_and_dataset
    run = run_create(team=team, dataset=dataset, name="fenced", config={"steps": 2})
    first = run_claim(run_id=run.id, worker="w:1")
    Run.objects.filter(pk=run.id).update(status=RunStatus.QUEUED)  # judged lost and requeued
    assert not run_heartbeat(run_id=run.id, attempt=first.number)
    second = run_claim(run_id=run.id, worker="w:2")
    assert second.number == first.number + 1
    assert not run_heartbeat(run_id=run.id, attempt=first.number)
    assert run_heartbeat(run_id=run.id, attempt=second.number)


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_longer_than_the_stale_threshold_keeps_the_run_alive(worker, team_and_dataset):
    team, dataset = team_and_dataset
    # Every evaluation: 400 held-out prompts x 32 samples, several times the 2 s threshold.
    config = {**TINY, "steps": 4, "eval_every": 2, "eval_k": 32, "eval_prompts": 0, "warmup_steps": 20}
    with Reconciler() as reconciler:
        run = run_create(team=team, dataset=dataset, name="slow evaluation", config=config)
        done = wait_for(lambda: finished(run.id), 600, "the run to finish", worker.log)
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    assert reconciler.requeued == [] and done.attempts_count == 1
    evaluations = list(done.evaluations.order_by("step").values_list("step", flat=True))
    assert evaluations == [0, 2, 4]


@pytest.mark.django_db(transaction=True)
def test_a_run_wrongly_judged_lost_resumes_and_succeeds_with_every_step_once(worker, team_and_dataset, settings):
    team, dataset = team_and_dataset
    steps = 30
    config = {**TINY, "steps": steps, "eval_prompts": 8, "warmup_steps": 20}
    run = run_create(team=team, dataset=dataset, name="frozen", config=config)
    wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 3, 300, "three steps", worker.log)
    os.killpg(worker.process.pid, signal.SIGSTOP)  # alive but silent: a freeze longer than the threshold
    try:
        frozen_at = Run.objects.get(pk=run.id).steps_completed
        time.sleep(STALE + 1)
        assert reconciled_until_requeued(run.id, worker.log) == [run.id]
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
    assert frozen_at < steps, "the run ended before the freeze"
    done = wait_for(lambda: finished(run.id), 300, "the resumed run", worker.log)
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    assert done.attempts_count == 2
    attempts = list(done.attempts.order_by("number").values_list("status", "resumed_from_step"))
    assert attempts[0][0] == RunStatus.LOST, "the old attempt wrote its own ending over the run's"
    assert attempts[1] == (RunStatus.SUCCEEDED, attempts[1][1]) and attempts[1][1] is not None
    assert list(StepSummary.objects.filter(run=done).values_list("step", flat=True).order_by("step")) == list(
        range(steps))
    assert done.usage.filter(kind=UsageKind.STEP).count() == steps  # and its warm-up, when not cached
    assert_rows_match_the_engines_journal(done, Path(settings.EDGEPLANE_RUNS_DIR))
    assert "'replaced'" in worker.log.read_text(errors="replace"), "the old attempt did not stop quietly"


@pytest.mark.django_db(transaction=True)
def test_a_successor_on_the_same_machine_waits_for_the_frozen_attempt_to_stop(worker, team_and_dataset, settings):
    team, dataset = team_and_dataset
    steps = 30
    run = run_create(team=team, dataset=dataset, name="two workers", config={**TINY, "steps": steps,
                                                                             "eval_prompts": 8, "warmup_steps": 20})
    wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 3, 300, "three steps", worker.log)
    second = Worker(worker.env, worker.log.with_name("second.log"))
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        time.sleep(STALE + 1)
        assert reconciled_until_requeued(run.id, worker.log) == [run.id]
        frozen = StepSummary.objects.filter(run=run).count()
        second.start()  # claims the requeued run while the first attempt's process still lives
        waiting = wait_for(lambda: Run.objects.filter(pk=run.id, attempts_count=2,
                                                      status_reason__contains="waits for the attempt before").first(),
                           240, "the second attempt to wait", second.log)
        time.sleep(3)
        assert StepSummary.objects.filter(run=run).count() == frozen, "two attempts trained the run at once"
        assert waiting.status == RunStatus.STARTING
        os.killpg(worker.process.pid, signal.SIGCONT)
        done = wait_for(lambda: finished(run.id), 300, "the second attempt to finish", second.log)
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
        second.stop()
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    assert done.attempts_count == 2 and done.attempts.get(number=1).status == RunStatus.LOST
    assert list(StepSummary.objects.filter(run=done).values_list("step", flat=True).order_by("step")) == list(
        range(steps))
    assert_rows_match_the_engines_journal(done, Path(settings.EDGEPLANE_RUNS_DIR))
    assert "'replaced'" in worker.log.read_text(errors="replace")
