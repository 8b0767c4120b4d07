"""Run writes of every engine: create (validated, budget-checked), enqueue, cancel, claim, lose.

What differs per engine lives in its module: ``local_runs`` (trained in the worker) and
``verl_runs`` (a job outside it); each imports this one, never the other.

Every status change is an atomic claim: ``filter(pk=..., status=...).update(...)`` and
go on only if exactly one row changed, so two workers can never both act on a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.budgets.selectors import budget_remaining_for_launch, forecast_device_hours
from controlplane.budgets.services import BudgetExceeded
from controlplane.celery import app as celery_app
from controlplane.datasets.models import Dataset
from controlplane.notifications.services import notification_run_ended
from controlplane.runs.models import ACTIVE, Attempt, Run, RunStatus
from controlplane.runs.tags import tags_clean
from controlplane.telemetry.services import tokens_revoke
from workers.engines.config import ConfigError, FieldError, RunConfig

log = logging.getLogger(__name__)
VERL = "verl"  # Run.engine of runs that go to a Ray cluster (or a local verl process)
# The launch task of each engine, by its name (the wire format: queued messages carry it).
LAUNCH_TASKS = {"local": "edgeplane.launch_run", VERL: "edgeplane.launch_verl_run"}


class RunStateError(Exception):
    """The run is not in a state that allows this (e.g. cancelling a finished run)."""


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key already used for a different launch request in this team."""

    def __init__(self, key: str, run: Run) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for run {run.pk} with a different request; "
                         "send the same request to get that run again, or use a new key for a new run")
        self.run = run


IDEMPOTENCY_KEY_MAX = 255


def idempotency_key_check(key: str) -> str:
    """The key as stored; a ConfigError names what is wrong with it."""
    if len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable() or not key.isascii() or key != key.strip():
        raise ConfigError([FieldError("Idempotency-Key", f"give 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII "
                                                         "characters without surrounding spaces (e.g. a UUID)")])
    return key


def request_fingerprint(*, dataset: Dataset, name: str, config: Any, baseline: Run | None,
                        tags: Any = None) -> str:
    """What makes two launch requests the same one: the dataset, name, config, baseline and tags as sent."""
    body = {"dataset": dataset.pk, "name": name, "config": config, "baseline": baseline.pk if baseline else None}
    if tags:  # only when given: keys stored before runs had tags keep their fingerprints
        body["tags"] = tags
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _replayed(team: Team, key: str, fingerprint: str) -> Run | None:
    """The run stored under ``key`` by an earlier request (marked ``replayed``), or None."""
    if not key:
        return None
    run = Run.objects.filter(team=team, idempotency_key=key).first()
    if run is None:
        return None
    if run.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(key, run)
    run.replayed = True  # type: ignore[attr-defined]
    return run


def run_create(*, team: Team, dataset: Dataset, name: str, config: dict[str, Any], user=None,
               baseline: Run | None = None, idempotency_key: str = "", tags: Any = None) -> Run:
    """Validate the config with RunConfig, check the budget, store, and enqueue on commit.

    ``baseline`` is a run of the same team this run is judged against. ``idempotency_key``
    (the API's Idempotency-Key header): the same key and request again return the run the
    first one stored, with ``run.replayed`` True, and store nothing; the same key with another
    request raises IdempotencyKeyReused. The launch message is sent after the commit: if the
    broker is down the run stays queued with a reason, and beat re-sends it
    (``run_launches_resend``). ``tags``: the run's labels (``tags.tags_clean``).
    """
    if idempotency_key:
        idempotency_key_check(idempotency_key)
    fingerprint = request_fingerprint(dataset=dataset, name=name, config=config, baseline=baseline, tags=tags)
    earlier = _replayed(team, idempotency_key, fingerprint)
    if earlier is not None:
        return earlier
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
    tags = tags_clean(tags)
    if not name.strip():
        raise ConfigError([FieldError("name", "give the run a name")])
    forecast = forecast_device_hours(team=team, config=run_config, dataset=dataset)  # the whole config priced
    with transaction.atomic():
        Team.objects.select_for_update().get(pk=team.pk)  # one launch decision per team at a time
        earlier = _replayed(team, idempotency_key, fingerprint)  # a concurrent retry stored it meanwhile
        if earlier is not None:
            return earlier
        remaining = budget_remaining_for_launch(team)  # the period's remainder less active runs' needs
        if remaining is not None and forecast > remaining:
            raise BudgetExceeded(forecast, remaining)
        run = Run.objects.create(team=team, dataset=dataset, name=name, created_by=user, baseline=baseline,
                                 config=run_config.to_dict(), methods=list(run_config.selectors),
                                 engine=run_config.engine, forecast_device_hours=forecast, tags=tags,
                                 idempotency_key=idempotency_key,
                                 request_fingerprint=fingerprint if idempotency_key else "")
        transaction.on_commit(lambda: run_enqueue(run_id=run.id))
    run.replayed = False  # type: ignore[attr-defined]
    return run


