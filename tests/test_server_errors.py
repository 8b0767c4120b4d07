"""No 500 shows settings, environment or a traceback: with DEBUG off, an unexpected error in a
view answers a generic JSON (API, chart data) or a plain page with a request id, and the log
has that id with the traceback. Exercised through the live server (a real HTTP request) with
a selector made to fail in-process."""

from __future__ import annotations

import logging
import os

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from controlplane.api.services import api_token_get_or_create

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_MARK = "s3cr3t-value-that-must-never-show"


class Boom(RuntimeError):
    pass


def _fail(*args, **kwargs):
    raise Boom(f"unexpected failure with {SECRET_MARK} in its message")


@pytest.fixture
def failing(monkeypatch, settings, acme, fast_passwords):
    settings.DEBUG = False
    settings.SECRET_KEY = SECRET_MARK + "-key"
    monkeypatch.setenv("DATABASE_URL_SHOWN", SECRET_MARK)
    # every read these views make first, made to fail
    monkeypatch.setattr("controlplane.api.views.datasets_for_user", _fail)
    monkeypatch.setattr("controlplane.api.views.budget_overview", _fail)
    monkeypatch.setattr("frontend.views.budget_overview", _fail)
    monkeypatch.setattr("frontend.data_views.teams_for_user", _fail)
    return acme


def signed_in(username: str) -> requests.Session:
    """A browser session of the user's (a session cookie the live server accepts)."""
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    session = requests.Session()
    session.cookies.set(django_settings.SESSION_COOKIE_NAME, client.cookies[django_settings.SESSION_COOKIE_NAME].value)
    return session


def _assert_nothing_leaks(response) -> None:
    body = response.text
    assert response.status_code == 500, body[:300]
    assert "Traceback" not in body and "Boom" not in body and SECRET_MARK not in body
    assert django_settings.SECRET_KEY not in body
    db = django_settings.DATABASES["default"]
    for value in (db.get("PASSWORD"), db.get("NAME"), os.environ.get("DATABASE_URL")):
        if value:
            assert str(value) not in body
    assert "request id" in body.lower() or "request_id" in body
    assert response.headers.get("X-Request-ID")


def test_an_unexpected_error_in_the_api_answers_json_with_a_request_id_and_no_traceback(
        live_server, failing, caplog):
    token = api_token_get_or_create(user=get_user_model().objects.get(username="alice"))
    with caplog.at_level(logging.ERROR, logger="edgeplane.errors"):
        for path in ("/api/datasets/", "/api/teams/acme/budget/"):
            response = requests.get(live_server.url + path, headers={"Authorization": f"Token {token}"}, timeout=30)
            _assert_nothing_leaks(response)
            body = response.json()
            assert body["request_id"] == response.headers["X-Request-ID"]
            logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
            assert logged and logged[0].exc_info and logged[0].exc_info[0] is Boom  # the traceback is in the log


def test_an_unexpected_error_in_a_page_or_chart_data_answers_without_a_traceback(live_server, failing, caplog):
    session = signed_in("alice")
    with caplog.at_level(logging.ERROR, logger="edgeplane.errors"):
        page = session.get(live_server.url + "/teams/acme/budget/", timeout=30)
        _assert_nothing_leaks(page)
        assert page.headers["Content-Type"].startswith("text/html")
        data = session.get(live_server.url + "/data/forecast/?team=acme", timeout=30)
        _assert_nothing_leaks(data)
        assert data.json()["request_id"] == data.headers["X-Request-ID"]
    ids = {page.headers["X-Request-ID"], data.headers["X-Request-ID"]}
    assert ids <= {i for r in caplog.records for i in ids if i in r.getMessage()}
