"""Health, metrics and logs across real processes: a web whose database and broker are down, a
Redis that stops and starts under a web, gunicorn with two worker processes adding up their
metrics (PROMETHEUS_MULTIPROC_DIR), and a real Celery worker training a tiny run whose every
stderr line is JSON, with run_id and attempt while the run trains."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.accounts.services import team_create
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_cancel, run_create
from controlplane.telemetry.models import PromptObservation, SelectionDecision
from tests.controlplane.test_launch_outbox import RedisServer
from tests.controlplane.test_worker_flow import TINY, finished, wait_for
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]

# A web process without a server: answers GET paths read from stdin ("path" or "path|host") with
# Django's test client.
WEB = """
import django, json, sys, time
django.setup()
from django.test import Client
client = Client()
for line in sys.stdin:
    started = time.monotonic()
    path, _, host = line.strip().partition("|")
    r = client.get(path, HTTP_HOST=host or "web:8000", REMOTE_ADDR="127.0.0.1")
    json_body = r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json() if json_body else r.content.decode()
    print(json.dumps({"status": r.status_code, "body": body, "s": time.monotonic() - started,
                      "location": r.headers.get("Location")}), flush=True)
"""


class Web:
    """A web process of its own (its own settings from ``env``) that answers one path at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", WEB], cwd=ROOT, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def get(self, path: str) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the web process died: {self.process.stderr.read()[-3000:] if self.process.stderr else ''}"
        return json.loads(line)

    def close(self) -> str:
        assert self.process.stdin and self.process.stderr
        self.process.stdin.close()
        self.process.wait(timeout=30)
        return self.process.stderr.read()


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_a_web_whose_database_and_broker_are_down_is_alive_but_not_ready_and_says_why(tmp_path):
    env = {**os.environ, "EDGEPLANE_VAR_DIR": str(tmp_path),
           "DATABASE_URL": f"postgres://edgeplane:db-pa55word@127.0.0.1:{closed_port()}/edgeplane",
           "CELERY_BROKER_URL": f"redis://:broker-pa55word@127.0.0.1:{closed_port()}/0"}
    web = Web(env)
    try:
        live = web.get("/healthz")
        assert live["status"] == 200 and live["body"] == {"status": "ok"}
        ready = web.get("/readyz")
        assert ready["status"] == 503
        assert ready["body"]["failed"] == ["database", "migrations", "broker"]
        for check in ready["body"]["checks"].values():
            assert check["ok"] is False and check["detail"]
        assert ready["s"] < 3 + 1.5, "each check is bounded (EDGEPLANE_HEALTH_TIMEOUT_SECONDS=3) and they run at once"
        assert "pa55word" not in json.dumps(ready["body"])
        assert web.get("/healthz")["status"] == 200  # still alive after the failed checks
    finally:
        stderr = web.close()
    assert "pa55word" not in stderr


@pytest.mark.django_db(transaction=True)
def test_readiness_follows_a_redis_that_stops_and_starts(live_database_url, tmp_path):
    broker = RedisServer(tmp_path / "redis")
    broker.start()
    web = Web({**os.environ, "EDGEPLANE_VAR_DIR": str(tmp_path), "DATABASE_URL": live_database_url,
               "CELERY_BROKER_URL": broker.url})
    try:
        assert web.get("/readyz")["status"] == 200
        broker.stop()
        down = web.get("/readyz")
        assert down["status"] == 503 and down["body"]["failed"] == ["broker"], down
        assert down["body"]["checks"]["database"]["ok"] and down["body"]["checks"]["migrations"]["ok"]
        assert web.get("/healthz")["status"] == 200
        broker.start()  # the same port: the web reconnects by itself
        again = web.get("/readyz")
        assert again["status"] == 200, again
    finally:
        web.close()
        broker.stop()


@pytest.mark.django_db(transaction=True)
def test_production_settings_answer_health_over_http_by_any_host_and_redirect_the_rest(live_database_url, tmp_path):
    web = Web({**os.environ, "EDGEPLANE_VAR_DIR": str(tmp_path), "DATABASE_URL": live_database_url,
               "DJANGO_SETTINGS_MODULE": "controlplane.settings_production", "SECRET_KEY": "k" * 60,
               "DJANGO_ALLOWED_HOSTS": "edgeplane.example.com"})
    try:
        for path in ("/healthz", "/readyz", "/metrics"):  # over http, by a container's name (not allowed)
            answer = web.get(path)
            assert answer["status"] == 200 and answer["location"] is None, (path, answer)
        assert web.get("/")["status"] == 400  # everything else still validates the host...
        redirected = web.get("/|edgeplane.example.com")
        assert redirected["status"] == 301 and redirected["location"].startswith("https://")  # ...and goes to https
    finally:
        web.close()


