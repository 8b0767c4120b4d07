"""The spine end to end against real Postgres, real Redis and a real Celery worker that
trains a tiny model: launch, cancel, a worker killed mid-run and resumed by the
reconciler, and a budget stop. Needs DATABASE_URL (Postgres) and CELERY_BROKER_URL
(Redis); `make test` provides both."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from controlplane.accounts.services import team_create
from controlplane.budgets.services import budget_set
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.local_runs import local_runs_reconcile
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_cancel, run_create, run_resume
from controlplane.telemetry.models import PromptObservation, SelectionDecision, StepSummary
from workers.engines.telemetry import read_events

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 200, "warmup_lr": 3e-3,
    "warmup_noise_steps": 0, "lr_warmup_steps": 0, "batch_size": 8, "group_size": 4,
    "eval_every": 2, "eval_k": 2, "eval_prompts": 8, "checkpoint_every": 2, "max_new_tokens": 7, "lr": 1e-3,
    "selectors": {"hive": {"min_rollout_batch": 4}, "hora": {"n0": 2}, "rlzvp": {}},
}

# Skips (or fails under EDGEPLANE_REQUIRE_SERVICES=1) without a database other processes
# can open: the live_database_url fixture decides.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="session")
def shared_var(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worker-var")  # the warm-up cache, shared by every worker


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool=solo", "--concurrency=1",
             "-Q", f"celery,{django_settings.EDGEPLANE_CONTROL_QUEUE}",  # launches, and the reconciler's queue
             "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(tmp_path, shared_var, settings, live_database_url):
    runs_dir = tmp_path / "runs"
    settings.EDGEPLANE_RUNS_DIR = str(runs_dir)
    settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS = 3
    env = {**os.environ, "DATABASE_URL": live_database_url, "EDGEPLANE_RUNS_DIR": str(runs_dir),
           "EDGEPLANE_VAR_DIR": str(shared_var), "PYTHONUNBUFFERED": "1"}
    w = Worker(env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


@pytest.fixture
def team_and_dataset(db):
    team = team_create(name="Flow", owner_username="flow", owner_password="pw")
    dataset = dataset_import_builtin(team=team, task="add", n_train=24, n_test=16, name="add-small")
    return team, dataset


def wait_for(predicate, timeout: float, what: str, log: Path, interval: float = 0.5, explain=None):
    """``predicate()`` once it is truthy; after ``timeout`` seconds a failure with the worker log's
    tail and what ``explain()`` (if given) says of the state it waited on."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    said = f"\n{explain()}" if explain else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{said}; worker log tail:\n{tail}")


def finished(run_id: int):
    run = Run.objects.get(pk=run_id)
    return run if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED,
                                 RunStatus.BUDGET_STOPPED) else None


def assert_rows_match_the_engines_journal(run: Run, runs_dir: Path) -> None:
    events = read_events(runs_dir / f"run-{run.id}" / "engine" / "events.jsonl")
    steps = {e["step"]: e for e in events if e["event"] == "step"}
    assert sorted(steps) == list(StepSummary.objects.filter(run=run).order_by("step").values_list("step", flat=True))
    for number, event in steps.items():
        summary = StepSummary.objects.get(run=run, step=number)
        assert summary.rollouts_generated == event["summary"]["rollouts_generated"]
        assert summary.groups_trained == event["summary"]["groups_trained"]
        assert PromptObservation.objects.filter(run=run, step=number).count() == len(event["observations"])
        assert SelectionDecision.objects.filter(run=run, step=number).count() == len(event["decisions"])
    keys = Counter(PromptObservation.objects.filter(run=run).values_list("step", "prompt_key"))
    assert max(keys.values()) == 1, "a (run, step, prompt) has more than one observation"


def test_a_launched_run_trains_in_the_worker_and_its_rows_match_the_engine(worker, team_and_dataset, settings):
    team, dataset = team_and_dataset
    run = run_create(team=team, dataset=dataset, name="flow", config={**TINY, "steps": 3})
    done = wait_for(lambda: finished(run.id), 300, "the run to finish", worker.log)
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    assert done.steps_completed == 3 and done.attempts_count == 1
    assert done.evaluations.count() >= 2
    assert_rows_match_the_engines_journal(done, Path(settings.EDGEPLANE_RUNS_DIR))
    assert done.prompt_states.exists() and done.usage.filter(kind="step").count() == 3


