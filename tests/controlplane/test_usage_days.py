"""The ledger summed per run and day (``UsageDay``), which the budget answer reads each step:
after any sequence of first bookings, replays (on a later day too) and warm-up heartbeats, over
days and across a budget period's edges, budget_status and the operations metric answer what a
sum over the ledger's entries answers (the query budget_status made before). The migration that
adds the table sums the ledger recorded before it; ``usage_days_rebuild`` remakes it after a fix
made around the services."""

from __future__ import annotations

import datetime as dt
import io
import random
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from controlplane.accounts.services import team_create
from controlplane.budgets.models import UsageDay, UsageEntry
from controlplane.budgets.selectors import budget_status
from controlplane.budgets.services import budget_set, usage_add_warmup, usage_days_rebuild, usage_record
from controlplane.datasets.services import dataset_import_builtin
from controlplane.operations.selectors import teams_budget_use
from controlplane.runs.services import run_create
from tests.controlplane.test_telemetry_tables_move import latest, migrate
from tests.frontend.helpers import CONFIG

START = timezone.make_aware(dt.datetime(2026, 11, 27, 21, 0))  # a few days each side of a month's edge
ZERO = 1e-9  # a day whose bookings were all replaced by 0 may keep a float residue of their differences


@pytest.fixture(autouse=True)
def _fast(fast_passwords, enqueued) -> None:
    """Cheap passwords; launches recorded, not sent."""


def ledger_seconds(team_id: int, start: dt.date | None = None, end: dt.date | None = None) -> float:
    """The team's device-seconds summed over its ledger entries, as budget_status summed them
    before UsageDay: entries recorded in [start, end) of the server's time zone, or all."""
    entries = UsageEntry.objects.filter(team_id=team_id)
    if start is not None and end is not None:
        entries = entries.filter(recorded_at__gte=timezone.make_aware(dt.datetime.combine(start, dt.time())),
                                 recorded_at__lt=timezone.make_aware(dt.datetime.combine(end, dt.time())))
    return entries.aggregate(s=Sum("device_seconds"))["s"] or 0.0


def days_from_ledger() -> dict[tuple[int, dt.date], float]:
    rows = (UsageEntry.objects.annotate(day=TruncDate("recorded_at")).values("run_id", "day")
            .annotate(s=Sum("device_seconds")).order_by())
    return {(r["run_id"], r["day"]): r["s"] for r in rows if abs(r["s"]) > ZERO}


def days_stored() -> dict[tuple[int, dt.date], float]:
    return {(run_id, day): s for run_id, day, s in UsageDay.objects.values_list("run_id", "day", "device_seconds")
            if abs(s) > ZERO}


def assert_days_match_the_ledger() -> None:
    stored, expected = days_stored(), days_from_ledger()
    assert stored.keys() == expected.keys()
    for key, seconds in expected.items():
        assert stored[key] == pytest.approx(seconds, rel=1e-12, abs=1e-9), key


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_budget_answer_from_the_days_equals_the_sum_over_the_ledger(seed):
    rng = random.Random(seed)
    teams = [team_create(name=f"T{i}", owner_username=f"owner{i}") for i in range(2)]
    runs = []
    for team in teams:
        dataset = dataset_import_builtin(team=team, task="add", n_train=8, n_test=2, name="d")
        runs += [run_create(team=team, dataset=dataset, name=f"r{i}", config=CONFIG) for i in range(3)]
    # Each team's budget period begins or ends inside the days the bookings span.
    periods = [(dt.date(2026, 11, 29), dt.date(2026, 12, 2)), (dt.date(2026, 11, 20), dt.date(2026, 11, 28))]
    for team, (start, end) in zip(teams, periods, strict=True):
        budget_set(team=team, period_start=start, period_end=end, limit_device_hours=100.0)
    booked: dict[int, int] = {run.id: 0 for run in runs}  # steps each run has booked
    now = START
    for _ in range(120):
        now += dt.timedelta(minutes=rng.choice([1, 7, 95, 400]))  # some hours cross midnight
        run = rng.choice(runs)
        with mock.patch("django.utils.timezone.now", return_value=now):
            roll = rng.random()
            if roll < 0.15:
                usage_add_warmup(run=run, device_seconds=rng.choice([0.0, 0.5, 3.25, 1e3]))
            elif roll < 0.4 and booked[run.id]:  # a replay, maybe days after the step was first booked
                step = rng.randrange(booked[run.id])
                usage_record(run=run, step=step, device_seconds=rng.choice([0.0, 1.0, 17.5, 4e4]),
                             uniform_seconds=1.0)
            else:
                usage_record(run=run, step=booked[run.id], device_seconds=rng.choice([0.0, 0.1, 2.0, 33.3]),
                             uniform_seconds=1.0)
                booked[run.id] += 1
        for team, (start, end) in zip(teams, periods, strict=True):
            inside = timezone.make_aware(dt.datetime.combine(start + dt.timedelta(days=1), dt.time()))
            used = budget_status(team, at=inside)  # asked while its period runs
            assert used.used_device_hours * 3600 == pytest.approx(ledger_seconds(team.id, start, end), rel=1e-12,
                                                                  abs=1e-9)
    assert_days_match_the_ledger()
    assert now - START > dt.timedelta(days=4)  # the bookings did span days and both periods' edges
    # Without a current budget every day counts: the metric (today is after both periods) and
    # budget_status agree with the whole ledger.
    metric = {use.team: use.used_device_hours for use in teams_budget_use()}
    for team in teams:
        assert budget_status(team).used_device_hours * 3600 == pytest.approx(ledger_seconds(team.id), rel=1e-12)
        assert metric.get(team.slug, 0.0) * 3600 == pytest.approx(ledger_seconds(team.id), rel=1e-12)


