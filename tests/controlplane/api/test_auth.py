"""Signing in: API tokens, browser sessions, and nothing for the unauthenticated."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

# Every endpoint that needs a user, as (method, path template); {run} and {dataset} are
# filled with ids of team A's objects, {team} with its slug.
USER_ENDPOINTS = [
    ("get", "/api/datasets/"),
    ("post", "/api/datasets/"),
    ("get", "/api/datasets/{dataset}/"),
    ("get", "/api/runs/"),
    ("post", "/api/runs/"),
    ("get", "/api/runs/{run}/"),
    ("post", "/api/runs/{run}/cancel/"),
    ("get", "/api/runs/{run}/steps/"),
    ("get", "/api/runs/{run}/evaluations/"),
    ("get", "/api/runs/{run}/decisions/"),
    ("get", "/api/runs/{run}/prompts/"),
    ("get", "/api/teams/{team}/budget/"),
    ("get", "/api/teams/{team}/telemetry-retention/"),
    ("put", "/api/teams/{team}/telemetry-retention/"),
]


def fill(path: str, run, dataset, team) -> str:
    return path.format(run=run.id, dataset=dataset.id, team=team.slug)


@pytest.mark.django_db
def test_a_user_trades_username_and_password_for_a_token_that_opens_the_api(team_a, dataset_a):
    client = APIClient()
    answer = client.post("/api/auth/token/", {"username": "alice", "password": "alice-pw"}, format="json")
    assert answer.status_code == 200
    token = answer.json()["token"]
    assert len(token) == 40

    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    datasets = client.get("/api/datasets/")
    assert datasets.status_code == 200
    assert [d["name"] for d in datasets.json()] == ["add-small"]
    # Asking again gives the same token.
    again = APIClient().post("/api/auth/token/", {"username": "alice", "password": "alice-pw"}, format="json")
    assert again.json()["token"] == token


@pytest.mark.django_db
def test_a_wrong_password_gets_no_token(team_a):
    answer = APIClient().post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert answer.status_code == 400
    assert "token" not in answer.json()


@pytest.mark.django_db
def test_a_browser_session_opens_the_api_too(team_a, dataset_a):
    client = APIClient()
    assert client.login(username="alice", password="alice-pw")
    assert client.get(f"/api/datasets/{dataset_a.id}/").status_code == 200


@pytest.mark.django_db
def test_an_unknown_token_is_refused_with_401(team_a):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.get("/api/runs/").status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), USER_ENDPOINTS)
def test_every_endpoint_refuses_an_unauthenticated_request_with_401(method, path, run_a, dataset_a, team_a):
    answer = getattr(APIClient(), method)(fill(path, run_a, dataset_a, team_a), {}, format="json")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_the_ingest_endpoint_refuses_a_request_without_a_run_token_with_401(run_a):
    answer = APIClient().post(f"/api/ingest/runs/{run_a.id}/steps/", {"event": "checkpoint", "step": 0},
                              format="json")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == "RunToken"


@pytest.mark.django_db
def test_the_openapi_schema_is_public_and_lists_every_endpoint():
    answer = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert answer.status_code == 200
    paths = answer.json()["paths"]
    for _, path in USER_ENDPOINTS:
        templated = path.replace("{run}", "{run_id}").replace("{dataset}", "{dataset_id}").replace("{team}", "{slug}")
        assert templated in paths, templated
    assert "/api/auth/token/" in paths
    assert "/api/ingest/runs/{run_id}/steps/" in paths
