"""make demo's workers: the training worker trains two runs at once, and beat's reconciler,
on a queue of its own read by a control worker, is done while both train (it never waits for a
run to end). In the demo's embedded mode: SQLite (WAL) and the filesystem broker under a
temporary EDGEPLANE_VAR_DIR, in fresh processes (whatever database the rest of the suite uses),
with the worker command lines make demo runs (scripts/demo.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.celery import torch_threads
from tests.processes import stop_group
from workers.engines.local import warm_start

ROOT = Path(__file__).resolve().parents[2]


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()

# Two short runs of a tiny model (its warm-up: 20 steps, cached in the temporary var/).
TINY = {"model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 20, "warmup_noise_steps": 0,
        "warmup_lr": 3e-3, "batch_size": 8, "group_size": 4, "steps": 60, "eval_every": 0, "eval_prompts": 8,
        "eval_k": 2, "checkpoint_every": 0, "lr_warmup_steps": 0}

SETUP = """
import django, json, sys
django.setup()
from datetime import timedelta
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
call_command("migrate", verbosity=0)
from controlplane.accounts.services import team_create
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Attempt, Run, RunStatus
from controlplane.runs.services import run_create
team = team_create(name="Demo", owner_username="demo", owner_password="demo-pw-12345")
dataset = dataset_import_builtin(team=team, task="add_aligned", n_train=64, n_test=8, name="aligned")
config = json.loads(sys.argv[1])
trains = [run_create(team=team, dataset=dataset, name=f"run {i}", config=config).id for i in (1, 2)]
# A third run whose worker was lost long ago, on its last attempt: the reconciler fails it.
lost = Run.objects.create(team=team, dataset=dataset, name="lost", config=config, engine="local",
                          status=RunStatus.RUNNING, attempts_count=settings.EDGEPLANE_MAX_ATTEMPTS,
                          heartbeat_at=timezone.now() - timedelta(hours=1))
Attempt.objects.create(run=lost, number=lost.attempts_count, worker="gone", status=RunStatus.RUNNING)
print(json.dumps({"trains": trains, "lost": lost.id}))
"""

STATE = """
import django, json
django.setup()
from django.db.models import Min
from controlplane.budgets.models import UsageEntry
from controlplane.runs.models import Run
first = dict(UsageEntry.objects.filter(kind="step").values_list("run_id").annotate(Min("recorded_at")))
print(json.dumps({r.id: {"status": r.status, "steps": r.steps_completed, "reason": r.status_reason,
                         "first_step": first[r.id].timestamp() if r.id in first else None,
                         "finished": r.finished_at.timestamp() if r.finished_at else None}
                  for r in Run.objects.all()}))
"""

LOG_LINES = """
import django, json
django.setup()
from controlplane.operations.models import RunLogLine
print(json.dumps({run: [[line.seq, line.attempt, line.level, line.logger, line.message]
                        for line in RunLogLine.objects.filter(run_id=run).order_by("id")]
                  for run in set(RunLogLine.objects.values_list("run_id", flat=True))}))
