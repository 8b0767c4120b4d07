"""The dashboard and an archived run: the prompt page, the audit trail and its downloads show what
they showed from the database; the run page says its per-prompt detail was archived; the team
page sets the retention."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core.cache import cache
from django.utils import timezone

from controlplane.accounts.models import Team
from controlplane.runs.models import Run, RunStatus
from controlplane.telemetry.models import PromptObservation, SelectionDecision
from controlplane.telemetry.retention import run_telemetry_archive
from tests.frontend.conftest import KEYS

pytestmark = pytest.mark.django_db

AUDIT_QUERIES = [
    {},
    {"prompt": KEYS[1]},
    {"method": "hora"},
    {"action": "allocated", "step_min": 2, "step_max": 4},
    {"method": "hive", "action": "skipped"},
    {"prompt": "nobody"},
]


@pytest.fixture(autouse=True)
def _archive_dir(settings, tmp_path):
    settings.EDGEPLANE_ARCHIVE_DIR = tmp_path / "archive"


@pytest.fixture
def finished(run):
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now() - dt.timedelta(days=60))
    return Run.objects.get(pk=run.pk)


def _page(response) -> str:
    """The page without what differs between two renders (CSRF tokens) or marks the archive."""
    assert response.status_code == 200, response.status_code
    text = response.content.decode()
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", text)
    return re.sub(r'<p class="archived-note[^>]*>.*?</p>', "", text)


def _streamed(response) -> bytes:
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def _views(client, run) -> dict:
    out = {}
    for key in KEYS:
        response = client.get(f"/runs/{run.id}/prompt/", {"key": key})
        out[f"prompt {key}"] = (
            _page(response),
            response.context["series"],
            response.context["changes"],
            response.context["decisions"],
        )
    for query in AUDIT_QUERIES:
        pages, params = [], dict(query)
        while True:
            response = client.get(f"/runs/{run.id}/audit/", params)
            pages.append((_page(response), response.context["rows"]))
            if not response.context["next_url"]:
                break
            params = {**query, "cursor": response.context["next_url"].rsplit("cursor=", 1)[1]}
        out[f"audit {query}"] = pages
        for fmt in ("csv", "json"):
            response = client.get(f"/runs/{run.id}/audit/export/", {**query, "format": fmt})
            out[f"export {fmt} {query}"] = _streamed(response)
    out["recent"] = client.get(f"/data/runs/{run.id}/recent/").json()["results"]
    cache.clear()  # the windowed charts are cached by the newest step, which archiving leaves alone
    for chart in ("actions", "hora"):  # drawn from the steps' decision counts, which stay in the database
        for params in ({}, {"after": 2}, {"points": 2}, {"points": 4, "until": 4}):
            out[f"chart {chart} {params}"] = client.get(f"/data/runs/{run.id}/{chart}/", params).json()
    for chart in ("decisions", "hora"):
        out[f"export {chart}"] = client.get(f"/data/runs/{run.id}/export/", {"chart": chart, "format": "csv"}).content
    return out


def test_the_prompt_page_audit_trail_and_downloads_read_the_same_from_the_archive(bob, finished, monkeypatch):
    monkeypatch.setattr("frontend.selectors.AUDIT_PAGE", 7)  # pages of a few decisions, and several of them
    monkeypatch.setattr("frontend.exports.AUDIT_CHUNK", 5)
    before = _views(bob, finished)
    assert len(before["audit {}"]) > 1  # several pages of decisions
    assert before[f"prompt {KEYS[0]}"][3] and before["recent"]
    assert before["chart hora {}"]["step"] and before["chart actions {'points': 2}"]["step"]

    run_telemetry_archive(finished.id)
    assert not PromptObservation.objects.filter(run=finished).exists()
    assert not SelectionDecision.objects.filter(run=finished).exists()

    after = _views(bob, finished)
    for name in before:
        assert after[name] == before[name], name
    prompt = bob.get(f"/runs/{finished.id}/prompt/", {"key": KEYS[0]}).content.decode()
    assert "Read from the Parquet archive" in prompt


def test_the_run_page_says_the_per_prompt_detail_was_archived(bob, finished):
    assert "run-archived" not in bob.get(f"/runs/{finished.id}/").content.decode()
    run_telemetry_archive(finished.id)
    page = bob.get(f"/runs/{finished.id}/").content.decode()
    assert 'id="run-archived"' in page and "have no per-prompt detail" in page


# -- the team page's retention form -------------------------------------------------------------------------


def test_an_admin_sets_and_clears_the_retention_on_the_team_page(alice, acme):
    page = alice.get("/teams/acme/").content.decode()
    assert 'value="set_retention"' in page and "kept forever" in page
    response = alice.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": "90"})
    assert response.status_code == 302
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days == 90
    assert "90 days" in alice.get("/teams/acme/").content.decode()
    alice.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": ""})
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days is None


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "a month"])
def test_the_team_page_refuses_a_retention_that_is_not_whole_days(alice, acme, raw):
    acme.telemetry_retention_days = 30
    acme.save()
    response = alice.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": raw})
    assert response.status_code == 400
    page = response.content.decode()
    assert "whole number of days, 1 or more" in page and f'value="{raw}"' in page
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days == 30


def test_only_admins_set_the_retention(bob, vera, mallory, acme):
    for client in (bob, vera):
        page = client.get("/teams/acme/").content.decode()
        assert 'value="set_retention"' not in page
        assert (
            client.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": "3"}).status_code == 403
        )
    assert mallory.post("/teams/acme/", {"action": "set_retention", "telemetry_retention_days": "3"}).status_code == 404
    assert Team.objects.get(pk=acme.pk).telemetry_retention_days is None
