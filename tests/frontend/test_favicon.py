"""Every dashboard page links the favicon (base.html), and the icon is a static file that exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from tests.frontend.conftest import KEYS

pytestmark = pytest.mark.django_db
ICON = '<link rel="icon" href="/static/frontend/favicon.svg" type="image/svg+xml">'


def test_every_page_links_the_favicon_and_it_exists(bob, run):
    pages = ["/", f"/runs/{run.id}/", f"/runs/{run.id}/audit/", f"/runs/{run.id}/prompt/?key={KEYS[0]}",
             "/runs/new/", f"/compare/?run={run.id}", "/teams/acme/budget/"]
    for url in pages:
        response = bob.get(url)
        assert response.status_code == 200, url
        assert ICON in response.content.decode(), url
    assert '<link rel="icon"' in Client().get("/accounts/login/").content.decode()  # before signing in too
    assert b"<svg" in Path(finders.find("frontend/favicon.svg")).read_bytes()
