"""Shared pytest fixtures. Tests mirror the code tree: tests/<package>/test_<module>.py.

Databases: `make test` runs tests/services.py, which starts PostgreSQL and Redis on loopback
and exports DATABASE_URL and CELERY_BROKER_URL; settings.py reads them, and pytest-django
creates test_<name> on that server. Run by hand without them, pytest falls back to SQLite and
the filesystem broker (EDGEPLANE_REQUIRE_SERVICES=1 turns that into failures:
tests/test_settings.py).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    where = f"{db['HOST']}:{db['PORT']}/{db['NAME']}" if db.get("HOST") else str(db["NAME"])
    broker = settings.CELERY_BROKER_URL.split("@")[-1]  # no credentials in the log
    return [f"edgeplane: database {db['ENGINE'].rsplit('.', 1)[-1]} {where}; broker {broker}"]


def database_url_of(settings_dict: dict[str, Any]) -> str:
    """The DATABASE_URL that points another process at the same database as settings_dict."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict["USER"] or "", safe="")
    password = quote(settings_dict["PASSWORD"] or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = quote(settings_dict["HOST"] or "", safe="")
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
    return f"postgres://{auth}{host}{port}/{quote(settings_dict['NAME'], safe='')}"


@pytest.fixture
def live_database_url(transactional_db: None) -> str:
    """DATABASE_URL of the test database, for a subprocess (a Celery worker, a management
    command) that must see what the test wrote. Data is committed (transactional_db), so the
    other process sees it; the tables are flushed after the test.

    On the SQLite fallback the test database lives in memory, out of other processes' reach:
    such a test skips there, unless EDGEPLANE_REQUIRE_SERVICES=1 (then it fails)."""
    from django.db import connection

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        message = "needs DATABASE_URL (a file or server database other processes can open)"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return database_url_of(connection.settings_dict)


@pytest.fixture
def test_redis_url() -> str:
    """A Redis database this test may write to and flush (EDGEPLANE_TEST_REDIS_URL)."""
    url = os.environ.get("EDGEPLANE_TEST_REDIS_URL", "")
    if not url:
        message = "needs EDGEPLANE_TEST_REDIS_URL (make test, or tests/services.py)"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


# -- teams and users shared by the API and dashboard tests ---------------------------------


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    """PBKDF2 costs ~0.5 s a password (1.5 s for the ``acme`` fixture's three users): every test
    hashes with MD5. A test whose users sign in to another process (a production server, which
    knows only the production hashers) sets ``settings.PASSWORD_HASHERS`` back for itself."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """Run ids whose launch would have been enqueued (nothing is sent to a broker)."""
    sent: list[int] = []
    monkeypatch.setattr("controlplane.runs.services.run_enqueue", lambda *, run_id: sent.append(run_id))
    return sent


@pytest.fixture
def acme(db):
    """Team Acme: alice (admin), bob (launcher), vera (viewer)."""
    from django.contrib.auth import get_user_model

    from controlplane.accounts.models import Role
    from controlplane.accounts.services import membership_set, team_create

    team = team_create(name="Acme", owner_username="alice", owner_password="alice-pw")
    User = get_user_model()
    for username, role in (("bob", Role.LAUNCHER), ("vera", Role.VIEWER)):
        User.objects.create_user(username=username, password=f"{username}-pw")
        membership_set(team=team, username=username, role=role)
    return team


@pytest.fixture
def globex(db):
    """Team Globex: mallory (admin), who must never see Acme's objects."""
    from controlplane.accounts.services import team_create

    return team_create(name="Globex", owner_username="mallory", owner_password="mallory-pw")
