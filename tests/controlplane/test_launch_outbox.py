"""A launch is never lost and never doubled.

- The run is the outbox: it is stored, the launch message is sent after the commit, and a
  broker that cannot be reached leaves the run queued with a reason (201), never a 500.
- Beat re-sends the launch of a run queued too long without a claim; the claim is atomic, so
  a second message claims nothing, bumps no attempt count, and never starts a cancelled run.
- An ``Idempotency-Key`` makes a retried launch answer the first run, never a second one; the
  same key with another request is refused (422).

The broker-down case runs against a real Redis this test stops and starts and a real Celery
worker (with its embedded beat) that claims and trains the run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_cancel, run_claim, run_create, run_launches_resend
from tests.controlplane.api.helpers import budget_for, client_for
from tests.controlplane.test_worker_flow import wait_for
from tests.services import free_port, redis_ping

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"steps": 2, "batch_size": 4, "group_size": 2}


@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="add-tiny")


def launch(client, dataset, key: str | None = None, **body):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/api/runs/", {"team": "acme", "dataset": dataset.id, "name": "r", "config": CONFIG, **body},
                       format="json", **headers)


# -- idempotency key ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_same_idempotency_key_answers_the_first_run_and_stores_no_second(
        acme, dataset, enqueued, django_capture_on_commit_callbacks):
    client = client_for("bob")
    with django_capture_on_commit_callbacks(execute=True):
        first = launch(client, dataset, "k-1")
        assert first.status_code == 201, first.json()
        again = launch(client, dataset, "k-1", config={**CONFIG})  # a retry after a lost answer
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert Run.objects.filter(team=acme).count() == 1
    assert enqueued == [first.json()["id"]]  # one launch message, from the first request
    # Even when the team's budget is now spent (by this very run): the replay is no new launch.
    budget_for(acme, 1e-9)
    assert launch(client, dataset, "k-1").json()["id"] == first.json()["id"]


@pytest.mark.django_db
@pytest.mark.parametrize("change", [{"name": "other"}, {"config": {**CONFIG, "steps": 3}}, {"baseline": None}])
def test_the_same_key_with_a_different_request_is_refused_naming_the_first_run(acme, dataset, enqueued, change):
    client = client_for("bob")
    first = launch(client, dataset, "k-2").json()
    if "baseline" in change:
        change = {"baseline": first["id"]}
    other = launch(client, dataset, "k-2", **change)
    assert other.status_code == 422, other.json()
    assert other.json()["run"] == first["id"] and "Idempotency-Key" in other.json()["detail"]
    assert Run.objects.filter(team=acme).count() == 1


@pytest.mark.django_db
def test_keys_are_per_team_and_no_key_means_a_new_run_each_time(acme, globex, dataset, enqueued):
    client = client_for("bob")
    assert launch(client, dataset).json()["id"] != launch(client, dataset).json()["id"]
    mine = launch(client, dataset, "shared").json()["id"]
    theirs_dataset = dataset_import_builtin(team=globex, task="add", n_train=8, n_test=2, name="add-tiny")
    theirs = client_for("mallory").post("/api/runs/", {"team": "globex", "dataset": theirs_dataset.id, "name": "r",
                                                       "config": CONFIG}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert theirs.status_code == 201 and theirs.json()["id"] != mine


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["x" * 256, "bad\nkey", " padded ", "ключ"])
def test_a_malformed_idempotency_key_is_refused_with_what_to_send(acme, dataset, enqueued, key):
    answer = launch(client_for("bob"), dataset, key)
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["errors"]
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_store_one_run(acme, dataset, enqueued):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("shared-cache in-memory SQLite locks tables without waiting; test_sqlite_concurrency.py "
                    "launches with one key from many threads against a SQLite file")
    answers: list[tuple[int, int]] = []
    barrier = threading.Barrier(6)

    def retry() -> None:
        client = client_for("bob")
        barrier.wait()
        try:
            response = launch(client, dataset, "same-for-all")
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 6 and {status for status, _ in answers} == {201}
    assert len({run_id for _, run_id in answers}) == 1
    assert Run.objects.filter(team=acme).count() == 1


# -- the re-send ------------------------------------------------------------------------------------------
def queued_launches(client: redis.Redis) -> list[list[int]]:
    bodies = [json.loads(m) for m in client.lrange("celery", 0, -1)]
    return [json.loads(base64.b64decode(b["body"]))[0] for b in bodies
            if b["headers"]["task"] == "edgeplane.launch_run"]


@pytest.mark.django_db
def test_beat_resends_only_runs_queued_too_long_without_a_claim(acme, dataset, test_redis_url, settings):
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("celery")
    settings.EDGEPLANE_LAUNCH_RESEND_SECONDS = 60
    try:
        runs = [run_create(team=acme, dataset=dataset, name=f"r{i}", config=CONFIG) for i in range(4)]
        # pytest-django's transaction never commits: on_commit sent nothing; none is due yet.
        assert run_launches_resend() == []
        long_ago = timezone.now() - timezone.timedelta(minutes=5)
        Run.objects.filter(pk__in=[r.pk for r in runs]).update(created_at=long_ago)
        run_cancel(run=runs[1])
        run_claim(run_id=runs[2].pk, worker="w:1")
        Run.objects.filter(pk=runs[3].pk).update(launch_sent_at=timezone.now())  # sent a moment ago
        assert run_launches_resend() == [runs[0].pk]
        assert queued_launches(client) == [[runs[0].pk]]
        again = Run.objects.get(pk=runs[0].pk)
        assert again.launch_sent_at is not None and "re-sent" in again.status_reason
        assert run_launches_resend() == []  # the next beat waits another period
        message = json.loads(client.lrange("celery", 0, -1)[0])
        assert message["headers"]["expires"], "a re-sent message expires: re-sends do not pile up"
    finally:
        client.delete("celery")


# -- the broker down, end to end ---------------------------------------------------------------------------
class RedisServer:
    """A redis-server of this test's own, on one port, that it stops and starts."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not redis_ping(self.url):
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


