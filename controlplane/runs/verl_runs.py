"""verl runs: launched and supervised from the control plane, trained outside the worker.

**Launch** (task ``edgeplane.launch_verl_run``, on the verl queue): claim the run (the same
atomic claim as the local engine), record the attempt, plan the job
(``workers.engines.verl.launch.plan`` + ``compose_overrides``), issue a run token and submit:
to Ray's Jobs API with the attempt id as submission id, or as a local process on this worker.
The handle ``submit`` returns (the submission id, or ``pid:<n>``) goes on ``Attempt.job_id``.
The job reports through the ingestion endpoint; its URL, the run id, the attempt number and
the token travel in the job's environment only, never on a command line or in a log.

**Supervision** (task ``edgeplane.reconcile_verl_runs`` on the verl queue, where the jobs are
visible; sent by beat's ``reconcile_runs`` while verl runs are active): for each active verl run,
ask its job (``supervise.job_status``):

- still running: nothing, unless a cancel was asked more than
  ``EDGEPLANE_CANCEL_GRACE_SECONDS`` ago and the engine did not obey at a step boundary:
  then stop it (Ray's ``stop_job``; SIGTERM to the local process group, SIGKILL a minute later);
- ended while the run is still active (the engine did not report ``run_finished``):
  cancelled if a cancel was asked; succeeded if the job SUCCEEDED and every planned step was
  reported (the control plane holds the whole record; only the end event is missing); else
  failed, with the job's state and the tail of its log. Steps are never written here: what the
  engine reported stays, each step once (ingestion is idempotent per (run, step)).
- never submitted (the launch died between claim and submit): on Ray, a job under the
  attempt's submission id is adopted, so a retried launch never makes a second job; otherwise,
  once the claim's heartbeat is stale, the run is lost and requeued like a local run. So is a
  run whose job Ray no longer knows (a restarted cluster).
- unknown (the cluster does not answer), or a local process started on another machine: left
  as it is, and asked again next time.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.datasets.services import DatasetImportError, dataset_export
from controlplane.notifications.services import notification_run_ended
from controlplane.operations.logs import log_context
from controlplane.runs.models import ACTIVE, Attempt, Run, RunStatus
from controlplane.runs.services import VERL, run_claim, run_lose, worker_name
from controlplane.telemetry.models import RunToken
from controlplane.telemetry.services import token_issue, tokens_revoke
from workers.engines.config import ConfigError, RunConfig
from workers.engines.verl.supervise import (
    JobHandle,
    JobNotFound,
    JobState,
    JobStatus,
    JobUnreachable,
    job_logs_tail,
    job_status,
    job_stop,
    popen_recording_exit,
    tail,
)

log = logging.getLogger(__name__)

ACTIVE_STATES = (RunStatus.STARTING, RunStatus.RUNNING)
KILL_AFTER_SECONDS = 60  # a local process that ignores SIGTERM this long after it gets SIGKILL


# -- where and how ------------------------------------------------------------------------------
def verl_run_directory(run_id: int) -> Path:
    """The run's folder on storage shared with the cluster: data, logs, checkpoints."""
    root = settings.EDGEPLANE_VERL_RUNS_DIR or settings.EDGEPLANE_RUNS_DIR
    return Path(root) / f"run-{run_id}"


def attempt_submission_id(attempt: Attempt) -> str:
    """The attempt's Ray submission id (and verl experiment name). The creation time keeps it
    unique on a cluster that outlives a reset database; it never changes for one attempt."""
    return f"edgeplane-run{attempt.run_id}-a{attempt.number}-{attempt.started_at:%Y%m%d%H%M%S}"


def cluster_model_path(model: str) -> str:
    """Where the cluster reads the run's model; empty: the launcher uses the config's path."""
    root = settings.EDGEPLANE_VERL_MODEL_ROOT
    if not root or model == "tiny":
        return ""
    return str(Path(root) / Path(model).name)


def verl_options(*, attempt: Attempt, config: RunConfig):
    from workers.engines.verl.launch import VerlOptions

    return VerlOptions(
        run_dir=str(verl_run_directory(attempt.run_id)), attempt_id=attempt_submission_id(attempt),
        model_path=cluster_model_path(config.model), nnodes=settings.EDGEPLANE_VERL_NNODES,
        gpus_per_node=settings.EDGEPLANE_VERL_GPUS_PER_NODE, ray_address=settings.EDGEPLANE_RAY_ADDRESS,
        extra_overrides=tuple(settings.EDGEPLANE_VERL_OVERRIDES))


def job_secrets(*, attempt: Attempt, token: str) -> dict[str, str]:
    """What the engine's trainer reads to report (workers/engines/verl/report.py), and the stale
    threshold its keepalive beats within (workers/engines/keepalive.py)."""
    return {"EDGEPLANE_CONTROL_URL": settings.EDGEPLANE_CONTROL_URL, "EDGEPLANE_RUN_ID": str(attempt.run_id),
            "EDGEPLANE_ATTEMPT": str(attempt.number), "EDGEPLANE_RUN_TOKEN": token,
            "EDGEPLANE_HEARTBEAT_STALE_SECONDS": str(settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS)}