# Two messages on the default queue (launches go there; beat's reconciles go to the control queue).
SEND_TWO = ("import django; django.setup(); from controlplane.celery import app; "
            "[app.send_task('edgeplane.launch_run', args=[0], queue=app.conf.task_default_queue) for _ in range(2)]")


@pytest.mark.django_db(transaction=True)
def test_the_filesystem_broker_is_checked_and_its_queue_counted(live_database_url, tmp_path):
    # make demo's broker: no CELERY_BROKER_URL, kombu's filesystem transport under EDGEPLANE_VAR_DIR.
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env.update({"EDGEPLANE_VAR_DIR": str(tmp_path), "DATABASE_URL": live_database_url})
    send = subprocess.run([sys.executable, "-c", SEND_TWO], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert send.returncode == 0, send.stderr
    web = Web(env)
    try:
        ready = web.get("/readyz")
        assert ready["status"] == 200 and ready["body"]["checks"]["broker"]["transport"] == "filesystem", ready
        samples = samples_of(web.get("/metrics")["body"])
        assert samples[("edgeplane_celery_queue_length", (("queue", "celery"),))] == 2
        shutil.rmtree(tmp_path / "celery" / "queue")
        gone = web.get("/readyz")
        assert gone["status"] == 503 and gone["body"]["failed"] == ["broker"], gone
        assert "data_folder_in" in gone["body"]["checks"]["broker"]["detail"]
    finally:
        web.close()


# -- gunicorn with two workers --------------------------------------------------------------------------
def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples_of(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.django_db(transaction=True)
def test_metrics_of_two_gunicorn_workers_add_up(live_database_url, tmp_path):
    prom = tmp_path / "prometheus"
    prom.mkdir()
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("")  # only the flags below: the test's own, whatever the repository's config says
    port = free_port()
    env = {**os.environ, "EDGEPLANE_VAR_DIR": str(tmp_path), "DATABASE_URL": live_database_url,
           "PROMETHEUS_MULTIPROC_DIR": str(prom), "EDGEPLANE_LOG_FORMAT": "json"}
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(config), "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "controlplane.wsgi:application"], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        probes = [0]

        def probe() -> bool:
            probes[0] += 1
            return _answers(base + "/healthz")

        wait_for(probe, 60, "gunicorn to answer", log)
        # A request left half-sent holds one sync worker; the other answers everything meanwhile;
        # then the held one answers the rest of its request. Both served: deterministically.
        held = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        time.sleep(0.5)
        answered = 0
        lock = threading.Lock()

        def hit() -> None:
            nonlocal answered
            for _ in range(10):
                status, _ = http_get(base + "/healthz")
                assert status == 200
                with lock:
                    answered += 1

        threads = [threading.Thread(target=hit) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        held.sendall(b"Connection: close\r\n\r\n")
        assert held.recv(4096).startswith(b"HTTP/1.1 200")
        held.close()
        assert answered == 40
        pids = {p.name.split("_")[-1] for p in prom.glob("histogram_*.db")}
        assert len(pids) == 2, f"both workers should have served requests; files: {sorted(os.listdir(prom))}"
        totals = []
        for _ in range(4):  # whichever worker answers the scrape, the totals are the same
            status, text = http_get(base + "/metrics")
            assert status == 200, text
            samples = samples_of(text)
            totals.append(samples[("edgeplane_http_request_duration_seconds_count",
                                   (("method", "GET"), ("status", "2xx"), ("view", "operations:healthz")))])
            assert samples[("edgeplane_runs", (("status", "queued"),))] == 0
        # 41 requests, plus the readiness probe's (one or more) while the server came up.
        assert len(set(totals)) == 1, totals
        assert 41 + 1 <= totals[0] <= 41 + probes[0], (totals, probes)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


# -- a real Celery worker: JSON lines, run context, worker health, worker metrics --------------------------
@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_json_with_run_and_attempt_answers_health_and_counts_ingested_rows(
        live_database_url, tmp_path, settings):
    team = team_create(name="Ops", owner_username="ops", owner_password="pw")
    dataset = dataset_import_builtin(team=team, task="add", n_train=24, n_test=16, name="add-small")
    var = tmp_path / "var"
    (var / "warmup").mkdir(parents=True)
    for cached in (ROOT / "var" / "warmup").glob("*.pt"):
        shutil.copy(cached, var / "warmup")
    metrics_port = free_port()
    node = f"ops-{os.getpid()}@{socket.gethostname()}"
    env = {**os.environ, "DATABASE_URL": live_database_url, "EDGEPLANE_VAR_DIR": str(var),
           "EDGEPLANE_RUNS_DIR": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1", "EDGEPLANE_LOG_FORMAT": "json",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
           "EDGEPLANE_WORKER_METRICS_PORT": str(metrics_port)}
    stdout, stderr = tmp_path / "worker.out", tmp_path / "worker.err"
    # prefork, as compose runs it: the run trains in a pool process while the main one answers pings.
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool=prefork", "--concurrency=1",
         "--loglevel=INFO", "-n", node, "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=stdout.open("wb"), stderr=stderr.open("wb"), start_new_session=True)
    try:
        wait_for(lambda: "ready." in stderr.read_text(errors="replace"), 120, "the worker to start", stderr)
        health = subprocess.run([sys.executable, "-m", "controlplane.operations.worker_health", "--destination", node,
                                 "--timeout", "5", "--queue", "celery"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout.splitlines()[-1])["queues"] == ["celery"]
        nobody = subprocess.run([sys.executable, "-m", "controlplane.operations.worker_health", "--destination",
                                 "celery@nowhere", "--timeout", "1"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert nobody.returncode == 1 and "did not answer" in nobody.stderr

        # Long enough to be seen training; cancelled once seen (it stops at its next step boundary).
        run = run_create(team=team, dataset=dataset, name="logged", config={**TINY, "steps": 200, "warmup_steps": 20})
        wait_for(lambda: Run.objects.get(pk=run.id).steps_completed >= 2, 240, "the run to train", stderr)
        summary = _workers_summary()
        mine = next(w for w in summary["workers"] if w["name"] == node)
        assert mine["queues"] == ["celery"] and mine["active_tasks"] == ["edgeplane.launch_run"], summary
        run_cancel(run=Run.objects.get(pk=run.id))
        done = wait_for(lambda: finished(run.id), 120, "the run to stop", stderr)
        assert done.status == RunStatus.CANCELLED, done.status_reason
        trained = done.steps_completed
        assert 2 <= trained < 200

        # The worker's own counters (its pool process ingested the steps), served by its main process.
        status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        samples = samples_of(text)
        assert samples[("edgeplane_ingest_rows_total", (("kind", "steps"),))] == trained
        assert samples[("edgeplane_ingest_rows_total", (("kind", "observations"),))] == \
            PromptObservation.objects.filter(run=done).count() > 0
        assert samples[("edgeplane_ingest_rows_total", (("kind", "decisions"),))] == \
            SelectionDecision.objects.filter(run=done).count() > 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    lines = [line for line in stderr.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a worker stderr line is not JSON: {line[:300]!r}")
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    steps = [r for r in records if r["logger"] == "workers.engines.local.engine" and r["message"].startswith("step ")]
    assert len(steps) == trained, [r["message"] for r in records][-40:]
    assert all(r.get("run_id") == run.id and r.get("attempt") == 1 for r in steps), steps
    assert all(r.get("task_name") == "edgeplane.launch_run" and r.get("task_id") for r in steps), steps
    # Every line logged while the run's task executed carries the run, Celery's own about it too; every
    # line of the claimed attempt's work (local_runs, the engine, the warm-up) its attempt as well.
    task_id = steps[0]["task_id"]
    during = [r for r in records if r.get("task_id") == task_id]
    assert len(during) > len(steps) and all(r.get("run_id") == run.id for r in during), during
    assert any(r["logger"] == "celery.app.trace" and "'cancelled'" in r["message"] for r in during)
    work = [r for r in during if r["logger"].startswith(("workers.", "controlplane.runs"))]
    assert len(work) >= len(steps) and all(r.get("attempt") == 1 for r in work), work
    assert not any("run_id" in r for r in records if "task_id" not in r)  # no context leaks outside the task
    assert any(r["logger"].startswith("celery") for r in records)  # Celery's own lines are JSON too
    assert not re.search(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+: (INFO|WARNING)", stderr.read_text())


def _workers_summary() -> dict:
    from django.test import Client

    body = Client().get("/readyz?workers=1").json()
    assert "workers" in body and "error" not in body["workers"], body
    return body["workers"]
