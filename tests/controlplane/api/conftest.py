"""Fixtures for the JSON API: two teams, members of every role, a dataset, a run, step records.

Team A ("acme"): alice (admin), bob (launcher), vera (viewer). Team B ("globex"): mallory
(admin), who must never see anything of team A. Launching a run enqueues a Celery task on
commit; here ``run_enqueue`` is replaced by a recorder, so nothing reaches a broker.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from controlplane.accounts.models import Role
from controlplane.accounts.services import membership_set, team_create
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_create
from tests.controlplane.api.helpers import TINY_CONFIG, client_for


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    """PBKDF2 costs ~0.4 s a password; these tests create several users each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def enqueued(monkeypatch) -> list[int]:
    """Run ids whose launch would have been enqueued (nothing is sent to a broker)."""
    sent: list[int] = []
    monkeypatch.setattr("controlplane.runs.services.run_enqueue", lambda *, run_id: sent.append(run_id))
    return sent


@pytest.fixture
def team_a(db):
    team = team_create(name="Acme", owner_username="alice", owner_password="alice-pw")
    User = get_user_model()
    for username, role in (("bob", Role.LAUNCHER), ("vera", Role.VIEWER)):
        User.objects.create_user(username=username, password=f"{username}-pw")
        membership_set(team=team, username=username, role=role)
    return team


@pytest.fixture
def team_b(db):
    return team_create(name="Globex", owner_username="mallory", owner_password="mallory-pw")


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
