"""Team isolation: another team's objects are not found (404), on every endpoint."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run
from tests.controlplane.api.helpers import TINY_CONFIG
from tests.controlplane.api.test_auth import USER_ENDPOINTS, fill

JSONL = b'{"prompt": "1+1=", "ground_truth": "2", "data_source": "t", "extra_info": {"index": 0}}\n'


def body_for(method: str, path: str, team, dataset) -> tuple[dict, str]:
    """A request body that would succeed for a member of the team (so a 404 can only mean
    "not yours")."""
    if method == "post" and path == "/api/datasets/":
        return {"team": team.slug, "name": "sneaky", "file": SimpleUploadedFile("x.jsonl", JSONL)}, "multipart"
    if method == "post" and path == "/api/runs/":
        return {"team": team.slug, "dataset": dataset.id, "name": "sneaky", "config": TINY_CONFIG}, "json"
    if method == "put" and path.endswith("/telemetry-retention/"):
        return {"telemetry_retention_days": 30}, "json"
    return {}, "json"


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), [e for e in USER_ENDPOINTS if "{" in e[1] or e[0] == "post"])
def test_a_member_of_another_team_gets_404_for_every_object_of_team_a(method, path, mallory, run_a, dataset_a,
                                                                         team_a):
    data, fmt = body_for(method, path, team_a, dataset_a)
    answer = getattr(mallory, method)(fill(path, run_a, dataset_a, team_a), data, format=fmt)
    assert answer.status_code == 404, answer.content
    assert Dataset.objects.filter(name="sneaky").count() == 0
    assert Run.objects.filter(name="sneaky").count() == 0
    assert Run.objects.get(pk=run_a.pk).cancel_requested is False


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), [e for e in USER_ENDPOINTS if "{" in e[1] or e[0] == "post"])
def test_the_same_requests_succeed_for_a_member_of_team_a(method, path, alice, run_a, dataset_a, team_a):
    data, fmt = body_for(method, path, team_a, dataset_a)
    answer = getattr(alice, method)(fill(path, run_a, dataset_a, team_a), data, format=fmt)
    assert answer.status_code in (200, 201, 202), answer.content


@pytest.mark.django_db
def test_lists_hold_only_the_callers_teams_objects(mallory, alice, run_a, run_b, dataset_a, dataset_b):
    assert [d["id"] for d in mallory.get("/api/datasets/").json()] == [dataset_b.id]
    assert [r["id"] for r in mallory.get("/api/runs/").json()["results"]] == [run_b.id]
    assert [r["id"] for r in alice.get("/api/runs/").json()["results"]] == [run_a.id]
    # Filtering by another team's slug or dataset finds nothing rather than leaking.
    assert mallory.get("/api/runs/", {"team": "acme"}).json()["results"] == []
    assert mallory.get("/api/runs/", {"dataset": dataset_a.id}).json()["results"] == []


@pytest.mark.django_db
def test_a_run_cannot_be_launched_on_another_teams_dataset(mallory, team_b, dataset_a):
    answer = mallory.post("/api/runs/", {"team": team_b.slug, "dataset": dataset_a.id, "name": "x",
                                         "config": TINY_CONFIG}, format="json")
    assert answer.status_code == 400
    assert answer.json()["errors"] == {"dataset": [f"no dataset {dataset_a.id} in team globex"]}
    assert not Run.objects.filter(name="x").exists()


@pytest.mark.django_db
def test_an_object_that_does_not_exist_is_404_like_another_teams(alice):
    for path in ("/api/runs/999999/", "/api/runs/999999/steps/", "/api/datasets/999999/",
                 "/api/teams/nobody/budget/"):
        assert alice.get(path).status_code == 404