def job_handle(attempt: Attempt) -> JobHandle:
    submission_id = attempt_submission_id(attempt)
    return JobHandle(job_id=attempt.job_id or submission_id, ray_address=settings.EDGEPLANE_RAY_ADDRESS,
                     log_path=str(verl_run_directory(attempt.run_id) / f"verl-{submission_id}.log"),
                     marker=submission_id)


def verl_runs_active() -> bool:
    """Whether any verl run is queued, starting or running: only then is the verl reconciler sent."""
    return Run.objects.filter(engine=VERL, status__in=ACTIVE).exists()


# -- launch -------------------------------------------------------------------------------------
def verl_run_launch(*, run_id: int) -> str:
    """Claim the run and submit its verl job; returns the job's handle or what happened."""
    attempt = run_claim(run_id=run_id, worker=worker_name())
    if attempt is None:
        log.info("run %s: nothing to claim (already started, finished or cancelled)", run_id)
        return "not-claimed"
    # Every line logged while this attempt's job is prepared and submitted carries run_id and attempt.
    with log_context(run_id=run_id, attempt=attempt.number):
        return _verl_job_submit(attempt)


def _verl_job_submit(attempt: Attempt) -> str:
    """Export the claimed attempt's data, plan its verl job and submit it; returns the job's handle,
    or the status the run ended with when it could not start."""
    from workers.engines.verl.launch import OverrideError, compose_overrides, plan, submit

    run_id = attempt.run_id
    try:
        folder = verl_run_directory(run_id)
        train_path, test_path = dataset_export(dataset=attempt.run.dataset, folder=folder / "data")
        config = RunConfig.from_mapping({**attempt.run.config, "dataset": str(train_path),
                                         "eval_dataset": str(test_path) if test_path else ""})
        options = verl_options(attempt=attempt, config=config)
        launch = plan(config, options)
        compose_overrides(launch.overrides)
    except (ConfigError, OverrideError, DatasetImportError) as exc:
        verl_run_end(attempt=attempt, status=RunStatus.FAILED, reason=f"the verl launcher refused this run: {exc}")
        return RunStatus.FAILED
    except Exception as exc:
        log.exception("run %s: preparing the verl job failed", run_id)
        verl_run_end(attempt=attempt, status=RunStatus.FAILED,
                     reason=f"preparing the verl job failed: {type(exc).__name__}: {exc}")
        return RunStatus.FAILED
    if Run.objects.filter(pk=run_id, cancel_requested=True).exists():
        verl_run_end(attempt=attempt, status=RunStatus.CANCELLED, reason="cancelled before its verl job started")
        return RunStatus.CANCELLED
    token = token_issue(run_id=run_id)
    try:
        job_id = submit(launch, options, secrets=job_secrets(attempt=attempt, token=token),
                        popen=popen_recording_exit(job_handle(attempt).exit_path))
    except Exception as exc:  # noqa: BLE001 - any failure to start (connection, Ray's refusal, OSError) fails the run
        where = f"Ray at {options.ray_address} (EDGEPLANE_RAY_ADDRESS)" if options.ray_address else "this worker"
        # Ray's error may echo the submission, runtime_env (and so the token) included.
        error = tail(f"{type(exc).__name__}: {exc}", redact=[token])
        log.error("run %s: could not start the verl job on %s: %s", run_id, where, error)
        verl_run_end(attempt=attempt, status=RunStatus.FAILED,
                     reason=f"could not start the verl job on {where}: {error}")
        return RunStatus.FAILED
    Attempt.objects.filter(pk=attempt.pk).update(job_id=job_id)
    Run.objects.filter(pk=run_id, status=RunStatus.STARTING).update(status_reason=f"verl job {job_id} submitted")
    log.info("run %s attempt %s: verl job %s submitted", run_id, attempt.number, job_id)
    return job_id


def verl_run_end(*, attempt: Attempt, status: str, reason: str, now: datetime | None = None) -> bool:
    """End the run and its attempt, if the run is still active on this attempt (an atomic
    claim: the engine's own run_finished, or another reconciler, may have come first)."""
    now = now or timezone.now()
    with transaction.atomic():
        ended = Run.objects.filter(pk=attempt.run_id, status__in=ACTIVE_STATES,
                                   attempts_count=attempt.number).update(
            status=status, status_reason=reason, finished_at=now)
        if not ended:
            return False
        Attempt.objects.filter(pk=attempt.pk).update(status=status, reason=reason, finished_at=now)
        tokens_revoke(run_id=attempt.run_id)
        notification_run_ended(run_id=attempt.run_id)
    return True