def run_enqueue(*, run_id: int) -> bool:
    """Send the launch task of the run's engine, by name (controlplane/runs/tasks.py): local
    runs train in a worker (local_runs.py), verl runs are submitted by a task on the verl queue
    (verl_runs.py). The route follows the name (settings.CELERY_TASK_ROUTES).

    Called after the commit that stored (or requeued) the run: the run is the outbox. A broker
    that cannot be reached is no error here: the run stays queued, its reason says why, and
    beat re-sends it (``run_launches_resend``). True when the message reached the broker."""
    return _launch_send(run_id=run_id)


def _launch_send(*, run_id: int, expires: float | None = None) -> bool:
    engine = Run.objects.filter(pk=run_id).values_list("engine", flat=True).first()
    task = LAUNCH_TASKS.get(engine, LAUNCH_TASKS["local"])
    try:
        celery_app.send_task(task, args=[run_id], **({"expires": expires} if expires else {}))
    except Exception as exc:  # noqa: BLE001 - any failure to publish (connection refused, timeout, auth)
        broker = str(celery_app.conf.broker_url).split("@")[-1]  # no credentials in the reason
        log.warning("run %s: its launch message could not be sent to the broker %s: %s", run_id, broker, exc)
        Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(status_reason=(
            f"queued, not yet sent to a worker: the broker ({broker}) could not be reached "
            f"({type(exc).__name__}: {exc}); the launch is re-sent automatically every "
            f"{settings.EDGEPLANE_LAUNCH_RESEND_SECONDS} s until a worker claims it"))
        return False
    Run.objects.filter(pk=run_id).update(launch_sent_at=Now())
    return True


def run_launches_resend() -> list[int]:
    """Beat: re-send the launch message of every run queued for EDGEPLANE_LAUNCH_RESEND_SECONDS
    since its last send (or since it was stored, when no send reached the broker) without a
    worker claiming it: a message the broker lost (a restart without persistence) or never
    got. Safe to repeat: the claim is atomic, so a second message finds nothing to claim, and
    a cancelled run is not queued. Answers the ids re-sent."""
    wait = timedelta(seconds=settings.EDGEPLANE_LAUNCH_RESEND_SECONDS)
    due = list(Run.objects.filter(status=RunStatus.QUEUED, cancel_requested=False)
               .annotate(last_sent=Coalesce("launch_sent_at", "created_at"))
               .filter(last_sent__lt=Now() - wait).order_by("pk").values_list("pk", "launch_sent_at"))
    resent = []
    for run_id, sent_at in due:
        # A re-sent message expires after two periods: re-sends of a run waiting behind others do not pile up.
        if _launch_send(run_id=run_id, expires=2.0 * settings.EDGEPLANE_LAUNCH_RESEND_SECONDS):
            resent.append(run_id)
            what = "no worker claimed its launch message" if sent_at else "its launch message never reached the broker"
            Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(status_reason=(
                f"queued: {what} within {settings.EDGEPLANE_LAUNCH_RESEND_SECONDS} s, so it was re-sent; if this "
                "stays, check that a worker is running and consumes the run's queue"))
    return resent


