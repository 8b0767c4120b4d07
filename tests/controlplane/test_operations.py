"""Health, metrics and log context, in this process against the real Postgres and Redis of the run
(tests/services.py). Separate processes (a web with its database down, a Redis stopped and started,
gunicorn with two workers, a Celery worker's JSON lines) are in test_operations_processes.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from controlplane.budgets.services import budget_set, usage_record
from controlplane.datasets.services import dataset_import_builtin
from controlplane.operations import logs
from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_cancel, run_claim, run_create
from controlplane.telemetry.services import step_ingest
from tests.controlplane.api.helpers import build_step_record, client_for

CONFIG = {"steps": 3, "batch_size": 4, "group_size": 2}


def scrape(client: Client | None = None, **headers) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    response = (client or Client()).get("/metrics", REMOTE_ADDR="127.0.0.1", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- liveness and readiness --------------------------------------------------------------------------
def test_healthz_answers_without_the_database_any_host_and_no_ssl_redirect(settings):
    # No db fixture: pytest-django refuses any database access here, so a 200 proves none happened.
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["edgeplane.example.com"]
    for path in ("/healthz", "/healthz/"):
        response = Client().get(path, HTTP_HOST="web:8000")  # a compose healthcheck's host, not an allowed one
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_is_ready_against_the_real_database_and_broker(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["edgeplane.example.com"]
    response = Client().get("/readyz", HTTP_HOST="10.0.0.5:8000")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and set(body["checks"]) == {"database", "migrations", "broker"}
    for check in body["checks"].values():
        assert check["ok"] is True and 0 <= check["ms"] < 3000
    assert body["checks"]["broker"]["transport"] == settings.CELERY_BROKER_URL.split("://")[0]


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_naming_an_unapplied_migration():
    recorder = MigrationRecorder(connection)
    latest = recorder.migration_qs.filter(app="runs").order_by("-applied", "-id").first()
    assert latest is not None
    latest.delete()  # the database now lacks one of the code's migrations, as before `migrate` ran
    try:
        response = Client().get("/readyz")
        assert response.status_code == 503, response.content
        body = response.json()
        assert body["failed"] == ["migrations"]
        detail = body["checks"]["migrations"]["detail"]
        assert f"runs.{latest.name}" in detail and "manage.py migrate" in detail
        assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    finally:
        recorder.record_applied("runs", latest.name)
    assert Client().get("/readyz").status_code == 200


@pytest.mark.django_db
def test_the_workers_summary_is_for_the_clients_metrics_answer(settings):
    settings.EDGEPLANE_METRICS_TOKEN = "tok"
    outside = Client().get("/readyz?workers=1", REMOTE_ADDR="8.8.8.8")
    assert outside.status_code == 200 and "EDGEPLANE_METRICS_TOKEN" in outside.json()["workers"]["error"]
    inside = Client().get("/readyz?workers=1", REMOTE_ADDR="8.8.8.8", HTTP_AUTHORIZATION="Bearer tok")
    assert inside.status_code == 200 and "count" in inside.json()["workers"], inside.json()


def test_the_operations_paths_are_routed_by_name_too():
    from django.urls import reverse

    assert [reverse(f"operations:{n}") for n in ("healthz", "readyz", "metrics")] == ["/healthz", "/readyz", "/metrics"]


# -- metrics: access -------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("address, headers, allowed", [
    ("127.0.0.1", {}, True),
    ("::1", {}, True),
    ("10.1.2.3", {}, True),
    ("172.18.0.4", {}, True),
    ("192.168.1.9", {}, True),
    ("8.8.8.8", {}, False),
    ("2001:4860::8888", {}, False),
    ("172.18.0.4", {"HTTP_X_FORWARDED_FOR": "8.8.8.8"}, False),  # through the TLS proxy: from outside
    ("127.0.0.1", {"HTTP_FORWARDED": "for=8.8.8.8"}, False),
])
def test_metrics_without_a_token_answer_direct_private_clients_only(settings, address, headers, allowed):
    settings.EDGEPLANE_METRICS_TOKEN = ""
    response = Client().get("/metrics", REMOTE_ADDR=address, **headers)
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        assert b"EDGEPLANE_METRICS_TOKEN" in response.content and b"edgeplane_" not in response.content


@pytest.mark.django_db
def test_metrics_with_a_token_need_it_from_everywhere(settings):
    settings.EDGEPLANE_METRICS_TOKEN = "s3cret-metrics-token"
    client = Client()
    refused = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Token s3cret-metrics-token"
                      ).status_code == 401
    answered = client.get("/metrics", REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR="8.8.8.8",
                          HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert answered.status_code == 200 and b"edgeplane_runs" in answered.content


# -- metrics: values that move ------------------------------------------------------------------------------
@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="add-tiny")


@pytest.mark.django_db
def test_an_ingested_step_adds_its_rows_to_the_counter_once_committed(acme, dataset, enqueued,
                                                                      django_capture_on_commit_callbacks):
    run = run_create(team=acme, dataset=dataset, name="r", config=CONFIG)
    run_claim(run_id=run.id, worker="w:1")
    before = scrape()
    keys = [f"p{i}" for i in range(7)]
    with django_capture_on_commit_callbacks(execute=True):
        step_ingest(run_id=run.id, record=build_step_record(0, keys, skipped=["s1", "s2"]))
    after = scrape()
    delta = {kind: value(after, "edgeplane_ingest_rows_total", kind=kind)
             - value(before, "edgeplane_ingest_rows_total", kind=kind) for kind in logs_kinds()}
    assert delta == {"steps": 1, "observations": 7, "decisions": 9}  # 7 kept + 2 skipped
    # A step whose transaction rolls back (after its rows went in) counts nothing.
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError, match="rolled back"), \
            transaction.atomic():
        step_ingest(run_id=run.id, record=build_step_record(1, keys))
        raise RuntimeError("rolled back")
    assert value(scrape(), "edgeplane_ingest_rows_total", kind="observations") == value(
        after, "edgeplane_ingest_rows_total", kind="observations")


def logs_kinds() -> tuple[str, ...]:
    from controlplane.operations.metrics import INGEST_KINDS

    return INGEST_KINDS


# The scrape reads in its own bounded thread and connection: it sees committed rows (transaction=True).
@pytest.mark.django_db(transaction=True)
def test_runs_by_status_follow_the_database(acme, dataset, enqueued):
    zero = scrape()
    assert all(value(zero, "edgeplane_runs", status=s) == 0 for s in RunStatus.values)
    runs = [run_create(team=acme, dataset=dataset, name=f"r{i}", config=CONFIG) for i in range(3)]
    assert value(scrape(), "edgeplane_runs", status="queued") == 3
    run_claim(run_id=runs[0].id, worker="w:1")
    run_cancel(run=Run.objects.get(pk=runs[1].id))
    samples = scrape()
    assert value(samples, "edgeplane_runs", status="queued") == 1
    assert value(samples, "edgeplane_runs", status="starting") == 1
    assert value(samples, "edgeplane_runs", status="cancelled") == 1
    assert value(samples, "edgeplane_metrics_collector_up", collector="runs") == 1


@pytest.mark.django_db(transaction=True)
def test_budget_use_per_team_counts_the_current_period_as_the_budget_page_does(acme, globex, dataset, enqueued):
    from controlplane.budgets.selectors import budget_status

    run = run_create(team=acme, dataset=dataset, name="r", config=CONFIG)
    usage_record(run=run, step=0, device_seconds=1800.0, uniform_seconds=3600.0)
    usage_record(run=run, step=1, device_seconds=900.0, uniform_seconds=900.0)
    samples = scrape()
    # Acme has no budget: all of its usage, and no limit series.
    assert value(samples, "edgeplane_team_budget_used_device_hours", team="acme") == pytest.approx(0.75)
    assert ("edgeplane_team_budget_limit_device_hours", (("team", "acme"),)) not in samples
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=30), limit_device_hours=5.0)
    budget_set(team=globex, period_start=today, period_end=today + dt.timedelta(days=30), limit_device_hours=2.0)
    # Usage before the period began does not count against it.
    from controlplane.budgets.models import UsageEntry
    from controlplane.budgets.services import usage_days_rebuild

    UsageEntry.objects.filter(run=run, step=0).update(recorded_at=timezone.now() - dt.timedelta(days=3))
    usage_days_rebuild(team_id=acme.id)  # the ledger changed around the services: its days follow
    samples = scrape()
    assert value(samples, "edgeplane_team_budget_used_device_hours", team="acme") == pytest.approx(0.25)
    assert value(samples, "edgeplane_team_budget_used_device_hours", team="acme") == pytest.approx(
        budget_status(acme).used_device_hours)
    assert value(samples, "edgeplane_team_budget_limit_device_hours", team="acme") == 5.0
    assert value(samples, "edgeplane_team_budget_used_device_hours", team="globex") == 0.0
    assert value(samples, "edgeplane_team_budget_limit_device_hours", team="globex") == 2.0


@pytest.mark.django_db
def test_queue_depth_counts_the_messages_waiting_in_the_broker():
    from controlplane.celery import app

    queue = "gpu"  # routed (verl), with no consumer in this test run
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue) if _exists(conn, queue) else None
        before = value(scrape(), "edgeplane_celery_queue_length", queue=queue)
        assert before == 0
        for _ in range(3):
            app.send_task("edgeplane.reconcile_verl_runs", queue=queue, connection=conn)
        try:
            samples = scrape()
            assert value(samples, "edgeplane_celery_queue_length", queue=queue) == 3
            assert ("edgeplane_celery_queue_length", (("queue", "celery"),)) in samples
            assert value(samples, "edgeplane_metrics_collector_up", collector="queues") == 1
        finally:
            conn.default_channel.queue_purge(queue)
    assert value(scrape(), "edgeplane_celery_queue_length", queue=queue) == 0


def _exists(conn, queue: str) -> bool:
    from kombu.exceptions import ChannelError

    try:
        conn.default_channel.queue_declare(queue=queue, passive=True)
        return True
    except ChannelError:
        return False


@pytest.mark.django_db
def test_request_latency_is_labelled_by_view_method_and_status_class_never_by_path(acme, dataset, enqueued):
    run = run_create(team=acme, dataset=dataset, name="r", config=CONFIG)
    other = run_create(team=acme, dataset=dataset, name="r2", config=CONFIG)
    client = client_for("bob")
    before = scrape()
    for pk in (run.id, other.id):
        assert client.get(f"/api/runs/{pk}/").status_code == 200
    assert client.get("/api/runs/999999/").status_code == 404
    assert Client().get(f"/no/such/page/{run.id}").status_code == 404
    text = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    views = set(re.findall(r'view="([^"]*)"', text))
    assert not any(str(run.id) in v or "/" in v for v in views), views  # names, not paths
    after = scrape()
    name = "edgeplane_http_request_duration_seconds_count"
    view = "api:run"
    assert view in views
    assert value(after, name, view=view, method="GET", status="2xx") - value(
        before, name, view=view, method="GET", status="2xx") == 2
    assert value(after, name, view=view, method="GET", status="4xx") - value(
        before, name, view=view, method="GET", status="4xx") == 1
    assert value(after, name, view="unresolved", method="GET", status="4xx") >= 1
    Client().generic("BREW", "/healthz")
    assert "BREW" not in Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()


# -- logs ---------------------------------------------------------------------------------------------------
def test_log_context_is_on_every_record_and_restored_after_the_block():
    formatter, context = logs.JsonFormatter(), logs.ContextFilter()

    def line(message: str) -> dict:
        record = logging.LogRecord("workers.engines.local.engine", logging.INFO, __file__, 1, message, (), None)
        context.filter(record)
        return json.loads(formatter.format(record))

    outside = line("before")
    assert set(outside) == {"time", "level", "logger", "message"} and "run_id" not in outside
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", outside["time"])
    seen: list[dict] = []
    with logs.log_context(run_id=7):
        with logs.log_context(attempt=2):
            inner = line("step 3")
            import contextvars

            thread = threading.Thread(target=contextvars.copy_context().run, args=(lambda: seen.append(line("t")),))
            thread.start()
            thread.join()
        assert "attempt" not in line("between")
    assert inner["run_id"] == 7 and inner["attempt"] == 2 and inner["level"] == "INFO"
    assert seen[0]["run_id"] == 7 and seen[0]["attempt"] == 2
    assert "run_id" not in line("after")


def test_the_plain_format_keeps_the_context_readable_and_a_bad_format_is_refused():
    formatter, context = logs.PlainFormatter(), logs.ContextFilter()
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    with logs.log_context(run_id=3, attempt=1):
        context.filter(record)
    assert formatter.format(record).endswith("WARNING x: hello you [run_id=3 attempt=1]")
    assert logs.log_format(None) == logs.log_format("") == "json" and logs.log_format(" Plain ") == "plain"
    with pytest.raises(ImproperlyConfigured, match="EDGEPLANE_LOG_FORMAT='xml'.*json, plain"):
        logs.log_format("xml")


@pytest.mark.django_db
def test_a_server_error_line_carries_its_request_id_as_a_field(acme, monkeypatch, caplog, settings):
    settings.DEBUG = False

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("controlplane.api.views.datasets_for_user", fail)
    client = client_for("alice")
    client.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="edgeplane.errors"):
        response = client.get("/api/datasets/")
    assert response.status_code == 500
    (record,) = [r for r in caplog.records if r.name == "edgeplane.errors"]
    logs.ContextFilter().filter(record)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == response["X-Request-ID"] == response.json()["request_id"]
    assert line["level"] == "ERROR" and "RuntimeError: boom" in line["exc_info"]
