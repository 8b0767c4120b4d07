"""Warm-up is billed and obeys cancel, through the real Celery worker against Postgres and
Redis: a run cancelled while its model warms up ends cancelled within seconds, before its first
step, and the device time its warm-up spent is in the usage ledger and the team's budget."""

from __future__ import annotations

import time

import pytest

from controlplane.budgets.models import UsageEntry, UsageKind
from controlplane.budgets.selectors import budget_overview
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.selectors import run_warmup
from controlplane.runs.services import run_cancel, run_create
from tests.controlplane.test_worker_flow import (  # noqa: F401 - fixtures
    TINY,
    finished,
    shared_var,
    team_and_dataset,
    wait_for,
    worker,
)

pytestmark = pytest.mark.django_db(transaction=True)

# A warm-up far longer than the test waits (its own seed: never cached), a tiny model.
LONG_WARMUP = {**TINY, "warmup_steps": 50_000, "warmup_seed": 11, "steps": 2}


def warmup_seconds(run_id: int) -> float:
    entry = UsageEntry.objects.filter(run_id=run_id, kind=UsageKind.WARMUP).first()
    return entry.device_seconds if entry else 0.0


def test_a_cancel_during_the_warmup_ends_the_run_within_seconds_and_its_warmup_is_billed(
        worker, team_and_dataset):  # noqa: F811 - the fixtures imported above
    team, dataset = team_and_dataset
    run = run_create(team=team, dataset=dataset, name="long warm-up", config=LONG_WARMUP)
    # warming up: a heartbeat has booked device time and says so on the run
    wait_for(lambda: warmup_seconds(run.id) > 0 and "warm-up step" in Run.objects.get(pk=run.id).status_reason,
             120, "the warm-up's heartbeats", worker.log)
    # ... and how far it is: steps done of the whole warm-up, for the worker's attempt, rising
    first = run_warmup(Run.objects.get(pk=run.id))
    assert first is not None and first.active and first.steps == 50_000 and 1 <= first.step < 50_000
    wait_for(lambda: run_warmup(Run.objects.get(pk=run.id)).step > first.step, 30, "the warm-up's next heartbeat",
             worker.log)
    asked = time.monotonic()
    run_cancel(run=Run.objects.get(pk=run.id))
    done = wait_for(lambda: finished(run.id), 30, "the cancel during the warm-up", worker.log)
    took = time.monotonic() - asked
    assert done.status == RunStatus.CANCELLED, done.status_reason
    assert "during the warm-up" in done.status_reason
    assert took < 10, f"the warm-up heard the cancel after {took:.1f} s"
    assert done.steps_completed == 0 and not UsageEntry.objects.filter(run=done, kind=UsageKind.STEP).exists()
    billed = warmup_seconds(run.id)
    assert billed > 0
    stopped = run_warmup(done)
    assert not stopped.active and stopped.device_seconds == pytest.approx(billed)  # what it reached, not running
    by_run = {r["run"]: r for r in budget_overview(team).by_run}
    assert by_run[run.id]["device_hours"] == pytest.approx(billed / 3600)