def run_cancel(*, run: Run) -> Run:
    """Queued runs end at once; running ones at their next step boundary (cooperative)."""
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED, status_reason="cancelled before it started", finished_at=now,
            cancel_requested=True, cancel_requested_at=now):
        tokens_revoke(run_id=run.pk)
        notification_run_ended(run_id=run.pk)
        return Run.objects.get(pk=run.pk)
    if not Run.objects.filter(pk=run.pk, status__in=ACTIVE).update(cancel_requested=True):
        raise RunStateError(f"run {run.pk} is {run.status}: only queued, starting or running runs can be cancelled")
    # The first request starts the grace period after which a verl job is stopped.
    Run.objects.filter(pk=run.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=now)
    return Run.objects.get(pk=run.pk)


def run_tags_set(*, run: Run, tags: Any) -> Run:
    """Replace the run's tags (``tags.tags_clean``'s rules; a ConfigError names what is wrong)."""
    cleaned = tags_clean(tags)
    Run.objects.filter(pk=run.pk).update(tags=cleaned)
    run.tags = cleaned
    return run


RELAUNCH_SUFFIX = re.compile(r" \(relaunch(?: (\d+))?\)$")


def relaunch_name(name: str) -> str:
    """"grpo" -> "grpo (relaunch)" -> "grpo (relaunch 2)" -> ..., within the name's column."""
    match = RELAUNCH_SUFFIX.search(name)
    base = name[:match.start()] if match else name
    suffix = " (relaunch)" if match is None else f" (relaunch {int(match.group(1) or 1) + 1})"
    limit = Run._meta.get_field("name").max_length
    return base[:limit - len(suffix)] + suffix


def run_relaunch(*, run: Run, user=None) -> Run:
    """A new run with ``run``'s config, dataset, baseline and tags, launched like any other
    (``run_create``: validated against today's rules, budget-checked, enqueued on commit)."""
    config = {k: v for k, v in run.config.items() if k not in ("dataset", "eval_dataset")}  # set from the dataset
    return run_create(team=run.team, dataset=run.dataset, name=relaunch_name(run.name), config=config, user=user,
                      baseline=run.baseline, tags=list(run.tags or []))


# A run stopped by these can go on from its last checkpoint; the others cannot (see run_resume).
RESUMABLE = (RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.BUDGET_STOPPED)
STOPPED_WORDS = {RunStatus.CANCELLED: "it was cancelled", RunStatus.FAILED: "it failed",
                 RunStatus.BUDGET_STOPPED: "its budget stop"}


def resume_refusal(run: Run) -> str | None:
    """Why ``run`` cannot be resumed now, and what to do instead; None when it can."""
    if run.status in ACTIVE or run.status == RunStatus.LOST:
        return (f"run {run.pk} is {run.status}: only a cancelled, failed or budget-stopped run can be resumed"
                + (" (a lost run is requeued by the control plane on its own)" if run.status == RunStatus.LOST
                   else "; cancel it first, or let it finish"))
    if run.status not in RESUMABLE:
        return (f"run {run.pk} {run.status}: it trained all {run.steps_planned} steps, so there is nothing left to "
                "resume; relaunch it to train again")
    if run.telemetry_archive_path:
        return (f"run {run.pk}'s per-prompt telemetry was archived to Parquet files under its team's retention "
                "(or is being archived): a resumed run would write new rows beside the archive; relaunch it to "
                "train again")
    if run.last_checkpoint_step is None:
        return (f"run {run.pk} has no checkpoint to resume from: it stopped after {run.steps_completed} steps, before "
                f"its first checkpoint (every {run.config.get('checkpoint_every', 'K')} steps, and when a cancel or a "
                "budget stop ends a step); relaunch it to start over")
    if run.last_checkpoint_step >= run.steps_planned:
        return (f"run {run.pk}'s last checkpoint is at its final step {run.last_checkpoint_step}: nothing is left to "
                "train; relaunch it to train again")
    return None


NO_WARMUP = {"warmup_steps": 0, "warmup_noise_steps": 0}  # what the cost model prices the warm-up from


