"""A launch counts what queued and running runs are still forecast to use."""

import datetime as dt

import pytest
from django.utils import timezone

from controlplane.budgets.selectors import (
    DEFAULT_SECONDS_PER_ROLLOUT,
    DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND,
    budget_committed_device_hours,
    forecast_device_hours,
)
from controlplane.budgets.services import BudgetExceeded, budget_set, usage_record
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import step_ingest
from tests.controlplane.api.helpers import step_record

CONFIG = {"batch_size": 8, "group_size": 4, "steps": 100}


@pytest.mark.django_db
def test_two_runs_that_each_fit_cannot_together_overshoot_the_budget(acme, enqueued):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    forecast = forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100)
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=7),
               limit_device_hours=forecast * 1.5)
    first = run_create(team=acme, dataset=dataset, name="first", config=CONFIG)
    assert budget_committed_device_hours(acme) == pytest.approx(forecast)
    with pytest.raises(BudgetExceeded):
        run_create(team=acme, dataset=dataset, name="second", config=CONFIG)
    # Usage already recorded for the first run is no longer "still to come".
    usage_record(run=first, step=0, device_seconds=forecast * 3600 / 2, uniform_seconds=0.0)
    assert budget_committed_device_hours(acme) == pytest.approx(forecast / 2)


@pytest.mark.django_db
def test_the_forecast_uses_the_teams_rate_on_the_runs_engine_and_device(acme, globex, enqueued):
    """A verl smoke run on this machine's CPU spends far more per rollout than the local
    engine: its history must not inflate the forecast of local runs, nor theirs hide its cost."""
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    keys = list(dataset.prompts.filter(split="train").values_list("key", flat=True)[:2])
    kinds = {("local", "auto"): 0.02, ("verl", "cpu"): 2.0}  # device-seconds of a 4-rollout step
    for (engine, device), seconds in kinds.items():
        run = run_create(team=acme, dataset=dataset, name=f"{engine}-{device}",
                         config={**CONFIG, "engine": engine, "device": device})
        run_claim(run_id=run.id, worker="test")
        step_ingest(run_id=run.id, record=step_record(0, keys, device_seconds=seconds))  # 2 prompts x N=2
    for (engine, device), seconds in kinds.items():
        assert forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100, engine=engine,
                                     device=device) == pytest.approx(seconds / 4 * 8 * 4 * 100 / 3600)
    # No history of this kind yet: the default rate, not another kind's.
    assert forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100, engine="verl", device="cuda") \
        == pytest.approx(DEFAULT_SECONDS_PER_ROLLOUT * 8 * 4 * 100 / 3600)
    # A team's first verl run on CPU is forecast at what such runs measured here, not at the local rate.
    assert forecast_device_hours(team=globex, batch_size=2, group_size=4, steps=6, engine="verl",
                                 device="cpu") == pytest.approx(DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND[("verl", "cpu")]
                                                                * 2 * 4 * 6 / 3600)
    smoke = run_create(team=acme, dataset=dataset, name="smoke", config={**CONFIG, "engine": "verl", "device": "cpu"})
    assert smoke.forecast_device_hours == pytest.approx(2.0 / 4 * 8 * 4 * 100 / 3600)
