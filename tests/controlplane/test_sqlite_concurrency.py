"""The embedded mode (SQLite, the filesystem broker: ``make demo``) holds the load a small team
makes: many launches, cancels and reads at the same moment against one real ``runserver``, and
a worker-like process writing heartbeats meanwhile. No request may answer 500 ("database is
locked"): a writer waits for another's transaction (busy timeout, IMMEDIATE transactions).

Runs in fresh processes with a temporary EDGEPLANE_VAR_DIR and no DATABASE_URL, whatever
database the rest of the suite uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import django, json
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from controlplane.accounts.services import team_create
from controlplane.api.services import api_token_get_or_create
from controlplane.datasets.services import dataset_import_builtin
team = team_create(name="Lite", owner_username="lite", owner_password="lite-pw-12345")
dataset = dataset_import_builtin(team=team, task="add", n_train=16, n_test=4, name="add")
print(json.dumps({"token": api_token_get_or_create(user=team.memberships.first().user), "dataset": dataset.id}))
"""

# A worker's writes meanwhile: heartbeats of a running run, as the keepalive thread stamps them.
HEARTBEATS = """
import django, sys, time
django.setup()
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_heartbeat
run = Run.objects.order_by("pk").first()
Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts_count=1)
deadline = time.time() + float(sys.argv[1])
while time.time() < deadline:
    assert run_heartbeat(run_id=run.pk, attempt=1)
print("heartbeats ok")
"""


@pytest.fixture(params=["default", "url"])
def embedded_env(request, tmp_path) -> dict[str, str]:
    """The embedded default (no DATABASE_URL), and a SQLite file named by DATABASE_URL."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update({"EDGEPLANE_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "controlplane.settings",
                "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    if request.param == "url":
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    return env


def request(url: str, token: str, method: str = "GET", body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:  # no answer at all: counted as a failure, with its cause
        return 599, f"{type(exc).__name__}: {exc}"


def test_concurrent_launches_cancels_and_reads_on_sqlite_never_answer_500(embedded_env, tmp_path):
    setup = subprocess.run([sys.executable, "-c", SETUP], check=False, cwd=ROOT, env=embedded_env,
                           capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr[-3000:]
    seed = json.loads(setup.stdout.strip().splitlines()[-1])
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=ROOT, env=embedded_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        token, dataset = seed["token"], seed["dataset"]
        first = request(f"{base}/api/runs/", token, "POST", {
            "team": "lite", "dataset": dataset, "name": "first", "config": {"steps": 2}})
        assert first[0] == 201, first
        beats = subprocess.Popen([sys.executable, "-c", HEARTBEATS, "8"], cwd=ROOT, env=embedded_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        answers: list[tuple[str, int, str]] = []
        retried: list[tuple[int, object]] = []
        lock = threading.Lock()
        n, rounds = 10, 6  # runserver's listen backlog is 10: more at once are reset before Django sees them
        barrier = threading.Barrier(n)

        def client(i: int) -> None:
            barrier.wait()
            # A retried launch from every thread at once, one Idempotency-Key: one run.
            req = urllib.request.Request(f"{base}/api/runs/", method="POST", data=json.dumps({
                "team": "lite", "dataset": dataset, "name": "retried", "config": {"steps": 2}}).encode(), headers={
                "Authorization": f"Token {token}", "Content-Type": "application/json", "Idempotency-Key": "once"})
            try:
                with urllib.request.urlopen(req, timeout=120) as response:
                    status, body = response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode(errors="replace")
            with lock:
                retried.append((status, json.loads(body).get("id") if status < 500 else body[:300]))
            for j in range(rounds):
                status, body = request(f"{base}/api/runs/", token, "POST", {
                    "team": "lite", "dataset": dataset, "name": f"r{i}-{j}", "config": {"steps": 2}})
                with lock:
                    answers.append(("launch", status, body[:300]))
                if status == 201:
                    run_id = json.loads(body)["id"]
                    status, body = request(f"{base}/api/runs/{run_id}/cancel/", token, "POST")
                    with lock:
                        answers.append(("cancel", status, body[:300]))
                status, body = request(f"{base}/api/runs/?team=lite", token)
                with lock:
                    answers.append(("list", status, body[:300]))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        out, _ = beats.communicate(timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    failures = [a for a in answers if a[1] >= 500]
    assert not failures, f"{len(failures)} of {len(answers)} requests failed: {failures[:3]}"
    assert sorted({(kind, status) for kind, status, _ in answers}) == [("cancel", 202), ("launch", 201), ("list", 200)]
    assert len(answers) == n * rounds * 3
    assert "heartbeats ok" in out, out[-2000:]
    assert len(retried) == n and {status for status, _ in retried} == {201}, retried
    assert len({run_id for _, run_id in retried}) == 1, retried
