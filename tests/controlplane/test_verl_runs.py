"""verl runs launched and supervised from the control plane, local-process path: the launch
task on the verl queue (a real Celery worker), the real verl entry point as a process of its
own, the reconciler reading its exit and log, cancel stopping its process group.
Real Postgres and Redis (`make test`); the Ray Jobs path is in test_verl_runs_ray.py."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from controlplane.accounts.services import team_create
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.local_runs import local_runs_reconcile
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.services import run_cancel, run_claim, run_create
from controlplane.runs.verl_runs import (
    attempt_submission_id,
    job_end_verdict,
    verl_run_launch,
    verl_runs_reconcile,
)
from controlplane.telemetry.models import RunToken
from tests.controlplane.verl_helpers import (
    FAILS_VERL_VALIDATION,
    SMALL,
    VERL_VALIDATION_MESSAGE,
    finished,
    queue_worker,
    wait_for,
)
from workers.engines.verl.supervise import (
    JobHandle,
    JobState,
    JobStatus,
    job_status,
    job_stop,
    popen_recording_exit,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def verl_settings(settings, tmp_path):
    settings.EDGEPLANE_RUNS_DIR = str(tmp_path / "runs")
    settings.EDGEPLANE_VERL_RUNS_DIR = ""
    settings.EDGEPLANE_RAY_ADDRESS = ""
    settings.EDGEPLANE_VERL_GPUS_PER_NODE = 1
    settings.EDGEPLANE_VERL_OVERRIDES = FAILS_VERL_VALIDATION
    settings.EDGEPLANE_CANCEL_GRACE_SECONDS = 300
    settings.EDGEPLANE_CONTROL_URL = "http://127.0.0.1:9"  # nothing listens: the job must not need it to start
    return settings


@pytest.fixture
def model_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models" / "tiny-hf"  # RunConfig wants an existing checkpoint folder
    folder.mkdir(parents=True)
    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(folder.parent))  # under the models root, by its name
    return folder


@pytest.fixture
def team_and_dataset(db):
    team = team_create(name="Verl", owner_username="verl", owner_password="pw")
    return team, dataset_import_builtin(team=team, task="add", n_train=24, n_test=6, name="add-small")


def create_verl_run(team_and_dataset, model_dir: Path, **config) -> Run:
    team, dataset = team_and_dataset
    return run_create(team=team, dataset=dataset, name="verl", config={**SMALL, "model": model_dir.name, **config})


def current_attempt(run_id: int) -> Attempt:
    run = Run.objects.get(pk=run_id)
    return Attempt.objects.get(run=run, number=run.attempts_count)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def reap(pid: int) -> None:
    """A process this test started: collect its exit (the reconciler may have done it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- the launch task on the verl queue, end to end ----------------------------------------------
@pytest.fixture
def verl_worker(tmp_path, verl_settings, live_database_url, model_dir):
    """A real Celery worker that consumes the verl queue only, as the gpu-worker does."""
    env = {**os.environ, "DATABASE_URL": live_database_url, "EDGEPLANE_RUNS_DIR": verl_settings.EDGEPLANE_RUNS_DIR,
           "EDGEPLANE_VERL_GPUS_PER_NODE": "1", "EDGEPLANE_RAY_ADDRESS": "",
           "EDGEPLANE_VERL_OVERRIDES": shlex.join(FAILS_VERL_VALIDATION),
           "EDGEPLANE_CONTROL_URL": verl_settings.EDGEPLANE_CONTROL_URL, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "verl-worker.log"
    with queue_worker(verl_settings.EDGEPLANE_VERL_QUEUE, env, log):
        yield log


@pytest.mark.slow
def test_a_verl_run_is_submitted_from_the_verl_queue_and_its_failed_process_fails_the_run_with_the_log_tail(
        verl_worker, team_and_dataset, model_dir, settings):
    run = create_verl_run(team_and_dataset, model_dir)  # on commit: launch_verl_run, routed to the verl queue

    def worker_log() -> str:
        return verl_worker.read_text(errors="replace")[-3000:]

    attempt = wait_for(lambda: Attempt.objects.filter(run_id=run.id).exclude(job_id="").first(), 60,
                       "the gpu-queue worker to submit the job", explain=worker_log)
    assert attempt.job_id.startswith("pid:") and attempt.number == 1
    assert Run.objects.get(pk=run.id).status == RunStatus.STARTING
    token = RunToken.objects.get(run_id=run.id).key
    # The real verl entry point runs in the worker's process tree and fails verl's own config
    # check; this test process is not its parent: the reconciler reads the exit from /proc.
    done = wait_for(lambda: verl_runs_reconcile() and finished(run.id), 120, "the reconciler to see the job end",
                    every=1.0, explain=worker_log)
    assert done.status == RunStatus.FAILED
    assert f"the verl job {attempt.job_id} failed (exit code 1) after 0 of 5 steps" in done.status_reason
    assert VERL_VALIDATION_MESSAGE in done.status_reason  # the tail of RUN_DIR/verl-<attempt>.log
    assert token not in done.status_reason
    log_file = Path(settings.EDGEPLANE_RUNS_DIR) / f"run-{run.id}" / f"verl-{attempt_submission_id(attempt)}.log"
    assert VERL_VALIDATION_MESSAGE in log_file.read_text() and token not in log_file.read_text()
    ended = current_attempt(run.id)
    assert (ended.status, ended.reason) == (RunStatus.FAILED, done.status_reason)
    assert not RunToken.objects.filter(run_id=run.id, revoked_at__isnull=True).exists()
    assert verl_runs_reconcile() == {}  # an ended run is not looked at again


# -- launch refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "overrides", "says"), [
    ({"model": "tiny"}, FAILS_VERL_VALIDATION, "model: verl trains Hugging Face checkpoints"),
    ({}, ("trainer.nnodes=two",), "trainer.nnodes: verl expects a number"),
], ids=["config-error", "override-error"])
def test_a_config_the_launcher_refuses_fails_the_run_with_its_message(verl_settings, team_and_dataset, model_dir,
                                                                      enqueued, config, overrides, says):
    verl_settings.EDGEPLANE_VERL_OVERRIDES = overrides
    run = create_verl_run(team_and_dataset, model_dir, **config)
    assert verl_run_launch(run_id=run.id) == RunStatus.FAILED
    done = Run.objects.get(pk=run.id)
    assert done.status == RunStatus.FAILED
    assert done.status_reason.startswith("the verl launcher refused this run: ") and says in done.status_reason
    assert current_attempt(run.id).job_id == ""  # nothing was started
    assert not RunToken.objects.filter(run_id=run.id).exists()  # no token was issued
    assert verl_run_launch(run_id=run.id) == "not-claimed"  # a redelivered message does nothing


