"""Settings come from the environment; `make test` runs on real PostgreSQL and Redis."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from controlplane.settings_env import database_from_url, env_int, secret_key_from
from tests.conftest import database_url_of

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1"


# The services `make test` promises. These fail, never skip, when the environment names a
# service that does not answer, or when EDGEPLANE_REQUIRE_SERVICES=1 and none is named.


@pytest.mark.django_db
def test_the_database_is_postgres_when_DATABASE_URL_is_set() -> None:
    from django.db import connection

    if not os.environ.get("DATABASE_URL"):
        assert not REQUIRED, "EDGEPLANE_REQUIRE_SERVICES=1 but DATABASE_URL is not set"
        assert connection.vendor == "sqlite"
        return
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), version()")
        name, version = cursor.fetchone()
    assert name == "test_" + database_from_url(os.environ["DATABASE_URL"])["NAME"]
    assert version.startswith("PostgreSQL")


def test_the_broker_is_redis_and_answers_ping_when_CELERY_BROKER_URL_is_set() -> None:
    import redis

    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url:
        assert not REQUIRED, "EDGEPLANE_REQUIRE_SERVICES=1 but CELERY_BROKER_URL is not set"
        assert settings.CELERY_BROKER_URL == "filesystem://"
        return
    assert settings.CELERY_BROKER_URL == url
    assert url.startswith(("redis://", "rediss://")), url
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_a_message_goes_through_the_configured_broker_and_comes_back(tmp_path: Path) -> None:
    from kombu import Connection

    options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}))
    if settings.CELERY_BROKER_URL == "filesystem://":  # keep var/'s queue out of it
        options.update(data_folder_in=str(tmp_path), data_folder_out=str(tmp_path))
        options.update(processed_folder=str(tmp_path))
    queue_name = f"test-settings-{uuid.uuid4().hex}"
    with Connection(settings.CELERY_BROKER_URL, transport_options=options) as conn:
        queue = conn.SimpleQueue(queue_name)
        try:
            queue.put({"hello": "broker"})
            message = queue.get(timeout=10)
            message.ack()
            assert message.payload == {"hello": "broker"}
        finally:
            queue.clear()
            conn.default_channel.queue_delete(queue_name)
            queue.close()


# Settings from the environment.


def test_a_postgres_url_becomes_a_django_database() -> None:
    db = database_from_url(
        "postgres://ed%40ge:p%3Ass%2Fw@db.example.com:6543/edgeplane?sslmode=require",
        conn_max_age=60,
    )
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"]) == ("ed@ge", "p:ss/w")
    assert (db["HOST"], db["PORT"], db["NAME"]) == ("db.example.com", "6543", "edgeplane")
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert (db["CONN_MAX_AGE"], db["CONN_HEALTH_CHECKS"]) == (60, True)


def test_a_postgres_url_may_name_a_socket_directory_and_omit_credentials_and_port() -> None:
    db = database_from_url("postgresql://%2Fvar%2Frun%2FPostgreSQL/edgeplane")
    assert (db["HOST"], db["PORT"], db["USER"], db["PASSWORD"]) == (
        "/var/run/PostgreSQL", "", "", ""
    )  # fmt: skip


def test_an_ipv6_host_loses_its_brackets() -> None:
    assert database_from_url("postgres://u:p@[::1]:5432/x")["HOST"] == "::1"


def test_a_sqlite_url_names_an_absolute_file() -> None:
    db = database_from_url("sqlite:////tmp/edgeplane.sqlite3")
    assert db == {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/edgeplane.sqlite3"}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u:p@h/db", "scheme 'mysql'"),
        ("postgres://u:p@h:5432", "names no database"),
        ("postgres://u:p@h:port/db", "bad port"),
        ("sqlite://relative.db", "absolute path"),
    ],
)
def test_a_bad_database_url_fails_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=says):
        database_from_url(url)


def test_the_test_database_url_round_trips_through_the_parser() -> None:
    url = database_url_of(
        {"ENGINE": "django.db.backends.postgresql", "NAME": "test_edgeplane", "USER": "ed",
         "PASSWORD": "p@ss:w/rd", "HOST": "127.0.0.1", "PORT": "5433"}
    )  # fmt: skip
    db = database_from_url(url)
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "test_edgeplane", "ed", "p@ss:w/rd", "127.0.0.1", "5433"
    )  # fmt: skip


def test_the_secret_key_is_created_once_mode_600_and_then_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "secret_key"
    first = secret_key_from({}, key_file)
    assert len(first) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert secret_key_from({}, key_file) == first
    assert secret_key_from({"SECRET_KEY": "from-env"}, key_file) == "from-env"
    assert list(tmp_path.joinpath("var").iterdir()) == [key_file]  # no temp file left


def test_the_base_settings_hold_no_hard_coded_secret_key() -> None:
    text = (ROOT / "controlplane" / "settings.py").read_text()
    assert "django-insecure" not in text


def test_a_number_setting_that_is_not_a_number_fails_naming_the_variable() -> None:
    assert env_int({}, "EDGEPLANE_MAX_ATTEMPTS", 3) == 3
    assert env_int({"EDGEPLANE_MAX_ATTEMPTS": " 5 "}, "EDGEPLANE_MAX_ATTEMPTS", 3) == 5
    with pytest.raises(ImproperlyConfigured, match="EDGEPLANE_MAX_ATTEMPTS='three'"):
        env_int({"EDGEPLANE_MAX_ATTEMPTS": "three"}, "EDGEPLANE_MAX_ATTEMPTS", 3)


def _settings_in_a_fresh_process(env: dict[str, str], code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        check=False,
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_edgeplane_settings_have_defaults_and_follow_the_environment(tmp_path: Path) -> None:
    names = [
        "EDGEPLANE_HEARTBEAT_STALE_SECONDS",
        "EDGEPLANE_MAX_ATTEMPTS",
        "EDGEPLANE_RUNS_DIR",
        "EDGEPLANE_UPLOAD_MAX_BYTES",
        "EDGEPLANE_RECONCILE_SECONDS",
    ]
    code = f"from django.conf import settings as s; print(*(getattr(s, n) for n in {names!r}))"
    clean = {name: "" for name in names} | {"EDGEPLANE_VAR_DIR": str(tmp_path)}
    assert _settings_in_a_fresh_process(clean, code).split() == [
        "120", "3", str(tmp_path / "runs"), str(50 * 1024 * 1024), "30"
    ]  # fmt: skip
    given = clean | {
        "EDGEPLANE_HEARTBEAT_STALE_SECONDS": "7", "EDGEPLANE_MAX_ATTEMPTS": "5",
        "EDGEPLANE_RUNS_DIR": "/srv/runs", "EDGEPLANE_UPLOAD_MAX_BYTES": "1000",
        "EDGEPLANE_RECONCILE_SECONDS": "2",
    }  # fmt: skip
    assert _settings_in_a_fresh_process(given, code).split() == ["7", "5", "/srv/runs", "1000", "2"]


@pytest.mark.parametrize(("value", "debug"), [(None, "False"), ("", "False"), ("0", "False"), ("yes", "False"),
                                              ("1", "True")])
def test_debug_is_off_unless_DJANGO_DEBUG_is_1(tmp_path: Path, value: str | None, debug: str) -> None:
    env = {"EDGEPLANE_VAR_DIR": str(tmp_path)}
    env_without = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c",
         "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        check=True, cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**env_without, "DJANGO_SETTINGS_MODULE": "controlplane.settings", **env,
             **({} if value is None else {"DJANGO_DEBUG": value})},
    )
    assert result.stdout.strip() == debug


def test_without_DATABASE_URL_the_database_is_sqlite_in_wal_mode_under_var(tmp_path: Path) -> None:
    code = (
        "from django.db import connection as c; c.ensure_connection();"
        " cur = c.cursor(); cur.execute('PRAGMA journal_mode');"
        " print(c.vendor, c.settings_dict['NAME'], cur.fetchone()[0])"
    )
    env = {"DATABASE_URL": "", "EDGEPLANE_VAR_DIR": str(tmp_path)}
    assert _settings_in_a_fresh_process(env, code).split() == [
        "sqlite", str(tmp_path / "edgeplane.sqlite3"), "wal"
    ]  # fmt: skip


def test_celery_runs_every_task_through_the_broker_one_message_at_a_time() -> None:
    from controlplane.celery import app

    conf = app.conf
    assert conf.broker_url == settings.CELERY_BROKER_URL
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.task_always_eager is False
    assert conf.beat_schedule["reconcile-runs"]["task"] == "edgeplane.reconcile_runs"
    assert conf.beat_schedule["reconcile-runs"]["schedule"] == settings.EDGEPLANE_RECONCILE_SECONDS


def test_every_beat_entry_names_a_task_the_workers_know_and_expires_within_its_period() -> None:
    from controlplane.celery import app

    app.loader.import_default_modules()  # what a worker imports at start (the apps' tasks modules)
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, f"beat entry {name}: no task {entry['task']}"
        assert entry["options"]["expires"] <= entry["schedule"], name
    purge = app.conf.beat_schedule["dropped-partitions-purge"]
    assert purge["schedule"] == settings.EDGEPLANE_PARTITIONS_PURGE_SECONDS
    assert app.conf.task_routes[purge["task"]] == {"queue": settings.EDGEPLANE_CONTROL_QUEUE}


def test_a_redis_broker_gets_a_visibility_timeout_from_the_environment(tmp_path: Path) -> None:
    code = "from controlplane.celery import app; print(app.conf.broker_transport_options)"
    env = {
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "CELERY_BROKER_VISIBILITY_TIMEOUT": "600",
        "EDGEPLANE_VAR_DIR": str(tmp_path),
    }
    assert _settings_in_a_fresh_process(env, code) == "{'visibility_timeout': 600}"


# Production mode.


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings_production", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_production_settings_pass_the_deploy_check_with_no_warnings() -> None:
    env = {"SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "edgeplane.example.com"}
    result = _manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("missing", "kept"),
    [("SECRET_KEY", "DJANGO_ALLOWED_HOSTS"), ("DJANGO_ALLOWED_HOSTS", "SECRET_KEY")],
)
def test_production_settings_refuse_to_start_without(missing: str, kept: str) -> None:
    values = {"SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "example.com"}
    result = _manage({missing: "", kept: values[kept]}, "check")
    assert result.returncode != 0
    assert f"needs {missing}" in result.stderr