"""

RECONCILE = """
import django
django.setup()
from controlplane.celery import app
app.send_task("edgeplane.reconcile_runs")  # routed by name, as beat sends it
"""


@pytest.fixture
def embedded_env(tmp_path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update({"EDGEPLANE_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "controlplane.settings",
                "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    return env


def python(env: dict[str, str], code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}


def test_the_demo_run_loads_the_shipped_warm_start():
    assert warm_start.shipped_for(demo.DEMO_CONFIG, demo.DEMO_TASK), (
        f"the demo's config misses the built-in warm start: keep its warm-up settings the defaults, or run "
        f"`{warm_start.REMAKE}`")
    assert "built-in warm start" in demo.warm_up_note()
    assert "4,900 supervised steps" in demo.warm_up_note({**demo.DEMO_CONFIG, "warmup_seed": 7})


def test_torch_threads_are_shared_between_the_processes():
    assert [torch_threads(p, 2) for p in (1, 2, 3)] == [2, 1, 1]
    assert [torch_threads(p, 16) for p in (1, 2, 4, 0)] == [16, 8, 4, 16]


def test_the_demo_worker_trains_two_runs_at_once_and_reconciles_meanwhile(embedded_env, tmp_path):
    ids = python(embedded_env, SETUP, json.dumps(TINY))
    a, b = ids["trains"]
    lost = str(ids["lost"])
    commands = demo.worker_commands()
    assert "--concurrency=2" in commands["worker"] and "--pool=prefork" in commands["worker"]
    assert "control" in commands["control"] and "--pool=solo" in commands["control"]
    workers, logs = {}, {}
    try:
        for name, command in commands.items():
            logs[name] = tmp_path / f"{name}.log"
            workers[name] = subprocess.Popen(command, cwd=ROOT, env=embedded_env, stdout=logs[name].open("wb"),
                                             stderr=subprocess.STDOUT, start_new_session=True)

        def explain() -> str:
            return "\n".join(f"--- {n}.log\n" + p.read_text(errors="replace")[-2500:] for n, p in logs.items())

        def wait_for(predicate, timeout: float, what: str):
            deadline = time.time() + timeout
            while time.time() < deadline:
                state = python(embedded_env, STATE)
                if predicate(state):
                    return state
                time.sleep(0.3)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {state}\n{explain()}")

        def training(state) -> bool:
            return all(state[str(r)]["steps"] >= 1 and state[str(r)]["status"] == "running" for r in (a, b))

        wait_for(training, 180, "both runs to train")
        python(embedded_env, RECONCILE)
        sent = time.time()
        state = wait_for(lambda s: s[lost]["status"] != "running", 30, "the reconciler")
        took = time.time() - sent
        assert state[lost]["status"] == "failed" and "lost 3 times" in state[lost]["reason"]
        assert took < 15, f"the reconcile took {took:.1f} s"
        done = wait_for(lambda s: all(s[str(r)]["finished"] for r in (a, b)), 240, "both runs to finish")
        for run in (a, b):
            assert done[str(run)]["status"] == "succeeded", done[str(run)]
            assert done[str(run)]["steps"] == TINY["steps"]
        # Both had trained a step before either finished: they trained at the same time.
        assert max(done[str(r)]["first_step"] for r in (a, b)) < min(done[str(r)]["finished"] for r in (a, b))
        # Each run's worker lines are kept for its page: by run, in order, the last ones too (flushed at task end).
        kept = python(embedded_env, LOG_LINES)
        for run in (a, b):
            lines = kept[str(run)]
            steps = [m for _, _, _, logger, m in lines
                     if logger == "workers.engines.local.engine" and m.startswith("step ")]
            assert len(steps) == TINY["steps"], (run, steps[:3], len(lines))
            assert [seq for seq, *_ in lines] == list(range(1, len(lines) + 1))
            assert {attempt for _, attempt, *_ in lines} <= {None, 1}
            assert any(attempt == 1 for _, attempt, *_ in lines)
            assert steps[-1].startswith(f"step {TINY['steps'] - 1}:")
        # The reconcile ran on the control worker, never on the training one.
        assert "Task edgeplane.reconcile_runs[" in logs["control"].read_text(errors="replace")
        assert "Task edgeplane.reconcile_runs[" not in logs["worker"].read_text(errors="replace")
    finally:
        for process in workers.values():
            stop_group(process)


def test_beats_reconciler_has_a_queue_of_its_own(settings):
    from controlplane.celery import app

    router = app.amqp.router
    assert router.route({}, "edgeplane.reconcile_runs")["queue"].name == settings.EDGEPLANE_CONTROL_QUEUE
    assert router.route({}, "edgeplane.launch_run")["queue"].name == app.conf.task_default_queue
    assert settings.EDGEPLANE_CONTROL_QUEUE not in (app.conf.task_default_queue, settings.EDGEPLANE_VERL_QUEUE)
    # A reconcile the control worker did not take within one period is dropped, not replayed.
    entry = app.conf.beat_schedule["reconcile-runs"]
    assert entry["options"]["expires"] == entry["schedule"] == settings.EDGEPLANE_RECONCILE_SECONDS