def test_a_verl_run_that_reaches_the_local_launch_task_is_handed_to_the_verl_queue_unclaimed(
        verl_settings, team_and_dataset, model_dir, enqueued):
    from controlplane.runs.local_runs import local_run_execute

    run = create_verl_run(team_and_dataset, model_dir)
    enqueued.clear()
    assert local_run_execute(run_id=run.id) == "handed-to-verl-queue"
    assert Run.objects.get(pk=run.id).status == RunStatus.QUEUED and enqueued == [run.id]


# -- cancel -------------------------------------------------------------------------------------
def test_cancel_stops_the_local_process_group_after_the_grace_period_and_the_run_ends_cancelled(
        verl_settings, team_and_dataset, model_dir, enqueued):
    run = create_verl_run(team_and_dataset, model_dir)
    job_id = verl_run_launch(run_id=run.id)  # the real verl entry point, started by this process
    assert job_id.startswith("pid:")
    pid = int(job_id[4:])
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        token = RunToken.objects.get(run_id=run.id, revoked_at__isnull=True).key
        # The job gets what its trainer reports with, through its environment only.
        assert f"EDGEPLANE_RUN_TOKEN={token}".encode() in environ and token.encode() not in cmdline
        assert f"EDGEPLANE_RUN_ID={run.id}".encode() in environ and b"EDGEPLANE_ATTEMPT=1" in environ
        assert b"EDGEPLANE_CONTROL_URL=http://127.0.0.1:9" in environ

        run_cancel(run=Run.objects.get(pk=run.id))
        assert verl_runs_reconcile() == {}  # within the grace period the engine may still stop by itself
        assert group_alive(pid)
        later = timezone.now() + timedelta(seconds=verl_settings.EDGEPLANE_CANCEL_GRACE_SECONDS + 1)
        assert verl_runs_reconcile(now=later) == {"stopping": [run.id]}  # SIGTERM to the process group
        assert "stopping it" in Run.objects.get(pk=run.id).status_reason
        wait_for(lambda: verl_runs_reconcile(now=later).get(RunStatus.CANCELLED), 30, "the run to end cancelled")
        assert not group_alive(pid)
        done = Run.objects.get(pk=run.id)
        assert done.status == RunStatus.CANCELLED
        assert done.status_reason.startswith(f"cancelled; its verl job {job_id} ended: failed"), done.status_reason
        assert not RunToken.objects.filter(run_id=run.id, revoked_at__isnull=True).exists()
    finally:
        if group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        reap(pid)


