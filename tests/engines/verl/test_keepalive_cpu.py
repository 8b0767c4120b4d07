"""A verl job keeps its run's heartbeat alive between its reports (workers/engines/keepalive.py):
a real CPU job of verl 0.9.1's own loop against a live control plane, with a 1 s stale
threshold in its environment, posts heartbeats every quarter second through its sink, and every
spooled event is delivered once, in order, alongside the trainer's own."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from controlplane.runs.models import Run, RunStatus
from controlplane.telemetry.models import StepSummary
from controlplane.telemetry.services import token_issue
from tests.engines.verl.e2e import reward, run_job
from workers.engines.verl.http_sink import CURSOR, SPOOL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_verl_job_posts_heartbeats_while_it_trains(tmp_path, live_server, claimed_verl_run):
    run = claimed_verl_run
    env = {"EDGEPLANE_CONTROL_URL": live_server.url, "EDGEPLANE_RUN_ID": str(run.id),
           "EDGEPLANE_RUN_TOKEN": token_issue(run_id=run.id), "EDGEPLANE_ATTEMPT": str(run.attempt_number),
           "EDGEPLANE_HEARTBEAT_STALE_SECONDS": "1"}
    job = run_job(tmp_path, {"grpo": {}}, env=env, steps=2, overrides=reward("by_response"))
    assert job.process.returncode == 0, job.log_tail()
    spooled = [json.loads(line) for line in (tmp_path / SPOOL).read_text().splitlines()]
    assert [item["seq"] for item in spooled] == list(range(len(spooled)))  # one writer at a time
    assert int((tmp_path / CURSOR).read_text()) == len(spooled)  # every event delivered
    events = [item["body"].get("event", "step") for item in spooled]
    assert events.count("heartbeat") >= 2, events
    assert events[0] == "run_started" and events[-1] == "run_finished"
    done = Run.objects.get(pk=run.id)
    assert done.status == RunStatus.SUCCEEDED, done.status_reason
    assert list(StepSummary.objects.filter(run=done).values_list("step", flat=True).order_by("step")) == [0, 1]
