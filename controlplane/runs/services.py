"""Run writes of every engine: create (validated, budget-checked), enqueue, cancel, claim, lose.

What differs per engine lives in its module: ``local_runs`` (trained in the worker) and
``verl_runs`` (a job outside it); each imports this one, never the other.

Every status change is an atomic claim: ``filter(pk=..., status=...).update(...)`` and
go on only if exactly one row changed, so two workers can never both act on a run.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.selectors import budget_remaining_for_launch, forecast_device_hours
from controlplane.budgets.services import BudgetExceeded
from controlplane.celery import app as celery_app
from controlplane.datasets.models import Dataset
from controlplane.runs.models import ACTIVE, Attempt, Run, RunStatus
from controlplane.telemetry.services import tokens_revoke
from workers.engines.config import ConfigError, FieldError, RunConfig

log = logging.getLogger(__name__)
VERL = "verl"  # Run.engine of runs that go to a Ray cluster (or a local verl process)
# The launch task of each engine, by its name (the wire format: queued messages carry it).
LAUNCH_TASKS = {"local": "edgeplane.launch_run", VERL: "edgeplane.launch_verl_run"}


class RunStateError(Exception):
    """The run is not in a state that allows this (e.g. cancelling a finished run)."""


def run_create(*, team: Team, dataset: Dataset, name: str, config: dict[str, Any], user=None,
               baseline: Run | None = None) -> Run:
    """Validate the config with RunConfig, check the budget, store, and enqueue on commit.

    ``baseline`` is a run of the same team this run is judged against.
    """
    if dataset.team_id != team.id:
        raise ConfigError([FieldError("dataset", "no such dataset in this team")])
    if baseline is not None and baseline.team_id != team.id:
        # The same words as a run that does not exist: another team's runs are not there.
        raise ConfigError([FieldError("baseline", "no such run in this team")])
    if not isinstance(config, dict):
        raise ConfigError([FieldError("config", "must be a mapping of RunConfig fields")])
    errors = [FieldError(name_, "set by the control plane from the run's dataset; leave it out")
              for name_ in ("dataset", "eval_dataset") if config.get(name_)]
    if errors:
        raise ConfigError(errors)
    run_config = RunConfig.from_mapping(config)
    if not name.strip():
        raise ConfigError([FieldError("name", "give the run a name")])
    forecast = forecast_device_hours(team=team, batch_size=run_config.batch_size, group_size=run_config.group_size,
                                     steps=run_config.steps, engine=run_config.engine, device=run_config.device)
    with transaction.atomic():
        Team.objects.select_for_update().get(pk=team.pk)  # one launch decision per team at a time
        remaining = budget_remaining_for_launch(team)  # the period's remainder less active runs' needs
        if remaining is not None and forecast > remaining:
            raise BudgetExceeded(forecast, remaining)
        run = Run.objects.create(team=team, dataset=dataset, name=name, created_by=user, baseline=baseline,
                                 config=run_config.to_dict(), methods=list(run_config.selectors),
                                 engine=run_config.engine, forecast_device_hours=forecast)
        transaction.on_commit(lambda: run_enqueue(run_id=run.id))
    return run


def run_enqueue(*, run_id: int) -> None:
    """Send the launch task of the run's engine, by name (controlplane/runs/tasks.py): local
    runs train in a worker (local_runs.py), verl runs are submitted by a task on the verl queue
    (verl_runs.py). The route follows the name (settings.CELERY_TASK_ROUTES)."""
    engine = Run.objects.filter(pk=run_id).values_list("engine", flat=True).first()
    celery_app.send_task(LAUNCH_TASKS.get(engine, LAUNCH_TASKS["local"]), args=[run_id])


def run_cancel(*, run: Run) -> Run:
    """Queued runs end at once; running ones at their next step boundary (cooperative)."""
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED, status_reason="cancelled before it started", finished_at=now,
            cancel_requested=True, cancel_requested_at=now):
        tokens_revoke(run_id=run.pk)
        return Run.objects.get(pk=run.pk)
    if not Run.objects.filter(pk=run.pk, status__in=ACTIVE).update(cancel_requested=True):
        raise RunStateError(f"run {run.pk} is {run.status}: only queued, starting or running runs can be cancelled")
    # The first request starts the grace period after which a verl job is stopped.
    Run.objects.filter(pk=run.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=now)
    return Run.objects.get(pk=run.pk)


def run_claim(*, run_id: int, worker: str) -> Attempt | None:
    """Queued -> starting, once. A redelivered launch message finds nothing to claim."""
    with transaction.atomic():
        claimed = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED, cancel_requested=False).update(
            status=RunStatus.STARTING, attempts_count=F("attempts_count") + 1, heartbeat_at=timezone.now())
        if not claimed:
            return None
        run = Run.objects.get(pk=run_id)
        return Attempt.objects.create(run=run, number=run.attempts_count, worker=worker)


def run_heartbeat(*, run_id: int, attempt: int) -> bool:
    """Proof of life of ``attempt``, stamped with the database's clock (the one the reconciler
    compares with), so no machine's clock can make a healthy run look stale. False once the
    attempt no longer owns an active run (replaced, ended or lost): its engine must stop."""
    return bool(Run.objects.filter(pk=run_id, attempts_count=attempt,
                                   status__in=[RunStatus.STARTING, RunStatus.RUNNING]).update(heartbeat_at=Now()))


def worker_name() -> str:
    """host:pid of this worker process, recorded on the attempts it starts."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_lose(*, run_id: int, now, stale_before, reason: str, outcome: dict[str, list[int]]) -> None:
    """A run whose heartbeat is older than ``stale_before``: lost; then cancelled (if asked),
    failed (attempt limit reached) or requeued. Appends the run id to outcome's list."""
    with transaction.atomic():
        lost = Run.objects.filter(pk=run_id, status__in=[RunStatus.STARTING, RunStatus.RUNNING],
                                  heartbeat_at__lt=stale_before).update(status=RunStatus.LOST)
        if not lost:
            return  # it reported meanwhile, or another reconciler took it
        Attempt.objects.filter(run_id=run_id, finished_at__isnull=True).update(
            status=RunStatus.LOST, finished_at=now, reason=reason)
        run = Run.objects.get(pk=run_id)
        if run.cancel_requested:
            Run.objects.filter(pk=run_id, status=RunStatus.LOST).update(
                status=RunStatus.CANCELLED, status_reason="cancelled; its worker was lost", finished_at=now)
            tokens_revoke(run_id=run_id)
            return
        if run.attempts_count >= settings.EDGEPLANE_MAX_ATTEMPTS:
            Run.objects.filter(pk=run_id, status=RunStatus.LOST).update(
                status=RunStatus.FAILED, finished_at=now,
                status_reason=f"lost {run.attempts_count} times (limit EDGEPLANE_MAX_ATTEMPTS)")
            tokens_revoke(run_id=run_id)
            outcome["failed"].append(run_id)
            return
        Run.objects.filter(pk=run_id, status=RunStatus.LOST).update(
            status=RunStatus.QUEUED, status_reason=f"requeued after attempt {run.attempts_count} was lost")
        transaction.on_commit(lambda rid=run_id: run_enqueue(run_id=rid))
        outcome["requeued"].append(run_id)
