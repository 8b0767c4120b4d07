"""CPU-mode verl runs launched from the control plane, end to end: the JSON API (and the
dashboard's form) creates the run, a real Celery worker consuming the gpu queue starts verl
0.9.1's own training loop as a local process (no EDGEPLANE_RAY_ADDRESS), the job reports each
step to a live Django server through the HTTP sink, and obeys the control plane's answers at
step boundaries: a cancel, and a team budget used up mid-run. Each run is one real verl job
(about 70 s, Ray's start-up dominates); the module starts two, one after the other.

Real Postgres and Redis (`make test`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from controlplane.accounts.services import team_create
from controlplane.budgets.services import budget_set
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import FINISHED, Attempt, Run, RunStatus
from controlplane.telemetry.models import StepSummary
from tests.controlplane.verl_helpers import finished, queue_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The smallest useful CPU run: the tiny Llama built into the run's folder, 2 prompts x 4
# rollouts a step. Checkpoints only when a cancel or a budget stop saves one.
CPU_RUN = {"engine": "verl", "device": "cpu", "model": "tiny", "batch_size": 2, "group_size": 4, "minibatches": 1,
           "steps": 12, "checkpoint_every": 100, "eval_every": 0, "eval_k": 2, "eval_prompts": 4,
           "max_new_tokens": 4, "verifier": "numeric", "selectors": {"grpo": {}}}
RUN_TIMEOUT = 240  # seconds from launch to the first step, and from the stop to the run's end
PASSWORD = "cpu-pw"


# -- the stack: a live server, a gpu-queue worker ---------------------------------------------------
class Stack:
    """What a test talks to, and what it prints when something times out."""

    def __init__(self, url: str, runs_dir: Path, worker_log: Path) -> None:
        self.url, self.runs_dir, self.worker_log = url, runs_dir, worker_log

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / f"run-{run_id}"

    def explain(self, run_id: int | None = None) -> str:
        parts = []
        if run_id is not None:
            run = Run.objects.filter(pk=run_id).first()
            if run is not None:
                parts.append(f"run {run_id}: {run.status} after {run.steps_completed} steps; "
                             f"reason: {run.status_reason}")
            for log in sorted(self.run_dir(run_id).glob("verl-*.log")):
                parts.append(f"--- {log} (tail) ---\n{tail(log)}")
        parts.append(f"--- {self.worker_log} (tail) ---\n{tail(self.worker_log)}")
        return "\n".join(parts)

    def wait_for(self, predicate: Callable[[], Any], what: str, *, run_id: int | None = None,
                 timeout: float = RUN_TIMEOUT, every: float = 1.0) -> Any:
        return wait_for(predicate, timeout, what, every=every, explain=lambda: self.explain(run_id))


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(missing)"


@pytest.fixture
def stack(tmp_path, settings, live_server, live_database_url):
    """A Celery worker on the gpu queue only (as the gpu-worker of docker-compose), starting
    verl jobs as local processes that report to the live server."""
    runs_dir = tmp_path / "runs"
    for name, value in (("EDGEPLANE_RUNS_DIR", str(runs_dir)), ("EDGEPLANE_VERL_RUNS_DIR", ""),
                        ("EDGEPLANE_RAY_ADDRESS", ""), ("EDGEPLANE_VERL_OVERRIDES", ()),
                        ("EDGEPLANE_CONTROL_URL", live_server.url)):
        setattr(settings, name, value)
    env = {**os.environ, "DATABASE_URL": live_database_url, "EDGEPLANE_RUNS_DIR": str(runs_dir),
           "EDGEPLANE_VERL_RUNS_DIR": "", "EDGEPLANE_RAY_ADDRESS": "", "EDGEPLANE_VERL_OVERRIDES": "",
           "EDGEPLANE_CONTROL_URL": live_server.url, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "gpu-worker.log"
    stack = Stack(live_server.url, runs_dir, log)
    with queue_worker(settings.EDGEPLANE_VERL_QUEUE, env, log):
        try:
            yield stack
        finally:
            # pytest shows what a test printed only when it failed: the logs of its runs, then.
            for run_id in Run.objects.order_by("pk").values_list("pk", flat=True):
                print(stack.explain(run_id))
        for attempt in Attempt.objects.exclude(job_id=""):  # a job a failed test left running
            if attempt.job_id.startswith("pid:") and group_alive(int(attempt.job_id[4:])):
                os.killpg(int(attempt.job_id[4:]), signal.SIGKILL)


@pytest.fixture
def team_and_dataset(db):
    team = team_create(name="CPU smoke", owner_username="smoke", owner_password=PASSWORD)
    return team, dataset_import_builtin(team=team, task="add", n_train=24, n_test=4, name="add-small")


# -- the JSON API over HTTP, as a script or the browser sends it --------------------------------------
class Api:
    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self.token = self.call("POST", "/api/auth/token/", {"username": username, "password": password})[1]["token"]

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Token {self.token}"
        request = urllib.request.Request(self.url + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_pid(run_id: int) -> int:
    job_id = Attempt.objects.get(run_id=run_id, number=1).job_id
    assert job_id.startswith("pid:"), f"not a local process: {job_id!r}"
    return int(job_id[4:])


def assert_each_step_stored_once(run: Run) -> list[int]:
    steps = list(StepSummary.objects.filter(run=run).order_by("step").values_list("step", flat=True))
    assert steps == list(range(run.steps_completed)), f"steps stored: {steps}"
    assert run.usage.count() == run.steps_completed  # one usage entry per step, none doubled
    return steps


def assert_saved_and_ended(stack: Stack, run: Run) -> None:
    """The checkpoint the stop saved (verl's global_step_N, N = steps done), and no process of
    the job's group left: the job process and the Ray it started."""
    assert run.last_checkpoint_step == run.steps_completed, (run.last_checkpoint_step, run.steps_completed)
    folder = stack.run_dir(run.id) / "checkpoints" / f"global_step_{run.steps_completed}"
    assert folder.is_dir(), f"no checkpoint at {folder}: {sorted(p.name for p in folder.parent.glob('*'))}"
    pid = job_pid(run.id)
    stack.wait_for(lambda: not group_alive(pid), f"the job's process group {pid} to end", run_id=run.id, timeout=60)


# -- the tests --------------------------------------------------------------------------------------
def test_a_cpu_verl_run_launched_through_the_api_is_cancelled_at_a_step_boundary_with_a_checkpoint(
        stack, team_and_dataset):
    team, dataset = team_and_dataset
    api = Api(stack.url, "smoke", PASSWORD)
    status, body = api.call("POST", "/api/runs/", {"team": team.slug, "dataset": dataset.id, "name": "cpu-smoke",
                                                   "config": CPU_RUN})
    assert status == 201, body
    run_id = body["id"]
    assert body["engine"] == "verl" and body["config"]["device"] == "cpu" and body["config"]["model"] == "tiny"

    def steps_seen() -> list[dict]:
        code, page = api.call("GET", f"/api/runs/{run_id}/steps/?after=-1")
        assert code == 200, page
        if page["status"] in FINISHED:
            pytest.fail(f"the run ended before any step was cancelled: {page['status']}\n{stack.explain(run_id)}")
        return page["results"]

    first = stack.wait_for(steps_seen, "a first step through /api/runs/<id>/steps/", run_id=run_id)
    assert first[0]["step"] == 0 and first[0]["rollouts_generated"] == 8 and first[0]["device_seconds"] > 0
    code, answer = api.call("POST", f"/api/runs/{run_id}/cancel/")
    assert code == 202 and answer["cancel_requested"] is True, answer

    run = stack.wait_for(lambda: finished(run_id), "the cancel to end the run", run_id=run_id)
    assert run.status == RunStatus.CANCELLED, stack.explain(run_id)
    # The engine's own end (at a step boundary), not the reconciler's verdict on a stopped job.
    assert run.status_reason == f"cancelled on request after step {run.steps_completed}", run.status_reason
    assert 1 <= run.steps_completed < CPU_RUN["steps"]
    steps = assert_each_step_stored_once(run)
    assert_saved_and_ended(stack, run)

    code, page = api.call("GET", f"/api/runs/{run_id}/steps/?after=-1")
    assert code == 200 and page["status"] == RunStatus.CANCELLED
    assert [row["step"] for row in page["results"]] == steps
    # The run page's chart data: every step, once.
    browser = Client()
    browser.force_login(get_user_model().objects.get(username="smoke"))
    series = browser.get(f"/data/runs/{run_id}/series/?after=-1").json()
    assert series["step"] == steps, series
    attempt = Attempt.objects.get(run_id=run_id)
    assert attempt.status == RunStatus.CANCELLED and attempt.job_id.startswith("pid:")


def test_a_cpu_verl_run_launched_from_the_form_stops_once_the_team_budget_is_used_up(stack, team_and_dataset):
    team, dataset = team_and_dataset
    browser = Client()
    browser.force_login(get_user_model().objects.get(username="smoke"))
    fields = {name: str(value) for name, value in CPU_RUN.items() if name != "selectors"}
    response = browser.post("/runs/new/", {**fields, "name": "cpu-budget", "dataset": str(dataset.id),
                                           "method": ["grpo"]})
    assert response.status_code == 302, response.content.decode()[-3000:]
    run = Run.objects.get(name="cpu-budget")
    assert response["Location"] == f"/runs/{run.id}/"
    assert run.engine == "verl" and run.config["device"] == "cpu" and run.config["batch_size"] == 2

    stack.wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 1, "a first step", run_id=run.id)
    today = timezone.now().date()
    # Other work used the period's budget meanwhile: the next step's answer stops the run.
    budget_set(team=team, period_start=today, period_end=today + dt.timedelta(days=30), limit_device_hours=1e-9)

    done = stack.wait_for(lambda: finished(run.id), "the budget stop", run_id=run.id)
    assert done.status == RunStatus.BUDGET_STOPPED, stack.explain(run.id)
    assert done.status_reason.startswith(f"compute budget reached after step {done.steps_completed} ("), \
        done.status_reason
    assert 1 <= done.steps_completed < CPU_RUN["steps"]
    assert_each_step_stored_once(done)
    assert_saved_and_ended(stack, done)
    used = sum(done.usage.values_list("device_seconds", flat=True))
    assert used > 0
    budget = Api(stack.url, "smoke", PASSWORD).call("GET", f"/api/teams/{team.slug}/budget/")[1]
    assert budget["exhausted"] is True and budget["used_device_hours"] == pytest.approx(used / 3600)
    assert [row["run"] for row in budget["by_run"]] == [done.id]