WEB = """
import django, json, sys
django.setup()
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from controlplane.api.services import api_token_get_or_create
client = APIClient()
bob = get_user_model().objects.get(username="bob")
client.credentials(HTTP_AUTHORIZATION="Token " + api_token_get_or_create(user=bob))
for line in sys.stdin:
    action = json.loads(line)
    headers = {"HTTP_IDEMPOTENCY_KEY": action["key"]} if action.get("key") else {}
    if action["do"] == "launch":
        r = client.post("/api/runs/", action["body"], format="json", **headers)
    elif action["do"] == "cancel":
        r = client.post(f"/api/runs/{action['run']}/cancel/")
    else:
        from controlplane.runs.services import run_enqueue
        print(json.dumps({"sent": run_enqueue(run_id=action["run"])}), flush=True)
        continue
    body = r.json() if r.headers.get("Content-Type") == "application/json" else r.content.decode()[:2000]
    print(json.dumps({"status": r.status_code, "body": body}), flush=True)
"""


def web_side(env: dict[str, str], actions: list[dict]) -> list[dict]:
    """The web process's answers to ``actions``, with its own broker URL (a fresh process)."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", WEB], input="".join(json.dumps(a) + "\n" for a in actions),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert time.time() - started < 120
    return answers


@pytest.mark.django_db(transaction=True)
def test_a_launch_while_the_broker_is_down_is_stored_answered_and_trained_once_it_is_back(
        acme, dataset, live_database_url, tmp_path):
    broker = RedisServer(tmp_path / "redis")  # not started yet: the broker is down
    var = tmp_path / "var"
    (var / "warmup").mkdir(parents=True)
    for cached in (ROOT / "var" / "warmup").glob("*.pt"):
        shutil.copy(cached, var / "warmup")
    env = {**os.environ, "DATABASE_URL": live_database_url, "CELERY_BROKER_URL": broker.url,
           "EDGEPLANE_VAR_DIR": str(var), "EDGEPLANE_RUNS_DIR": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1",
           "EDGEPLANE_LAUNCH_RESEND_SECONDS": "1", "EDGEPLANE_RECONCILE_SECONDS": "1",
           "DJANGO_ALLOWED_HOSTS": "testserver"}
    body = {"team": "acme", "dataset": dataset.id, "name": "while down",
            "config": {**CONFIG, "model_layers": 1, "model_dim": 32, "model_heads": 2, "warmup_steps": 20}}
    first, retried, other = web_side(env, [{"do": "launch", "body": body, "key": "launch-1"},
                                           {"do": "launch", "body": body, "key": "launch-1"},
                                           {"do": "launch", "body": {**body, "name": "to cancel"}}])
    assert first["status"] == 201, first
    run_id = first["body"]["id"]
    assert first["body"]["status"] == RunStatus.QUEUED
    assert "could not be reached" in first["body"]["reason"] and "re-sent automatically" in first["body"]["reason"]
    assert retried["status"] == 201 and retried["body"]["id"] == run_id  # a retry makes no duplicate
    (cancelled,) = web_side(env, [{"do": "cancel", "run": other["body"]["id"]}])
    assert cancelled["status"] == 202
    assert Run.objects.filter(team=acme).count() == 2
    assert Run.objects.get(pk=run_id).launch_sent_at is None

    broker.start()
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "-B", "--pool=solo", "--concurrency=1",
         "-Q", f"celery,{settings.EDGEPLANE_CONTROL_QUEUE}",  # launches, and beat's reconciler (its own queue)
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        done = wait_for(lambda: Run.objects.filter(pk=run_id, status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED])
                        .first(), 240, "the re-sent launch to train", log)
        assert done.status == RunStatus.SUCCEEDED, done.status_reason
        assert done.attempts_count == 1 and done.attempts.count() == 1
        # Messages that claim nothing: the finished run's and the cancelled run's, sent again.
        sent = web_side(env, [{"do": "send", "run": run_id}, {"do": "send", "run": other["body"]["id"]}])
        assert sent == [{"sent": True}, {"sent": True}]
        wait_for(lambda: log.read_text(errors="replace").count("'not-claimed'") >= 2, 60,
                 "the worker to take both messages", log)
        assert Run.objects.get(pk=run_id).attempts_count == 1
        never = Run.objects.get(pk=other["body"]["id"])
        assert never.status == RunStatus.CANCELLED and never.attempts_count == 0 and not never.attempts.exists()
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
        broker.stop()