def resume_forecast_device_hours(run: Run) -> float:
    """Device-hours the rest of ``run`` is forecast to use: the steps after its last checkpoint
    (and their evaluations), priced like a launch; no warm-up (the checkpoint holds the model)."""
    remaining = run.steps_planned - int(run.last_checkpoint_step or 0)
    return forecast_device_hours(team=run.team, config={**run.config, "steps": max(remaining, 0), **NO_WARMUP},
                                 dataset=run.dataset)


def run_resume(*, run: Run, user=None) -> Run:
    """Put a cancelled, failed or budget-stopped run back in the queue to go on from its last
    checkpoint: the next worker to claim it starts a new attempt that loads that checkpoint
    (the reconciler's requeue path: ``local_run_execute`` resumes from the run folder's
    ``checkpoints/latest``).

    Refused (RunStateError, saying why and what to do) for another status or without a
    checkpoint; BudgetExceeded when the forecast of the remaining steps does not fit what the
    team has left. Steps recorded after the checkpoint are trained again: their records (steps,
    observations, decisions, later evaluations) are dropped now, so none counts twice, and
    progress goes back to the checkpoint. Their device time stays booked until the replayed
    step replaces its ledger entry, as for a requeued lost run."""
    from controlplane.budgets.models import UsageEntry
    from controlplane.telemetry.models import (
        Evaluation,
        PromptObservation,
        SelectionDecision,
        StepDecisionCount,
        StepSummary,
    )

    refusal = resume_refusal(run)
    if refusal:
        raise RunStateError(refusal)
    forecast = resume_forecast_device_hours(run)
    with transaction.atomic():
        Team.objects.select_for_update().get(pk=run.team_id)  # one launch decision per team at a time
        run = Run.objects.select_for_update().get(pk=run.pk)
        refusal = resume_refusal(run)  # a second click, or another user, got here first
        if refusal:
            raise RunStateError(refusal)
        remaining = budget_remaining_for_launch(run.team)
        if remaining is not None and forecast > remaining:
            raise BudgetExceeded(forecast, remaining)
        checkpoint = int(run.last_checkpoint_step)
        StepSummary.objects.filter(run=run, step__gte=checkpoint).delete()
        PromptObservation.objects.filter(run=run, step__gte=checkpoint).delete()
        SelectionDecision.objects.filter(run=run, step__gte=checkpoint).delete()
        StepDecisionCount.objects.filter(run=run, step__gte=checkpoint).delete()
        Evaluation.objects.filter(run=run, step__gt=checkpoint).delete()  # the one at the checkpoint stays true
        used = UsageEntry.objects.filter(run=run).aggregate(s=Coalesce(Sum("device_seconds"), 0.0))["s"]
        who = f" by {user.get_username()}" if user is not None else ""
        Run.objects.filter(pk=run.pk, status=run.status).update(
            status=RunStatus.QUEUED, finished_at=None, cancel_requested=False, cancel_requested_at=None,
            steps_completed=checkpoint, heartbeat_at=None,
            # What it has used plus what the rest needs: the budget holds back only the remaining steps.
            forecast_device_hours=used / 3600.0 + forecast,
            status_reason=f"resumed{who} after {STOPPED_WORDS[run.status]}: queued to go on from its last "
                          f"checkpoint at step {checkpoint} of {run.steps_planned}")
        transaction.on_commit(lambda: run_enqueue(run_id=run.pk))
    return Run.objects.get(pk=run.pk)


def run_claim(*, run_id: int, worker: str) -> Attempt | None:
    """Queued -> starting, once. A redelivered launch message finds nothing to claim."""
    with transaction.atomic():
        claimed = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED, cancel_requested=False).update(
            status=RunStatus.STARTING, attempts_count=F("attempts_count") + 1, heartbeat_at=Now(),
            status_reason=f"claimed by worker {worker}")
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


