"""The API's per-prompt reads of a run whose telemetry was archived to Parquet answer what they
answered from the database: same rows, same order, same pages and links."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.utils import timezone

from controlplane.runs.models import Run, RunStatus
from controlplane.telemetry.models import SelectionDecision
from controlplane.telemetry.retention import run_telemetry_archive
from controlplane.telemetry.services import step_ingest
from tests.controlplane.api.helpers import step_record

QUERIES = [
    {},
    {"page_size": 5},
    {"page_size": 1},
    {"prompt": "k2"},
    {"prompt": "k3", "after": 0},
    {"prompt": "k3", "step_min": 1, "step_max": 1},
    {"method": "greso", "action": "skipped"},
    {"method": "greso", "action": "skipped", "page_size": 3},
    {"method": "hive"},
    {"prompt": "nobody"},
    {"step_min": 1, "page_size": 4},
]


@pytest.fixture(autouse=True)
def _archive_dir(settings, tmp_path):
    settings.EDGEPLANE_ARCHIVE_DIR = tmp_path / "archive"


@pytest.fixture
def finished(running):
    """Five steps, k0..k5 rolled out or skipped in turn; then the run succeeded long ago."""
    keys = [f"k{i}" for i in range(6)]
    for step in range(5):
        rolled = keys[step % 3 : step % 3 + 3]
        step_ingest(
            run_id=running.id,
            record=step_record(
                step, rolled, skipped=[k for k in keys if k not in rolled], successes=[(step + i) % 3 for i in range(3)]
            ),
        )
    Run.objects.filter(pk=running.pk).update(
        status=RunStatus.SUCCEEDED, finished_at=timezone.now() - dt.timedelta(days=100)
    )
    return Run.objects.get(pk=running.pk)


def _walk(client, url: str, query: dict) -> list[dict]:
    """Every page of a query, following next links to the end and then previous links back."""
    pages = [client.get(url, query).json()]
    while pages[-1]["next"]:
        pages.append(client.get(pages[-1]["next"]).json())
    back = pages[-1]
    while back["previous"]:
        back = client.get(back["previous"]).json()
        pages.append(back)
    return pages


@pytest.mark.django_db
def test_decisions_of_an_archived_run_answer_as_from_the_database(alice, finished):
    url = f"/api/runs/{finished.id}/decisions/"
    before = {str(q): _walk(alice, url, q) for q in QUERIES}
    assert len(before[str({"page_size": 1})]) > 10  # there are many pages to walk both ways
    assert any(d["scores"] for d in before[str({})][0]["results"])

    run_telemetry_archive(finished.id)
    assert not SelectionDecision.objects.filter(run=finished).exists()

    for query in QUERIES:
        assert _walk(alice, url, query) == before[str(query)], query


@pytest.mark.django_db
def test_an_archived_run_still_refuses_bad_filters_and_cursors(alice, finished):
    url = f"/api/runs/{finished.id}/decisions/"
    forged = base64.b64encode(b"p=abc").decode()  # a position that is no id
    run_telemetry_archive(finished.id)
    assert alice.get(url, {"action": "exploded"}).status_code == 400
    assert alice.get(url, {"step_min": 3, "step_max": 1}).status_code == 400
    assert alice.get(url, {"cursor": forged}).status_code == 404


@pytest.mark.django_db
def test_another_teams_archived_run_is_not_found(mallory, finished):
    run_telemetry_archive(finished.id)
    assert mallory.get(f"/api/runs/{finished.id}/decisions/").status_code == 404


# -- the team's retention ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_members_read_the_retention_and_admins_set_it(alice, bob, vera, team_a):
    url = "/api/teams/acme/telemetry-retention/"
    assert vera.get(url).json() == {"team": "acme", "telemetry_retention_days": None}
    response = alice.put(url, {"telemetry_retention_days": 90}, format="json")
    assert response.status_code == 200 and response.json() == {"team": "acme", "telemetry_retention_days": 90}
    assert bob.get(url).json()["telemetry_retention_days"] == 90
    assert alice.put(url, {"telemetry_retention_days": None}, format="json").json()["telemetry_retention_days"] is None
    for client in (bob, vera):
        assert client.put(url, {"telemetry_retention_days": 5}, format="json").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("value", [0, -1, 1.5, "ten", True, [3], 36501])
def test_a_retention_that_is_not_whole_days_is_a_400_saying_so(alice, team_a, value):
    url = "/api/teams/acme/telemetry-retention/"
    alice.put(url, {"telemetry_retention_days": 30}, format="json")
    response = alice.put(url, {"telemetry_retention_days": value}, format="json")
    assert response.status_code == 400
    assert "whole number of days, 1 or more" in response.json()["errors"]["telemetry_retention_days"][0]
    assert alice.get(url).json()["telemetry_retention_days"] == 30
    assert alice.put(url, {}, format="json").status_code == 400


@pytest.mark.django_db
def test_another_teams_retention_is_not_found(mallory, team_a):
    url = "/api/teams/acme/telemetry-retention/"
    assert mallory.get(url).status_code == 404
    assert mallory.put(url, {"telemetry_retention_days": 1}, format="json").status_code == 404
