"""A launch counts what queued and running runs are still forecast to use."""

import datetime as dt

import pytest
from django.utils import timezone

from controlplane.budgets.services import (
    BudgetExceeded,
    budget_set,
    forecast_device_hours,
    usage_record,
)
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import committed_device_hours, run_create

CONFIG = {"batch_size": 8, "group_size": 4, "steps": 100}


@pytest.mark.django_db
def test_two_runs_that_each_fit_cannot_together_overshoot_the_budget(acme, enqueued):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    forecast = forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100)
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=7),
               limit_device_hours=forecast * 1.5)
    first = run_create(team=acme, dataset=dataset, name="first", config=CONFIG)
    assert committed_device_hours(acme) == pytest.approx(forecast)
    with pytest.raises(BudgetExceeded):
        run_create(team=acme, dataset=dataset, name="second", config=CONFIG)
    # Usage already recorded for the first run is no longer "still to come".
    usage_record(run=first, step=0, device_seconds=forecast * 3600 / 2, uniform_seconds=0.0)
    assert committed_device_hours(acme) == pytest.approx(forecast / 2)