@pytest.mark.django_db
def test_a_replay_on_a_later_day_moves_nothing_to_that_day(acme):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="d")
    run = run_create(team=acme, dataset=dataset, name="r", config=CONFIG)
    with mock.patch("django.utils.timezone.now", return_value=START):
        usage_record(run=run, step=0, device_seconds=10.0, uniform_seconds=10.0)
    with mock.patch("django.utils.timezone.now", return_value=START + dt.timedelta(days=2)):
        usage_record(run=run, step=0, device_seconds=4.0, uniform_seconds=4.0)  # the replay's figure replaces
        usage_record(run=run, step=0, device_seconds=4.0, uniform_seconds=4.0)  # the same again: no change
    assert days_stored() == {(run.id, START.date()): 4.0}


@pytest.mark.django_db
def test_a_ledger_fixed_around_the_services_is_rebuilt_for_its_team_only(acme):
    other = team_create(name="Other", owner_username="other-owner")
    runs = []
    for team in (acme, other):
        dataset = dataset_import_builtin(team=team, task="add", n_train=8, n_test=2, name="d")
        runs.append(run_create(team=team, dataset=dataset, name="r", config=CONFIG))
        usage_record(run=runs[-1], step=0, device_seconds=60.0, uniform_seconds=60.0)
        usage_record(run=runs[-1], step=1, device_seconds=30.0, uniform_seconds=30.0)
    today = timezone.localdate()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=30), limit_device_hours=1.0)
    UsageEntry.objects.filter(run=runs[0], step=0).update(recorded_at=timezone.now() - dt.timedelta(days=3))
    UsageDay.objects.filter(run=runs[1]).update(device_seconds=1e6)  # must survive acme's rebuild as it is
    assert budget_status(acme).used_device_hours * 3600 == pytest.approx(90.0)  # not rebuilt yet
    out = io.StringIO()
    call_command("usage_days_rebuild", "--team", acme.slug, stdout=out)  # what an operator runs after the fix
    assert out.getvalue().strip() == "rebuilt 2 usage days (run x day) for team acme from the usage ledger"
    assert budget_status(acme).used_device_hours * 3600 == pytest.approx(30.0)  # the step before the period left
    assert UsageDay.objects.get(run=runs[1]).device_seconds == 1e6
    with pytest.raises(CommandError, match="no team with the slug 'nope'"):
        call_command("usage_days_rebuild", "--team", "nope")
    assert usage_days_rebuild() == 3  # every team's: the other's day is the ledger's again
    assert UsageDay.objects.get(run=runs[1]).device_seconds == 90.0


@pytest.mark.django_db(transaction=True)
def test_the_migration_sums_the_ledger_recorded_before_it(acme):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="d")
    runs = [run_create(team=acme, dataset=dataset, name=f"r{i}", config=CONFIG) for i in range(2)]
    rng = random.Random(7)
    try:
        migrate([("budgets", "0002_usage_kinds_and_bounds")])  # the table goes
        with connection.cursor() as cursor:  # the ledger as the services before it wrote it
            for i in range(60):
                run = rng.choice(runs)
                cursor.execute("INSERT INTO budgets_usageentry (team_id, run_id, kind, step, device_seconds, "
                               "uniform_device_seconds, recorded_at) VALUES (%s, %s, 'step', %s, %s, 1.0, %s)",
                               [acme.id, run.id, i, rng.choice([0.5, 2.0, 7.25]),
                                START + dt.timedelta(hours=rng.randrange(0, 24 * 5))])
        migrate(latest())  # and comes back, summed from the ledger
    finally:
        migrate(latest())
    assert len(days_stored()) >= 6  # two runs over several days
    assert_days_match_the_ledger()
