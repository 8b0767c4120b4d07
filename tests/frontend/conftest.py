"""Fixtures of the dashboard tests: two teams, members of every role, a dataset, a run that
has trained a few steps (written through the real ingestion service).

Team "acme": alice (admin), bob (launcher), vera (viewer). Team "globex": mallory (admin),
who must never see anything of acme's.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import evaluation_ingest, step_ingest
from tests.frontend.helpers import CONFIG, step_record


def client_for(username: str) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def alice(acme) -> Client:
    return client_for("alice")


@pytest.fixture
def bob(acme) -> Client:
    return client_for("bob")


@pytest.fixture
def vera(acme) -> Client:
    return client_for("vera")


@pytest.fixture
def mallory(globex) -> Client:
    return client_for("mallory")


@pytest.fixture
def dataset(acme):
    return dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")


KEYS = [f"edgeplane/add:{i}" for i in range(4, 10)]


def train(run, steps: range, keys: list[str] | None = None) -> None:
    """Write steps through the ingestion service, with an evaluation every 2 steps."""
    for step in steps:
        step_ingest(run_id=run.id, record=step_record(step, keys or KEYS[:4], skipped=KEYS[4:]))
        if step % 2 == 0:
            evaluation_ingest(run_id=run.id, record={"step": step, "k": 4, "pass_at_1": 0.1 + step / 50,
                                                     "pass_at_k": 0.3 + step / 40, "prompts": 4})


@pytest.fixture
def run(acme, dataset, enqueued):
    """A HIVE + HORA + RL-ZVP + LZE run of bob's that has trained steps 0-5."""
    bob = get_user_model().objects.get(username="bob")
    run = run_create(team=acme, dataset=dataset, name="edge-run", config=dict(CONFIG), user=bob)
    run_claim(run_id=run.id, worker="test:1")
    train(run, range(6))
    run.refresh_from_db()
    return run
