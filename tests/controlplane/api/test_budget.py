"""The team budget page: limit, use, forecast, savings against uniform GRPO, who spent it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.budgets.selectors import budget_overview
from controlplane.budgets.services import budget_set
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import step_ingest
from tests.controlplane.api.helpers import TINY_CONFIG, budget_for, step_record


@pytest.mark.django_db
def test_a_team_without_a_budget_shows_its_use_and_no_limit(alice, team_a):
    body = alice.get(f"/api/teams/{team_a.slug}/budget/").json()
    assert body["limit_device_hours"] is None and body["remaining_device_hours"] is None
    assert body["forecast_device_hours"] is None
    assert body["used_device_hours"] == 0 and body["by_run"] == [] and body["by_user"] == []
    assert body["warning"] is False and body["exhausted"] is False


@pytest.mark.django_db
def test_the_budget_breaks_use_and_savings_down_by_run_and_user(alice, team_a, dataset_a, run_a):
    budget_for(team_a, limit_device_hours=1.0)
    alice_user = get_user_model().objects.get(username="alice")
    other = run_create(team=team_a, dataset=dataset_a, name="alice-run", config=dict(TINY_CONFIG), user=alice_user)
    for run in (run_a, other):
        run_claim(run_id=run.id, worker="t")
    # run_a (bob): 2 steps of 360 s; other (alice): 1 step of 720 s. Half the uniform rollouts skipped.
    step_ingest(run_id=run_a.id, record=step_record(0, ["k0", "k1"], skipped=["k2", "k3"], device_seconds=360))
    step_ingest(run_id=run_a.id, record=step_record(1, ["k0", "k1"], skipped=["k2", "k3"], device_seconds=360))
    step_ingest(run_id=other.id, record=step_record(0, ["k0", "k1"], skipped=["k2", "k3"], device_seconds=720))

    body = alice.get(f"/api/teams/{team_a.slug}/budget/").json()
    assert body["used_device_hours"] == pytest.approx(0.4)
    assert body["remaining_device_hours"] == pytest.approx(0.6)
    assert body["limit_device_hours"] == 1.0
    # uniform = 4 groups x 2 x (generate + reward per generated + update per trained) = twice the
    # 90% of seconds those phases took; selection (10%) costs uniform GRPO nothing.
    assert body["uniform_device_hours"] == pytest.approx(0.4 * 0.9 * 2)
    assert body["saved_device_hours"] == pytest.approx(body["uniform_device_hours"] - 0.4)
    assert body["warning"] is False and body["exhausted"] is False
    by_run = {r["run"]: r for r in body["by_run"]}
    assert by_run[run_a.id]["device_hours"] == pytest.approx(0.2)
    assert by_run[run_a.id]["user"] == "bob"
    assert by_run[other.id]["device_hours"] == pytest.approx(0.2)
    by_user = {u["user"]: u for u in body["by_user"]}
    assert by_user["bob"]["device_hours"] == pytest.approx(0.2)
    assert by_user["alice"]["device_hours"] == pytest.approx(0.2)
    assert sum(u["saved_device_hours"] for u in body["by_user"]) == pytest.approx(body["saved_device_hours"])
    assert body["period_start"] and body["period_end"]


@pytest.mark.django_db
def test_the_budget_warns_at_80_percent_and_is_exhausted_at_100(alice, team_a, run_a):
    budget = budget_for(team_a, limit_device_hours=0.1)
    run_claim(run_id=run_a.id, worker="t")
    step_ingest(run_id=run_a.id, record=step_record(0, ["k0"], device_seconds=0.085 * 3600))
    body = alice.get(f"/api/teams/{team_a.slug}/budget/").json()
    assert body["warning"] is True and body["exhausted"] is False
    step_ingest(run_id=run_a.id, record=step_record(1, ["k0"], device_seconds=0.02 * 3600))
    body = alice.get(f"/api/teams/{team_a.slug}/budget/").json()
    assert body["warning"] is True and body["exhausted"] is True
    assert body["remaining_device_hours"] == 0
    assert budget.limit_device_hours == 0.1


@pytest.mark.django_db
def test_the_forecast_extends_use_so_far_linearly_to_the_period_end(team_a, run_a):
    today = timezone.now().date()
    budget_set(team=team_a, period_start=today - dt.timedelta(days=5), period_end=today + dt.timedelta(days=5),
               limit_device_hours=10.0)
    run_claim(run_id=run_a.id, worker="t")
    step_ingest(run_id=run_a.id, record=step_record(0, ["k0"], device_seconds=3600))
    start = timezone.make_aware(dt.datetime.combine(today - dt.timedelta(days=5), dt.time()))
    overview = budget_overview(team_a, at=start + dt.timedelta(days=5))  # halfway through the period
    assert overview.used_device_hours == pytest.approx(1.0)
    assert overview.forecast_device_hours == pytest.approx(2.0)
