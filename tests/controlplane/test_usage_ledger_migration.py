"""The usage ledger's bounds arrive on a database that holds what a run token booked before
them: a NaN, a negative and an infinite entry are zeroed by the migration, the team's budget
reads again, and the database refuses such entries from then on."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from controlplane.accounts.models import Team
from controlplane.budgets.models import UsageEntry
from controlplane.budgets.selectors import budget_overview, budget_status
from controlplane.datasets.models import Dataset
from controlplane.runs.models import Run
from tests.controlplane.test_telemetry_tables_move import latest, migrate

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("budgets", "0001_initial")]
AFTER = [("budgets", "0002_usage_kinds_and_bounds")]


def test_entries_that_were_never_device_time_are_zeroed_and_refused_from_then_on() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores NaN as NULL: only Postgres could hold one")
    team = Team.objects.create(name="t", slug="t")
    run = Run.objects.create(team=team, dataset=Dataset.objects.create(team=team, name="d"), name="r", config={})
    try:
        migrate(BEFORE)
        with connection.cursor() as cursor:  # what the old ingest let a run token book
            for step, seconds in enumerate(("NaN", "-3600", "Infinity", "2.5")):
                cursor.execute("INSERT INTO budgets_usageentry (team_id, run_id, step, device_seconds, "
                               "uniform_device_seconds, recorded_at) VALUES (%s, %s, %s, %s::float8, 1.0, now())",
                               [team.id, run.id, step, seconds])
        migrate(AFTER)
    finally:
        migrate(latest())  # where the tests after this one expect the database
    seconds = dict(UsageEntry.objects.filter(run=run).values_list("step", "device_seconds"))
    assert seconds == {0: 0.0, 1: 0.0, 2: 0.0, 3: 2.5}
    assert budget_overview(team).used_device_hours == pytest.approx(2.5 / 3600)
    assert budget_status(team).used_device_hours == pytest.approx(2.5 / 3600)  # 0003 summed the ledger's days
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(IntegrityError), transaction.atomic():
            UsageEntry.objects.filter(run=run, step=3).update(device_seconds=bad)
