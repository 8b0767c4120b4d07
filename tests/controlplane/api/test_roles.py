"""Roles: viewers read; launchers also upload, launch and cancel (403 otherwise)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run, RunStatus
from tests.controlplane.api.helpers import TINY_CONFIG
from tests.controlplane.api.test_isolation import JSONL


@pytest.mark.django_db
def test_a_viewer_cannot_upload_a_dataset(vera, team_a):
    answer = vera.post("/api/datasets/", {"team": team_a.slug, "name": "v",
                                          "file": SimpleUploadedFile("v.jsonl", JSONL)}, format="multipart")
    assert answer.status_code == 403
    assert "launcher" in answer.json()["detail"]
    assert not Dataset.objects.filter(name="v").exists()


@pytest.mark.django_db
def test_a_viewer_cannot_launch_a_run(vera, team_a, dataset_a, enqueued):
    answer = vera.post("/api/runs/", {"team": team_a.slug, "dataset": dataset_a.id, "name": "v",
                                      "config": TINY_CONFIG}, format="json")
    assert answer.status_code == 403
    assert not Run.objects.filter(name="v").exists()
    assert enqueued == []


@pytest.mark.django_db
def test_a_viewer_cannot_cancel_a_run(vera, run_a):
    answer = vera.post(f"/api/runs/{run_a.id}/cancel/")
    assert answer.status_code == 403
    run_a.refresh_from_db()
    assert run_a.status == RunStatus.QUEUED and not run_a.cancel_requested


@pytest.mark.django_db
def test_a_viewer_reads_everything_of_the_team(vera, run_a, dataset_a, team_a):
    for path in (f"/api/runs/{run_a.id}/", f"/api/runs/{run_a.id}/steps/", f"/api/runs/{run_a.id}/decisions/",
                 f"/api/runs/{run_a.id}/prompts/", f"/api/runs/{run_a.id}/evaluations/",
                 f"/api/datasets/{dataset_a.id}/", f"/api/teams/{team_a.slug}/budget/"):
        assert vera.get(path).status_code == 200, path


@pytest.mark.django_db
def test_a_launcher_uploads_launches_and_cancels(bob, team_a, dataset_a, enqueued, django_capture_on_commit_callbacks):
    upload = bob.post("/api/datasets/", {"team": team_a.slug, "name": "b",
                                         "file": SimpleUploadedFile("b.jsonl", JSONL)}, format="multipart")
    assert upload.status_code == 201
    with django_capture_on_commit_callbacks(execute=True):
        launch = bob.post("/api/runs/", {"team": team_a.slug, "dataset": dataset_a.id, "name": "b",
                                         "config": TINY_CONFIG}, format="json")
    assert launch.status_code == 201
    assert enqueued == [launch.json()["id"]]
    cancel = bob.post(f"/api/runs/{launch.json()['id']}/cancel/")
    assert cancel.status_code == 202
    assert cancel.json()["status"] == "cancelled"