def stale_before(now: datetime | None = None) -> ExpressionWrapper:
    """The moment before which a heartbeat is stale, on the database's clock (the clock that
    stamps heartbeats: ``run_heartbeat``), never this machine's: a reconciler whose clock runs
    ahead must not judge healthy runs lost. ``now`` (tests) looks ahead or back from this
    machine's present by as much, still counted on the database's clock."""
    shift = (now - timezone.now()) if now is not None else timedelta(0)
    wait = timedelta(seconds=settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS) - shift
    return ExpressionWrapper(Now() - Value(wait, output_field=DurationField()), output_field=DateTimeField())


def runs_stale(queryset: QuerySet[Run], *, now: datetime | None = None) -> QuerySet[Run]:
    """The starting or running runs of ``queryset`` whose heartbeat is stale (``stale_before``)."""
    return queryset.filter(status__in=[RunStatus.STARTING, RunStatus.RUNNING]).alias(
        stale_before=stale_before(now)).filter(heartbeat_at__lt=F("stale_before"))


def run_lose(*, run_id: int, reason: str, outcome: dict[str, list[int]], now: datetime | None = None) -> None:
    """A run whose heartbeat is stale (``stale_before``): lost; then cancelled (if asked),
    failed (attempt limit reached) or requeued. Appends the run id to outcome's list."""
    with transaction.atomic():
        # A run whose row another transaction holds (its worker storing a step, or frozen inside
        # one until Postgres ends it: EDGEPLANE_DB_IDLE_TRANSACTION_SECONDS) is left to the next
        # pass: the reconciler never waits on a worker.
        free = runs_stale(Run.objects.select_for_update(skip_locked=True).filter(pk=run_id), now=now)
        if not free.values_list("pk", flat=True):
            return
        lost = runs_stale(Run.objects.filter(pk=run_id), now=now).update(status=RunStatus.LOST)
        if not lost:
            return  # it reported meanwhile, or another reconciler took it
        Attempt.objects.filter(run_id=run_id, finished_at__isnull=True).update(
            status=RunStatus.LOST, finished_at=Now(), reason=reason)
        run = Run.objects.get(pk=run_id)
        if run.cancel_requested:
            Run.objects.filter(pk=run_id, status=RunStatus.LOST).update(
                status=RunStatus.CANCELLED, status_reason="cancelled; its worker was lost", finished_at=Now())
            tokens_revoke(run_id=run_id)
            notification_run_ended(run_id=run_id)
            return
        if run.attempts_count >= settings.EDGEPLANE_MAX_ATTEMPTS:
            Run.objects.filter(pk=run_id, status=RunStatus.LOST).update(
                status=RunStatus.FAILED, finished_at=Now(),
                status_reason=f"lost {run.attempts_count} times (limit EDGEPLANE_MAX_ATTEMPTS): {reason}")
            tokens_revoke(run_id=run_id)
            notification_run_ended(run_id=run_id)
            outcome["failed"].append(run_id)
            return
        Run.objects.filter(pk=run_id, status=RunStatus.LOST).update(
            status=RunStatus.QUEUED, status_reason=f"requeued after attempt {run.attempts_count} was lost ({reason}): "
                                                   "it resumes from its last checkpoint")
        transaction.on_commit(lambda rid=run_id: run_enqueue(run_id=rid))
        outcome["requeued"].append(run_id)


def run_attempt_end(*, run_id: int, attempt: int, status: str, reason: str) -> bool:
    """End the run and its attempt from the worker that ran it (e.g. the engine raised), only if
    this attempt still owns the active run: an attempt that was judged lost and replaced (or
    whose run was requeued) ends quietly, never writing over its successor. True if it ended."""
    with transaction.atomic():
        ended = Run.objects.filter(pk=run_id, attempts_count=attempt,
                                   status__in=[RunStatus.STARTING, RunStatus.RUNNING]).update(
            status=status, status_reason=reason, finished_at=Now())
        if not ended:
            return False
        Attempt.objects.filter(run_id=run_id, number=attempt).update(status=status, reason=reason, finished_at=Now())
        tokens_revoke(run_id=run_id)
        notification_run_ended(run_id=run_id)
    return True
