"""make demo: the whole product on one machine with no services.

SQLite (WAL) and Celery's filesystem broker under var/; migrates; creates a demo team
and user (credentials printed); imports the built-in testbed task add_aligned; launches a live run
(HIVE + HORA + RL-ZVP on the tiny model, from the built-in warm start that ships with the code);
starts web, a training worker (two runs at once), a control worker (beat's reconciler, on its own
queue: it never waits behind a training run) and beat; prints the URL.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The testbed the benchmarks train on, at RunConfig's task sizes (task_train_size, task_test_size).
DEMO_TASK = "add_aligned"
DEMO_DATASET = "add_aligned (built-in testbed)"
# Runs the training worker trains at once (prefork processes, torch's threads shared out between
# them: controlplane/celery.py); a run launched while both train waits queued for a free one.
DEMO_CONCURRENCY = 2
# The default warm-up settings: the run loads the built-in warm start (workers/engines/local/
# warm_start.py) instead of 4,900 supervised steps; tests/controlplane/test_demo_worker.py checks it.
DEMO_CONFIG = {
    "batch_size": 32,
    "group_size": 8,
    "steps": 300,
    "eval_every": 10,
    "eval_k": 8,
    "eval_prompts": 100,
    "checkpoint_every": 20,
    "selectors": {"hive": {"min_rollout_batch": 16}, "hora": {"n0": 4}, "rlzvp": {"alpha": 0.1}},
}


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def setup() -> tuple[str, str, int]:
    """Migrate and create the demo team, user, dataset and run. Returns (user, password, run id)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from controlplane.accounts.services import password_problems, team_create
    from controlplane.datasets.models import Dataset
    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.models import ACTIVE, Run
    from controlplane.runs.services import run_create

    call_command("migrate", verbosity=0)
    user, password = "demo", os.environ.get("EDGEPLANE_DEMO_PASSWORD", "edgeplane-demo")
    # The demo's password passes the same validators as every other (settings.AUTH_PASSWORD_VALIDATORS).
    if problems := password_problems(password, username=user):
        raise SystemExit(f"EDGEPLANE_DEMO_PASSWORD is refused: {' '.join(problems)} Choose another, or unset it.")
    team = team_create(name="Demo", owner_username=user, owner_password=password)
    owner = get_user_model().objects.get(username=user)
    Token.objects.get_or_create(user=owner)
    dataset = Dataset.objects.filter(team=team, name=DEMO_DATASET).first() or dataset_import_builtin(
        team=team, task=DEMO_TASK, n_train=4100, n_test=500, name=DEMO_DATASET, user=owner)
    live = Run.objects.filter(team=team, status__in=ACTIVE).order_by("-id").first()
    run = live or run_create(team=team, dataset=dataset, name="demo: HIVE + HORA + RL-ZVP",
                             config=DEMO_CONFIG, user=owner)
    return user, password, run.id


WORKERS = ("worker", "control")


def worker_commands(concurrency: int = DEMO_CONCURRENCY) -> dict[str, list[str]]:
    """The demo's two workers: "worker" trains (the default queue, ``concurrency`` runs at once,
    prefork); "control" runs beat's reconciler alone (its own queue, settings.EDGEPLANE_CONTROL_QUEUE),
    so a reconcile never waits for a training run to end."""
    from django.conf import settings

    from controlplane.celery import app

    celery = [PYTHON, "-m", "celery", "-A", "controlplane", "worker", "--loglevel=INFO"]
    return {
        "worker": [*celery, "-Q", app.conf.task_default_queue, "--pool=prefork", f"--concurrency={concurrency}",
                   "-n", "train@%h"],
        "control": [*celery, "-Q", settings.EDGEPLANE_CONTROL_QUEUE, "--pool=solo", "-n", "control@%h"],
    }


def warm_up_note(config: dict | None = None) -> str:
    """What the demo run does before its first step: load the shipped warm start, or train one."""
    from workers.engines.local import warm_start

    if warm_start.shipped_for(config or DEMO_CONFIG, DEMO_TASK):
        return ("The run starts from the built-in warm start that ships with the code (no supervised warm-up):\n"
                "its first RL step comes a few seconds after the worker starts.")
    return ("The run warms up its tiny model first: 4,900 supervised steps, about 4 minutes on 2 cores\n"
            "(cached under var/warmup/).")


def main() -> int:
    os.chdir(ROOT)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):  # the embedded mode: SQLite, filesystem broker
        os.environ.pop(name, None)
    # The demo asks for debug (its web server listens on 127.0.0.1 only): runserver then serves
    # the static files. Debug is off everywhere else unless DJANGO_DEBUG=1 says otherwise.
    env = {"DJANGO_DEBUG": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    user, password, run_id = setup()
    from django.conf import settings

    port = free_port(int(os.environ.get("EDGEPLANE_PORT", "8000")))
    logs = Path(settings.VAR_DIR) / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "web": [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        **worker_commands(),
        "beat": [PYTHON, "-m", "celery", "-A", "controlplane", "beat", "--loglevel=INFO",
                 "--schedule", str(Path(settings.VAR_DIR) / "celerybeat-schedule")],
    }
    processes = {}
    for name, command in commands.items():
        handle = (logs / f"{name}.log").open("ab")
        processes[name] = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                           start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    print(f"""
Edgeplane demo is running.
  dashboard  {url}
  API        {url}api/docs/
  live run   {url}runs/{run_id}/
  admin      {url}admin/
  sign in    user {user!r}, password {password!r}
  logs       {logs}/web.log, worker.log, control.log, beat.log
{warm_up_note()}
The worker trains {DEMO_CONCURRENCY} runs at once; a run launched while it is busy waits queued.
Ctrl-C stops web, workers and beat.""", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with status {process.returncode}; see {logs / (name + '.log')}",
                          flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for name, process in processes.items():
            if process.poll() is None:
                if name in WORKERS:
                    # Celery's cold shutdown: the worker stops its own pool's processes (a signal to
                    # the whole group would kill them under it, and it would log each as a crash).
                    # The run it was training resumes from its checkpoint at the next make demo.
                    os.kill(process.pid, signal.SIGQUIT)
                else:
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.time() + 20
        for process in processes.values():
            try:
                process.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        print("stopped web, workers and beat", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