def test_cancel_ends_the_run_at_a_step_boundary_with_its_checkpoint_and_resume_goes_on_from_it(
        worker, team_and_dataset, settings):
    team, dataset = team_and_dataset
    # Enough steps that the cancel lands before the end (10 did not always, once ingest got quicker),
    # and the first one seen at once; the resume trains the rest.
    steps = 20
    run = run_create(team=team, dataset=dataset, name="to cancel", config={**TINY, "steps": steps})
    wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 1, 300, "a first step", worker.log, interval=0.05)
    run_cancel(run=Run.objects.get(pk=run.id))
    done = wait_for(lambda: finished(run.id), 120, "the cancel", worker.log)
    assert done.status == RunStatus.CANCELLED, done.status_reason
    assert done.steps_completed < steps
    checkpoint = Path(settings.EDGEPLANE_RUNS_DIR) / f"run-{run.id}" / "engine" / "checkpoints"
    assert (checkpoint / f"step_{done.steps_completed:06d}" / "state.pt").is_file()
    assert done.last_checkpoint_step == done.steps_completed
    cancelled_at = done.steps_completed

    # Resume: a new attempt of the same run loads that checkpoint and trains only the steps left.
    resumed = run_resume(run=done)
    assert resumed.status == RunStatus.QUEUED
    done = wait_for(lambda: finished(run.id), 300, "the resumed run", worker.log)
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    attempts = list(done.attempts.order_by("number").values_list("status", "resumed_from_step"))
    assert attempts == [(RunStatus.CANCELLED, None), (RunStatus.SUCCEEDED, cancelled_at)]
    assert list(StepSummary.objects.filter(run=done).order_by("step").values_list("step", flat=True)) == list(
        range(steps))
    assert done.usage.filter(kind="step").count() == steps
    assert_rows_match_the_engines_journal(done, Path(settings.EDGEPLANE_RUNS_DIR))


def test_a_killed_worker_is_reconciled_and_the_run_resumes_without_double_counting(worker, team_and_dataset,
                                                                                     settings):
    team, dataset = team_and_dataset
    steps = 30  # long enough that the worker is still training when it is killed
    run = run_create(team=team, dataset=dataset, name="crash", config={**TINY, "steps": steps})
    wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 3, 300, "three steps", worker.log)
    worker.kill()
    killed = Run.objects.get(pk=run.id)
    assert killed.status == RunStatus.RUNNING, f"the run ended before the kill: {killed.status}"
    killed_at = killed.steps_completed
    time.sleep(settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS + 1)
    outcome = local_runs_reconcile()
    assert outcome["requeued"] == [run.id]
    worker.start()
    done = wait_for(lambda: finished(run.id), 300, "the resumed run", worker.log)
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    assert done.attempts_count == 2
    attempts = list(done.attempts.order_by("number").values_list("status", "resumed_from_step"))
    assert attempts[0][0] == RunStatus.LOST
    assert attempts[1][1] is not None and attempts[1][1] <= killed_at
    assert list(StepSummary.objects.filter(run=done).values_list("step", flat=True).order_by("step")) == list(
        range(steps))
    assert done.usage.filter(kind="step").count() == steps
    assert_rows_match_the_engines_journal(done, Path(settings.EDGEPLANE_RUNS_DIR))


def test_a_run_stops_mid_run_once_the_team_budget_is_used_up(worker, team_and_dataset):
    team, dataset = team_and_dataset
    run = run_create(team=team, dataset=dataset, name="over budget", config={**TINY, "steps": 200})
    wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 1, 300, "a first step", worker.log)
    today = timezone.now().date()
    # Other work used the period's budget meanwhile: the next step's answer stops the run.
    budget_set(team=team, period_start=today, period_end=today + dt.timedelta(days=30), limit_device_hours=1e-9)
    done = wait_for(lambda: finished(run.id), 120, "the budget stop", worker.log)
    assert done.status == RunStatus.BUDGET_STOPPED, done.status_reason
    assert 0 < done.steps_completed < 200
    assert "budget" in done.status_reason
