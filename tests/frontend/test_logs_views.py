"""The run page's logs endpoint and download (frontend/logs_views.py): a cursor over the lines kept,
a level filter, the dropped lines counted, polling ending only once a finished run's last lines are
in, and the run endpoints' visibility."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest
from django.utils import timezone

from controlplane.operations.run_logs import run_log_lines_add
from controlplane.operations.selectors import RUN_LOG_PAGE
from controlplane.runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db

LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


def write(run, n: int, *, start: int = 0, cap: int = 20_000, seq: dict | None = None) -> None:
    now = time.time()
    run_log_lines_add(lines=[(run.id, 1, now + i / 1000, LEVELS[(start + i) % 4], "workers.engines.local.engine",
                              f"line {start + i}") for i in range(n)], next_seq=seq if seq is not None else {},
                      cap=cap)


def test_the_cursor_returns_only_newer_lines_in_order(alice, run):
    write(run, 5)
    first = alice.get(f"/data/runs/{run.id}/logs/").json()
    assert [line["message"] for line in first["lines"]] == [f"line {i}" for i in range(5)]
    assert [line["level"] for line in first["lines"]] == ["DEBUG", "INFO", "WARNING", "ERROR", "DEBUG"]
    assert first["lines"][0]["logger"] == "workers.engines.local.engine" and first["lines"][0]["attempt"] == 1
    assert first["next_after"] == first["lines"][-1]["id"] and first["has_more"] is False
    assert (first["kept"], first["dropped"], first["status"], first["finished"]) == (5, 0, "running", False)
    again = alice.get(f"/data/runs/{run.id}/logs/?after={first['next_after']}").json()
    assert again["lines"] == [] and again["next_after"] == first["next_after"]
    write(run, 2, start=5)
    newer = alice.get(f"/data/runs/{run.id}/logs/?after={first['next_after']}").json()
    assert [line["message"] for line in newer["lines"]] == ["line 5", "line 6"]


def test_a_long_log_comes_in_pages(alice, run):
    write(run, RUN_LOG_PAGE + 3)
    page = alice.get(f"/data/runs/{run.id}/logs/").json()
    assert len(page["lines"]) == RUN_LOG_PAGE and page["has_more"] is True
    rest = alice.get(f"/data/runs/{run.id}/logs/?after={page['next_after']}").json()
    assert [line["message"] for line in rest["lines"]] == [f"line {RUN_LOG_PAGE + i}" for i in range(3)]
    assert rest["has_more"] is False


def test_the_level_filter_keeps_that_level_and_above(alice, run):
    write(run, 8)
    warnings = alice.get(f"/data/runs/{run.id}/logs/?level=warning").json()
    assert [line["message"] for line in warnings["lines"]] == ["line 2", "line 3", "line 6", "line 7"]
    assert warnings["kept"] == 8  # the log's size, whatever the filter
    errors = alice.get(f"/data/runs/{run.id}/logs/?level=ERROR").json()
    assert [line["level"] for line in errors["lines"]] == ["ERROR", "ERROR"]
    bad = alice.get(f"/data/runs/{run.id}/logs/?level=loud")
    assert bad.status_code == 400
    said = bad.json()["errors"]["parameters"][0]
    assert "level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'" in said
    assert alice.get(f"/data/runs/{run.id}/logs/?after=-3").status_code == 400
    assert alice.get(f"/data/runs/{run.id}/logs/?after=x").status_code == 400


def test_the_answer_counts_the_lines_dropped_by_the_cap(alice, run):
    seq: dict = {}
    write(run, 30, cap=20, seq=seq)
    write(run, 5, start=30, cap=20, seq=seq)
    page = alice.get(f"/data/runs/{run.id}/logs/").json()
    assert (page["kept"], page["dropped"]) == (20, 15)
    assert page["lines"][0]["message"] == "line 15" and page["lines"][0]["seq"] == 16


def test_polling_ends_only_once_a_finished_runs_last_lines_are_in(alice, run):
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    assert alice.get(f"/data/runs/{run.id}/logs/").json()["finished"] is False  # its worker may still flush
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - dt.timedelta(seconds=30))
    assert alice.get(f"/data/runs/{run.id}/logs/").json()["finished"] is True


def test_the_log_downloads_as_text_with_the_level_filter(alice, run):
    write(run, 4)
    response = alice.get(f"/runs/{run.id}/logs/download/?level=info")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.id}-edge-run-log.txt"'
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(" INFO workers.engines.local.engine [attempt 1]: line 1")
    assert dt.datetime.fromisoformat(lines[0].split(" ")[0]).tzinfo is not None
    assert alice.get(f"/runs/{run.id}/logs/download/?level=nope").status_code == 400


def test_the_log_is_the_runs_teams_alone(alice, vera, mallory, client, run):
    write(run, 1)
    assert vera.get(f"/data/runs/{run.id}/logs/").status_code == 200  # a viewer reads it
    for url in (f"/data/runs/{run.id}/logs/", f"/runs/{run.id}/logs/download/"):
        assert mallory.get(url).status_code == 404, url
        assert client.get(url).status_code == 302, url  # a stranger signs in first
    assert alice.get(f"/data/runs/{run.id + 999}/logs/").status_code == 404