# -- a job that ended without reporting its end -------------------------------------------------
def supervise_process(run: Run, command: list[str]) -> subprocess.Popen:
    """Claim the run and record a real process as its job, as submit would have."""
    attempt = run_claim(run_id=run.id, worker="test")
    process = subprocess.Popen(command, start_new_session=True)
    Attempt.objects.filter(pk=attempt.pk).update(job_id=f"pid:{process.pid}", worker=f"{socket.gethostname()}:1")
    return process


@pytest.mark.parametrize(("steps_reported", "status", "says"), [
    (5, RunStatus.SUCCEEDED, "ended successfully after 5 of 5 steps; it did not report its end"),
    (2, RunStatus.FAILED, "exited without reporting its end (exit code 0) after 2 of 5 steps"),
])
def test_a_job_that_exits_cleanly_without_reporting_its_end_succeeds_only_if_every_step_was_reported(
        verl_settings, team_and_dataset, model_dir, enqueued, steps_reported, status, says):
    run = create_verl_run(team_and_dataset, model_dir)
    # Cannot be the real verl process: without GPUs it never exits cleanly. A real process that does.
    process = supervise_process(run, [sys.executable, "-c", "print('trained')"])
    wait_for(lambda: Path(f"/proc/{process.pid}/stat").read_text().split(") ")[1][0] == "Z", 30,
             "the process to exit (left unreaped: the reconciler collects its exit)")
    Run.objects.filter(pk=run.id).update(status=RunStatus.RUNNING, steps_completed=steps_reported)
    verl_runs_reconcile()
    done = Run.objects.get(pk=run.id)
    assert done.status == status and says in done.status_reason, done.status_reason


