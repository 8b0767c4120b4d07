"""The load test (bench/load_test.py) at its smallest: 5 runs posting steps and 2 viewers polling for
25 s against the production server (gunicorn, settings_production) on the test database. No
request fails, every run stored exactly the steps it got a 2xx for, with all their rows; and the
rows check itself sees a lost step, a step nobody was answered for and a missing row."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load_test import check_rows
from controlplane.telemetry.models import PromptObservation, StepSummary

# Found, not imported: importing locust monkey-patches this process (gevent) under Django's connections.
if importlib.util.find_spec("locust") is None:
    pytest.skip("needs locust (the dev extra)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def test_load_test_small_run_has_no_failure_and_every_answered_step_stored_once(live_database_url, tmp_path):
    if not live_database_url.startswith("postgres"):
        pytest.skip("the load test needs Postgres (the production server's database)")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis"):
        pytest.skip("the load test needs Redis (CELERY_BROKER_URL)")
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {"DATABASE_URL": live_database_url}
    done = subprocess.run(
        [
            sys.executable,
            "bench/load_test.py",
            "--runs",
            "5",
            "--viewers",
            "2",
            "--run-time",
            "25",
            "--prompts",
            "128",  # small steps: a busy test machine still gets the viewers signed in and polling
            "--spawn-rate",
            "10",
            "--name",
            "load_smoke",
            "--out",
            str(tmp_path),
            "--workdir",
            str(work),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    written = json.loads((tmp_path / "load_smoke.json").read_text())
    assert written["passed"] and written["repeats_count"] == 1
    results = written["repeats"][0]
    figures, rows = results["figures"], results["rows_check"]
    assert results["failures"] == 0 and results["server_error_log_lines"] == 0
    assert rows["passed"], rows["problems"]
    assert figures["steps_per_run_min"] >= 1  # every run got steps through
    assert rows["steps_stored"] == rows["steps_answered_2xx"] == figures["steps_total"]
    assert rows["observation_rows"] == figures["steps_total"] * 128
    assert rows["decision_rows"] == figures["steps_total"] * 256
    assert figures["ingest_latency_ms"]["n"] >= figures["steps_total"] and figures["chart_latency_ms"]["n"] > 0
    # Locust's own table is refreshed each second: the viewers' first polls may come after its last refresh
    assert "ingest step" in {row["name"] for row in results["locust"]}
    assert figures["page_latency_ms"]["n"] >= 2 * 2  # each viewer's sign-in page and its POST, at least
    assert results["server"]["workers"] and results["server"]["threads"]
    assert results["postgres"]["shown"]["fsync"] in ("on", "off")

    # The check itself: what it was given passes again; a difference of any kind is named.
    plan = json.loads((work / "plan.json").read_text())
    accepted = json.loads((work / "locust-out.json").read_text())["accepted"]
    assert check_rows(plan, accepted)["passed"]
    run_id = str(plan["runs"][0]["id"])
    lost = {**accepted, run_id: accepted[run_id][:-1]}  # the last step: stored but (say) never answered
    assert not check_rows(plan, lost)["passed"]
    doubled = {**accepted, run_id: [*accepted[run_id], accepted[run_id][-1]]}
    assert not check_rows(plan, doubled)["passed"]
    last = accepted[run_id][-1][0]
    StepSummary.objects.filter(run_id=int(run_id), step=last).delete()  # an answered step not stored
    result = check_rows(plan, accepted)
    assert not result["passed"] and any("lost" in p for p in result["problems"])
    other = str(plan["runs"][1]["id"])
    row = PromptObservation.objects.filter(run_id=int(other)).order_by("id").first()
    row.delete()  # one observation row short
    result = check_rows({**plan, "runs": plan["runs"][1:]}, accepted)
    assert not result["passed"] and any("observations" in p for p in result["problems"])
