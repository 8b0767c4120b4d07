"""verl runs on the Ray Jobs path: a real single-node Ray head with its dashboard (the Jobs
API), started for this module in a temporary directory on free ports, separate from the
in-process Ray of tests/engines/verl (local_tq). The real verl entry point is submitted as a
job; the reconciler reads its status and logs and stops it on cancel.
Real Postgres and Redis (`make test`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from controlplane.accounts.services import team_create
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.services import run_cancel, run_create
from controlplane.runs.verl_runs import (
    attempt_submission_id,
    verl_options,
    verl_run_directory,
    verl_run_launch,
    verl_runs_reconcile,
)
from controlplane.telemetry.models import RunToken
from tests.controlplane.verl_helpers import (
    FAILS_VERL_VALIDATION,
    SMALL,
    VERL_VALIDATION_MESSAGE,
    WAITS_FOR_GPUS,
    finished,
    wait_for,
)
from tests.services import free_port
from workers.engines.config import RunConfig

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
job_submission = pytest.importorskip("ray.job_submission", reason="Ray comes with the verl extra")


def head_processes(temp_dir: str) -> list[int]:
    """Processes of this head: their command line names its temporary directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` with the dashboard on a free port; yields its address."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live here
    bin_dir = os.path.dirname(sys.executable)
    # Jobs run `python ...` from the head's PATH: this interpreter. Token auth (Ray's default
    # when ~/.ray/auth_token exists) is off for this loopback-only head.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    ports = {name: free_port() for name in ("port", "dashboard-port", "ray-client-server-port",
                                            "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                            "metrics-export-port", "node-manager-port", "object-manager-port",
                                            "runtime-env-agent-port")}
    log = Path(temp_dir) / "head.log"
    with log.open("ab") as handle:
        head = subprocess.Popen(
            [os.path.join(bin_dir, "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=1", "--num-gpus=0",
             f"--temp-dir={temp_dir}", "--disable-usage-stats",
             *(f"--{name}={port}" for name, port in ports.items())],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"

    def connect():
        try:
            return job_submission.JobSubmissionClient(address)
        except Exception:  # noqa: BLE001 - not up yet
            return head.poll() is not None and pytest.fail(f"ray start exited:\n{log.read_text()[-3000:]}")

    started = time.monotonic()
    client = wait_for(connect, 90, "the Ray head's Jobs API", explain=lambda: log.read_text()[-3000:])
    print(f"\nray head up in {time.monotonic() - started:.1f} s at {address}")
    try:
        yield address
    finally:
        for job in client.list_jobs():  # a failed test may leave a job running
            if not job.status.is_terminal():
                client.stop_job(job.submission_id)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)  # a throwaway head: no need to wait out Ray's own shutdown (10+ s)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        for pid in head_processes(temp_dir):  # daemons that left the group
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_settings(settings, tmp_path, ray_head):
    settings.EDGEPLANE_RUNS_DIR = str(tmp_path / "runs")  # shared storage: the head is on this machine
    settings.EDGEPLANE_VERL_RUNS_DIR = ""
    settings.EDGEPLANE_RAY_ADDRESS = ray_head
    settings.EDGEPLANE_VERL_GPUS_PER_NODE = 1
    settings.EDGEPLANE_CANCEL_GRACE_SECONDS = 300
    settings.EDGEPLANE_CONTROL_URL = "http://127.0.0.1:9"
    return settings


@pytest.fixture
def client(ray_head):
    return job_submission.JobSubmissionClient(ray_head)


@pytest.fixture
def verl_run(db, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(tmp_path / "models"))  # models load from there only
    model = tmp_path / "models" / "tiny-hf"
    model.mkdir(parents=True)
    team = team_create(name="Ray", owner_username="ray", owner_password="pw")
    dataset = dataset_import_builtin(team=team, task="add", n_train=24, n_test=6, name="add-small")
    return lambda: run_create(team=team, dataset=dataset, name="on ray", config={**SMALL, "model": model.name})


def job_state(client, job_id: str) -> str:
    return str(client.get_job_status(job_id).value)


def test_a_verl_run_goes_to_ray_once_under_its_attempt_id_and_its_failure_fails_the_run_with_the_job_logs(
        ray_settings, client, verl_run, enqueued):
    from workers.engines.verl.launch import plan, submit

    ray_settings.EDGEPLANE_VERL_OVERRIDES = FAILS_VERL_VALIDATION
    run = verl_run()
    job_id = verl_run_launch(run_id=run.id)
    attempt = Attempt.objects.get(run=run, number=1)
    assert job_id == attempt.job_id == attempt_submission_id(attempt)
    info = client.get_job_info(job_id)
    token = RunToken.objects.get(run=run).key
    assert token not in info.entrypoint and "workers.engines.verl.train" in info.entrypoint
    # The dashboard shows a job's env_vars: the token is in a file only its owner reads.
    assert token not in str(info.runtime_env) and "EDGEPLANE_RUN_TOKEN" not in info.runtime_env["env_vars"]
    token_file = Path(info.runtime_env["env_vars"]["EDGEPLANE_RUN_TOKEN_FILE"])
    assert token_file.read_text() == token and token_file.stat().st_mode & 0o777 == 0o600

    # A launch retried for the same attempt submits nothing: Ray knows the submission id.
    folder = verl_run_directory(run.id) / "data"
    config = RunConfig.from_mapping({**run.config, "dataset": str(folder / "train.jsonl"),
                                     "eval_dataset": str(folder / "test.jsonl")})
    options = verl_options(attempt=attempt, config=config)
    assert submit(plan(config, options), options, secrets={"EDGEPLANE_RUN_TOKEN": "x"}) == job_id
    # A launch that died after submitting, before recording the job: the reconciler adopts it.
    Attempt.objects.filter(pk=attempt.pk).update(job_id="")
    verl_runs_reconcile()
    assert Attempt.objects.get(pk=attempt.pk).job_id == job_id
    assert [j.submission_id for j in client.list_jobs()].count(job_id) == 1

    done = wait_for(lambda: verl_runs_reconcile() and finished(run.id), 120, "the job to fail", every=1.0,
                    explain=lambda: client.get_job_logs(job_id)[-3000:])
    assert job_state(client, job_id) == "FAILED"
    assert done.status == RunStatus.FAILED
    assert done.status_reason.startswith(f"the verl job {job_id} failed (")
    assert VERL_VALIDATION_MESSAGE in done.status_reason  # from the job's logs on Ray
    assert token not in done.status_reason
    assert not RunToken.objects.filter(run=run, revoked_at__isnull=True).exists()


def test_cancel_stops_the_ray_job_after_the_grace_period_and_the_run_ends_cancelled(
        ray_settings, client, verl_run, enqueued):
    ray_settings.EDGEPLANE_VERL_OVERRIDES = WAITS_FOR_GPUS  # passes verl's checks, then waits for GPUs
    run = verl_run()
    job_id = verl_run_launch(run_id=run.id)
    wait_for(lambda: job_state(client, job_id) == "RUNNING", 60, "the job to run")
    run_cancel(run=Run.objects.get(pk=run.id))
    assert verl_runs_reconcile() == {}  # the engine may still stop at a step boundary
    later = timezone.now() + timedelta(seconds=ray_settings.EDGEPLANE_CANCEL_GRACE_SECONDS + 1)
    assert verl_runs_reconcile(now=later) == {"stopping": [run.id]}  # stop_job
    wait_for(lambda: job_state(client, job_id) == "STOPPED", 60, "Ray to stop the job")
    assert verl_runs_reconcile(now=later) == {RunStatus.CANCELLED: [run.id]}
    done = Run.objects.get(pk=run.id)
    assert done.status == RunStatus.CANCELLED
    assert done.status_reason.startswith(f"cancelled; its verl job {job_id} ended: stopped"), done.status_reason


def test_a_run_whose_job_ray_no_longer_knows_is_requeued_once_its_heartbeat_is_stale(ray_settings, verl_run,
                                                                                      enqueued):
    from controlplane.runs.services import run_claim

    run = verl_run()
    enqueued.clear()
    attempt = run_claim(run_id=run.id, worker="gpu-1:7")
    Attempt.objects.filter(pk=attempt.pk).update(job_id="edgeplane-run0-a1-19700101000000")  # a restarted head
    assert verl_runs_reconcile() == {}  # the engine reported recently: wait
    later = timezone.now() + timedelta(seconds=ray_settings.EDGEPLANE_HEARTBEAT_STALE_SECONDS + 1)
    assert verl_runs_reconcile(now=later) == {"requeued": [run.id]}
    assert Run.objects.get(pk=run.id).status == RunStatus.QUEUED and enqueued == [run.id]
    assert "Ray has no job" in Attempt.objects.get(pk=attempt.pk).reason
