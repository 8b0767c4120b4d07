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