def test_a_running_job_is_left_alone_and_one_started_on_another_machine_is_not_judged_here(
        verl_settings, team_and_dataset, model_dir, enqueued):
    run = create_verl_run(team_and_dataset, model_dir)
    process = supervise_process(run, [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = timezone.now() + timedelta(hours=1)  # the heartbeat does not matter while the job runs
        assert verl_runs_reconcile(now=stale) == {}
        assert Run.objects.get(pk=run.id).status == RunStatus.STARTING
        Attempt.objects.filter(run=run).update(worker="another-host:7")
        assert verl_runs_reconcile(now=stale) == {"elsewhere": [run.id]}
    finally:
        process.kill()
        process.wait(timeout=10)


# -- a launch that died between claim and submit ------------------------------------------------
def test_a_launch_that_died_before_submitting_is_requeued_once_its_claim_is_stale(
        verl_settings, team_and_dataset, model_dir, enqueued):
    run = create_verl_run(team_and_dataset, model_dir)
    enqueued.clear()
    run_claim(run_id=run.id, worker="gone:1")  # the worker died here: an attempt with no job
    assert verl_runs_reconcile() == {}  # the launch may still be under way
    # local_runs_reconcile leaves it: not its job
    assert local_runs_reconcile(now=timezone.now() + timedelta(hours=1)) == {"requeued": [], "failed": []}
    later = timezone.now() + timedelta(seconds=verl_settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS + 1)
    assert verl_runs_reconcile(now=later) == {"requeued": [run.id]}
    requeued = Run.objects.get(pk=run.id)
    assert requeued.status == RunStatus.QUEUED and enqueued == [run.id]
    assert current_attempt(run.id).status == RunStatus.LOST


# -- supervise: local processes that are not this process's children ---------------------------
MARK = "edgeplane-run0-a1-20260101000000"  # an attempt id: the job's processes carry it


def orphan(command: str, env: dict[str, str]) -> int:
    """A process in a session of its own whose parent has exited: as the reconciler sees a job."""
    shell = subprocess.run(["sh", "-c", f"setsid {command} >/dev/null 2>&1 & echo $!"], env={**os.environ, **env},
                           capture_output=True, text=True, check=True)
    pid = int(shell.stdout)

    def leads_its_group() -> bool:  # setsid may not have run yet when the shell has answered
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[2] == str(pid)

    wait_for(leads_its_group, 10, f"process {pid} to start its own session", every=0.01)
    return pid


def alive(pid: int) -> bool:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1] if Path(f"/proc/{pid}").exists() else "Z"
    return not fields.startswith("Z")


def test_a_live_pid_without_the_attempt_mark_is_someone_elses_and_is_never_signalled():
    stranger = orphan("sleep 30", env={})
    ours = orphan("sleep 30", env={"VERL_FILE_LOGGER_PATH": f"/runs/run-0/verl-metrics-{MARK}.jsonl"})
    try:
        assert job_status(JobHandle(f"pid:{stranger}", marker=MARK)).state == JobState.FAILED  # ours has gone
        assert job_stop(JobHandle(f"pid:{stranger}", marker=MARK)) is False and alive(stranger)
        assert job_status(JobHandle(f"pid:{ours}", marker=MARK)).state == JobState.RUNNING
        assert job_stop(JobHandle(f"pid:{ours}", marker=MARK)) is True
        wait_for(lambda: not alive(ours), 10, "the marked process to end")
    finally:
        for pid in (stranger, ours):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_what_is_left_of_a_job_whose_leader_ended_is_stopped_by_its_mark(tmp_path):
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; exit 0"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "MARK": MARK}, start_new_session=True)
    left = int(leader.stdout.readline())
    leader.wait(timeout=10)  # the leader is gone (reaped); its child keeps the group alive
    try:
        assert alive(left)
        assert job_stop(JobHandle(f"pid:{leader.pid}", marker=MARK)) is True
        wait_for(lambda: not alive(left), 10, "the leftover to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)


def test_the_exit_status_recorded_by_the_launching_process_is_read_by_any_process(tmp_path):
    log = tmp_path / "verl-a.log"
    process = popen_recording_exit(str(log.with_suffix(".exit")))([sys.executable, "-c", "raise SystemExit(3)"])
    wait_for(lambda: log.with_suffix(".exit").exists(), 30, "the exit status to be recorded")
    handle = JobHandle(f"pid:{process.pid}", log_path=str(log), marker=MARK)
    assert job_status(handle) == JobStatus(JobState.FAILED, "exit code 3")
    assert process.returncode == 3  # collected once, by the recording thread


# -- the verdict, in full -------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "cancel", "steps", "expected"), [
    (JobState.SUCCEEDED, False, 5, RunStatus.SUCCEEDED),
    (JobState.SUCCEEDED, False, 4, RunStatus.FAILED),
    (JobState.FAILED, False, 5, RunStatus.FAILED),  # crashed after its last step: its end is not known good
    (JobState.STOPPED, False, 1, RunStatus.FAILED),  # stopped by someone else
    (JobState.STOPPED, True, 1, RunStatus.CANCELLED),
    (JobState.SUCCEEDED, True, 5, RunStatus.CANCELLED),
])
def test_the_verdict_on_a_job_that_ended_without_reporting_its_end(state, cancel, steps, expected):
    status, reason = job_end_verdict(status=JobStatus(state, "exit code 0"), job_id="j", cancel_requested=cancel,
                                     steps_completed=steps, steps_planned=5)
    assert status == expected
    assert "j" in reason and (expected == RunStatus.CANCELLED or f"after {steps} of 5 steps" in reason)


def test_the_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