# -- supervision --------------------------------------------------------------------------------
def job_end_verdict(*, status: JobStatus, job_id: str, cancel_requested: bool, steps_completed: int,
                    steps_planned: int) -> tuple[str, str]:
    """The run's status and reason for a job that ended without the engine reporting its end.
    A failure's reason gets the job's log tail appended by the caller."""
    detail = f" ({status.detail})" if status.detail else ""
    if cancel_requested:
        return RunStatus.CANCELLED, f"cancelled; its verl job {job_id} ended: {status.state.lower()}{detail}"
    progress = f"after {steps_completed} of {steps_planned} steps"
    if status.state == JobState.SUCCEEDED and steps_completed >= steps_planned:
        return RunStatus.SUCCEEDED, (f"the verl job {job_id} ended successfully {progress}; it did not report "
                                     "its end (its last events may wait in the run folder's telemetry spool)")
    what = {JobState.SUCCEEDED: "exited without reporting its end", JobState.FAILED: "failed",
            JobState.STOPPED: "was stopped outside Edgeplane"}[status.state]
    return RunStatus.FAILED, f"the verl job {job_id} {what}{detail} {progress}"


def verl_runs_reconcile(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Ask every active verl run's job how it is; end, stop or requeue accordingly."""
    now = now or timezone.now()
    outcome: dict[str, list[int]] = {key: [] for key in (
        RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, "stopping", "requeued", "unknown", "elsewhere")}
    for run in Run.objects.filter(engine=VERL, status__in=ACTIVE_STATES).order_by("pk"):
        attempt = Attempt.objects.filter(run=run, number=run.attempts_count).first()
        if attempt is None:
            continue
        if not attempt.job_id:
            _reconcile_unsubmitted(run, attempt, now, outcome)
        else:
            _reconcile_job(run, attempt, now, outcome)
    return {key: ids for key, ids in outcome.items() if ids}


def _reconcile_unsubmitted(run: Run, attempt: Attempt, now: datetime, outcome: dict[str, list[int]]) -> None:
    if settings.EDGEPLANE_RAY_ADDRESS:
        handle = job_handle(attempt)  # the submission id the launch would have used
        try:
            job_status(handle)
        except JobNotFound:
            pass  # never submitted
        except JobUnreachable as exc:
            log.warning("run %s: %s", run.id, exc)
            outcome["unknown"].append(run.id)
            return
        else:  # submitted, then the launch died before it recorded the job: adopt it
            Attempt.objects.filter(pk=attempt.pk, job_id="").update(job_id=handle.job_id)
            attempt.job_id = handle.job_id
            _reconcile_job(run, attempt, now, outcome)
            return
    _lose_when_stale(run, now, outcome, reason="the launch stopped before its verl job was submitted")


def _lose_when_stale(run: Run, now: datetime, outcome: dict[str, list[int]], *, reason: str) -> None:
    """No job to ask: lost (then requeued, cancelled or failed) once the heartbeat is stale, on
    the database's clock (``run_lose``)."""
    run_lose(run_id=run.id, now=now, outcome=outcome, reason=reason)


def _started_here(attempt: Attempt) -> bool:
    return attempt.worker.rsplit(":", 1)[0] == socket.gethostname()


def _reconcile_job(run: Run, attempt: Attempt, now: datetime, outcome: dict[str, list[int]]) -> None:
    handle = job_handle(attempt)
    if handle.local and not _started_here(attempt):
        outcome["elsewhere"].append(run.id)  # only the machine that started a process can see it
        return
    try:
        status = job_status(handle)
    except JobNotFound:  # the cluster forgot it (a restarted head): resume from the last checkpoint
        _lose_when_stale(run, now, outcome, reason=f"Ray has no job {handle.job_id} any more (a restarted cluster?)")
        return
    except JobUnreachable as exc:
        log.warning("run %s: the state of verl job %s is unknown: %s", run.id, handle.job_id, exc)
        outcome["unknown"].append(run.id)
        return
    if status.state.ended:
        final, reason = job_end_verdict(status=status, job_id=handle.job_id, cancel_requested=run.cancel_requested,
                                        steps_completed=run.steps_completed, steps_planned=run.steps_planned)
        if final == RunStatus.FAILED:
            tokens = RunToken.objects.filter(run=run).values_list("key", flat=True)
            reason += ". Last lines of its log:\n" + job_logs_tail(handle, redact=list(tokens))
        if verl_run_end(attempt=attempt, status=final, reason=reason, now=now):
            outcome[final].append(run.id)
        if handle.local:
            job_stop(handle)  # leftovers of its process group (Ray daemons it started), if any
        return
    if run.cancel_requested:
        _stop_after_grace(run, handle, now, outcome)


def _stop_after_grace(run: Run, handle: JobHandle, now: datetime, outcome: dict[str, list[int]]) -> None:
    grace = settings.EDGEPLANE_CANCEL_GRACE_SECONDS
    if run.cancel_requested_at is None:  # asked before this field existed: the grace starts now
        Run.objects.filter(pk=run.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=now)
        return
    waited = (now - run.cancel_requested_at).total_seconds()
    if waited < grace:
        return
    try:
        job_stop(handle, force=waited >= grace + KILL_AFTER_SECONDS)
    except (JobUnreachable, JobNotFound) as exc:
        log.warning("run %s: could not stop verl job %s: %s", run.id, handle.job_id, exc)
        outcome["unknown"].append(run.id)
        return
    Run.objects.filter(pk=run.pk, status__in=ACTIVE_STATES).update(
        status_reason=f"cancel: the verl job did not stop at a step boundary within {grace} s; stopping it")
    outcome["stopping"].append(run.id)
