"""Fixtures for the JSON API: two teams, members of every role, a dataset, a run, step records.

Team A ("acme"): alice (admin), bob (launcher), vera (viewer). Team B ("globex"): mallory
(admin), who must never see anything of team A. Launching a run enqueues a Celery task on
commit; here ``run_enqueue`` is replaced by a recorder, so nothing reaches a broker.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import token_issue
from tests.controlplane.api.helpers import TINY_CONFIG, client_for


@pytest.fixture(autouse=True)
def _offline(enqueued) -> None:
    """Every API test: launches recorded instead of sent (passwords: tests/conftest.py)."""


@pytest.fixture
def team_a(acme):
    return acme


@pytest.fixture
def team_b(globex):
    return globex


@pytest.fixture
def alice(team_a) -> APIClient:
    return client_for("alice")


@pytest.fixture
def bob(team_a) -> APIClient:
    return client_for("bob")


@pytest.fixture
def vera(team_a) -> APIClient:
    return client_for("vera")


@pytest.fixture
def mallory(team_b) -> APIClient:
    return client_for("mallory")


@pytest.fixture
def dataset_a(team_a):
    return dataset_import_builtin(team=team_a, task="add", n_train=16, n_test=4, name="add-small")


@pytest.fixture
def dataset_b(team_b):
    return dataset_import_builtin(team=team_b, task="add", n_train=16, n_test=4, name="add-b")


@pytest.fixture
def run_a(team_a, dataset_a):
    bob = get_user_model().objects.get(username="bob")
    return run_create(team=team_a, dataset=dataset_a, name="greso-tiny", config=dict(TINY_CONFIG), user=bob)


@pytest.fixture
def run_b(team_b, dataset_b):
    return run_create(team=team_b, dataset=dataset_b, name="globex-run", config=dict(TINY_CONFIG))


@pytest.fixture
def running(run_a):
    """Team A's run, claimed by a remote engine: what ingest accepts steps for."""
    run_claim(run_id=run_a.id, worker="remote:1")
    return run_a


@pytest.fixture
def token(running) -> str:
    """The running run's ingest token."""
    return token_issue(run_id=running.id)
