"""The services behind the dashboard's team and datasets pages, against the real database:
members and roles (a team never loses its last admin), budgets per period (limits in range,
calendar periods, no overlaps, past periods kept), datasets deleted only when no run uses them,
and the dataset preview's counts and learned pass rates."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from django.contrib.auth import get_user_model

from controlplane.accounts.models import Membership, Role
from controlplane.accounts.services import (
    LastAdmin,
    MembershipError,
    membership_add,
    membership_change_role,
    membership_remove,
    membership_set,
)
from controlplane.budgets.models import Budget
from controlplane.budgets.selectors import budget_status, budgets_for_team
from controlplane.budgets.services import (
    BUDGET_MAX_DEVICE_HOURS,
    BUDGET_MIN_DEVICE_HOURS,
    BudgetInvalid,
    budget_change_limit,
    budget_period_bounds,
    budget_remove,
    budget_set,
    budget_set_period,
)
from controlplane.datasets.models import Dataset, Prompt
from controlplane.datasets.selectors import dataset_preview, datasets_of_team
from controlplane.datasets.services import DatasetInUse, dataset_delete, dataset_import, dataset_import_builtin

pytestmark = pytest.mark.django_db


def member(team, username: str) -> Membership:
    return Membership.objects.select_related("team", "user").get(team=team, user__username=username)


# -- members and roles ------------------------------------------------------------------------------------------


def test_an_existing_user_is_added_with_a_role_and_nobody_else(acme, globex):
    get_user_model().objects.create_user(username="carol")
    added = membership_add(team=acme, username=" carol ", role="launcher")
    assert (added.user.username, added.role) == ("carol", Role.LAUNCHER)
    assert not Membership.objects.filter(team=globex, user__username="carol").exists()
    with pytest.raises(MembershipError, match="no user named 'nobody'") as exc:
        membership_add(team=acme, username="nobody", role="viewer")
    assert exc.value.field == "username"
    with pytest.raises(MembershipError, match="already a member \\(launcher\\)"):
        membership_add(team=acme, username="carol", role="admin")
    with pytest.raises(MembershipError, match="unknown role 'owner'"):
        membership_add(team=acme, username="mallory", role="owner")
    with pytest.raises(MembershipError, match="give the username"):
        membership_add(team=acme, username="  ", role="viewer")
    assert member(acme, "carol").role == Role.LAUNCHER  # the refused add changed nothing


@pytest.mark.parametrize("role", ["viewer", "launcher"])
def test_the_last_admin_is_never_demoted_or_removed(acme, role):
    alice = member(acme, "alice")
    with pytest.raises(LastAdmin, match="last admin"):
        membership_change_role(membership=alice, role=role)
    with pytest.raises(LastAdmin, match="last admin"):
        membership_remove(membership=alice)
    with pytest.raises(LastAdmin):
        membership_set(team=acme, username="alice", role=role)  # the scripts' path too
    assert member(acme, "alice").role == Role.ADMIN


def test_with_a_second_admin_the_first_can_step_down_and_leave(acme):
    membership_change_role(membership=member(acme, "bob"), role="admin")
    assert member(acme, "bob").role == Role.ADMIN
    membership_change_role(membership=member(acme, "alice"), role="viewer")
    assert member(acme, "alice").role == Role.VIEWER
    # bob is now the only admin: the same protection holds for him
    with pytest.raises(LastAdmin):
        membership_change_role(membership=member(acme, "bob"), role="launcher")
    membership_remove(membership=member(acme, "alice"))
    assert not Membership.objects.filter(team=acme, user__username="alice").exists()
    assert get_user_model().objects.filter(username="alice").exists()  # the account stays


def test_a_demotion_checks_the_roles_as_they_are_now_not_as_the_caller_read_them(acme):
    membership_change_role(membership=member(acme, "bob"), role="admin")
    stale_alice, stale_bob = member(acme, "alice"), member(acme, "bob")
    membership_change_role(membership=stale_bob, role="viewer")
    with pytest.raises(LastAdmin):  # stale_alice still says there were two admins
        membership_change_role(membership=stale_alice, role="viewer")


def test_roles_change_either_way_and_unknown_roles_are_refused(acme):
    vera = member(acme, "vera")
    assert membership_change_role(membership=vera, role="launcher").role == Role.LAUNCHER
    assert membership_change_role(membership=vera, role="viewer").role == Role.VIEWER
    with pytest.raises(MembershipError, match="unknown role"):
        membership_change_role(membership=vera, role="superuser")
    membership_remove(membership=vera)
    membership_remove(membership=vera)  # a second removal (another admin's click) does nothing


# -- budgets per period -------------------------------------------------------------------------------------------


TODAY = dt.date(2026, 12, 1)  # a Tuesday


@pytest.mark.parametrize(("period", "day", "bounds"), [
    ("day", dt.date(2026, 12, 31), (dt.date(2026, 12, 31), dt.date(2027, 1, 1))),
    ("week", dt.date(2026, 12, 6), (dt.date(2026, 11, 30), dt.date(2026, 12, 7))),  # a Sunday: Monday before
    ("week", dt.date(2026, 11, 30), (dt.date(2026, 11, 30), dt.date(2026, 12, 7))),  # a Monday
    ("month", dt.date(2026, 12, 31), (dt.date(2026, 12, 1), dt.date(2027, 1, 1))),
    ("month", dt.date(2028, 2, 29), (dt.date(2028, 2, 1), dt.date(2028, 3, 1))),
    ("month", dt.date(2027, 1, 31), (dt.date(2027, 1, 1), dt.date(2027, 2, 1))),
])
def test_periods_are_the_calendar_day_week_and_month_holding_the_day(period, day, bounds):
    assert budget_period_bounds(period, day) == bounds


@pytest.mark.parametrize("limit", [0, 0.0, -0.0, -1, -1e-9, 1e-9, 5e-324, math.nan, math.inf, -math.inf,
                                   BUDGET_MAX_DEVICE_HOURS * 1.0001, 1e300, True, "5", None])
def test_a_limit_must_be_a_finite_number_above_zero_and_not_huge(acme, limit):
    with pytest.raises(BudgetInvalid) as exc:
        budget_set_period(team=acme, period="month", day=TODAY, limit_device_hours=limit, today=TODAY)
    assert exc.value.field == "limit"
    assert not Budget.objects.filter(team=acme).exists()


def test_limits_in_range_are_taken_and_a_second_set_of_the_same_period_changes_its_limit(acme, globex):
    first = budget_set_period(team=acme, period="month", day=dt.date(2026, 12, 17), limit_device_hours=0.5,
                              today=TODAY)
    assert (first.period_start, first.period_end, first.limit_device_hours) == (
        dt.date(2026, 12, 1), dt.date(2027, 1, 1), 0.5)
    assert budget_set_period(team=acme, period="month", day=TODAY, limit_device_hours=BUDGET_MIN_DEVICE_HOURS,
                             today=TODAY).pk == first.pk
    again = budget_set_period(team=acme, period="month", day=TODAY, limit_device_hours=BUDGET_MAX_DEVICE_HOURS,
                              today=TODAY)
    assert again.pk == first.pk and again.limit_device_hours == BUDGET_MAX_DEVICE_HOURS
    other = budget_set_period(team=globex, period="month", day=TODAY, limit_device_hours=3, today=TODAY)
    assert other.pk != first.pk  # each team its own


def test_an_overlapping_period_a_past_one_and_an_unknown_kind_are_refused(acme):
    budget_set_period(team=acme, period="month", day=TODAY, limit_device_hours=10, today=TODAY)
    for period in ("week", "day"):
        with pytest.raises(BudgetInvalid, match="overlaps the team's budget of 2026-12-01 to 2027-01-01"):
            budget_set_period(team=acme, period=period, day=dt.date(2026, 12, 9), limit_device_hours=1, today=TODAY)
    # the week of Nov 30 reaches into December
    with pytest.raises(BudgetInvalid, match="overlaps"):
        budget_set_period(team=acme, period="week", day=dt.date(2026, 11, 30), limit_device_hours=1, today=TODAY)
    with pytest.raises(BudgetInvalid, match="ended on 2026-11-29") as exc:
        budget_set_period(team=acme, period="day", day=dt.date(2026, 11, 29), limit_device_hours=1, today=TODAY)
    assert exc.value.field == "period"
    last = dt.date(9999, 12, 31)
    for period, day in (("day", last), ("month", dt.date(9999, 12, 2)), ("week", last)):
        with pytest.raises(BudgetInvalid, match="end of the calendar"):
            budget_set_period(team=acme, period=period, day=day, limit_device_hours=1, today=dt.date(1, 1, 1))
    with pytest.raises(BudgetInvalid, match="unknown period 'year'"):
        budget_set_period(team=acme, period="year", day=TODAY, limit_device_hours=1, today=TODAY)
    # the next month and a day in it are not overlapping December
    budget_set_period(team=acme, period="month", day=dt.date(2027, 1, 1), limit_device_hours=20, today=TODAY)
    assert Budget.objects.filter(team=acme).count() == 2


def test_a_limit_changes_and_a_budget_is_removed_only_while_its_period_is_not_over(acme):
    today = dt.date.today()
    current = budget_set(team=acme, period_start=today - dt.timedelta(days=3), period_end=today + dt.timedelta(days=27),
                         limit_device_hours=5)  # set in Django admin: any period
    past = budget_set(team=acme, period_start=today - dt.timedelta(days=40), period_end=today - dt.timedelta(days=10),
                      limit_device_hours=2)
    assert budget_change_limit(budget=current, limit_device_hours=7.5).limit_device_hours == 7.5
    assert budget_status(acme).limit_device_hours == 7.5
    with pytest.raises(BudgetInvalid, match="limit must be more than 0"):
        budget_change_limit(budget=current, limit_device_hours=0)
    with pytest.raises(BudgetInvalid, match="stays as the record"):
        budget_change_limit(budget=past, limit_device_hours=9)
    with pytest.raises(BudgetInvalid, match="stays as the record"):
        budget_remove(budget=past)
    listed = budgets_for_team(acme)
    assert [(b["budget"].pk, b["state"]) for b in listed] == [(current.pk, "current"), (past.pk, "past")]
    budget_remove(budget=current)
    assert budget_status(acme).limit_device_hours is None
    assert list(Budget.objects.filter(team=acme)) == [past]


# -- datasets ----------------------------------------------------------------------------------------------------


def test_a_dataset_a_run_uses_is_kept_and_an_unused_one_goes_with_its_prompts(acme, enqueued):
    from controlplane.runs.services import run_create

    used = dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="used")
    rows = b'{"key": "a", "prompt": "1+1?", "answer": "2"}\n{"key": "b", "prompt": "2+2?", "answer": "4"}\n'
    unused = dataset_import(team=acme, name="mine", filename="mine.jsonl", data=rows)
    run = run_create(team=acme, dataset=used, name="keeps-it", config={"steps": 2, "selectors": {"grpo": {}}})
    with pytest.raises(DatasetInUse, match="1 run uses this dataset \\(keeps-it\\)") as exc:
        dataset_delete(dataset=used)
    assert exc.value.count == 1
    assert Prompt.objects.filter(dataset=used).count() == 16 and Dataset.objects.filter(pk=used.pk).exists()
    run.refresh_from_db()
    assert run.dataset_id == used.pk
    dataset_delete(dataset=unused)
    assert not Dataset.objects.filter(pk=unused.pk).exists()
    assert not Prompt.objects.filter(dataset_id=unused.pk).exists()


def test_the_list_counts_splits_and_runs_and_the_preview_shows_learned_pass_rates(acme, globex, enqueued):
    from controlplane.runs.services import run_claim, run_create
    from controlplane.telemetry.services import step_ingest
    from tests.frontend.helpers import CONFIG, step_record

    rows = [
        {"prompt": "a", "answer": "1", "difficulty": "easy", "data_source": "s", "extra_info": {"index": 0}},
        {"prompt": [{"role": "user", "content": "b"}], "reward_model": {"ground_truth": "2"}, "difficulty": "hard",
         "data_source": "s", "extra_info": {"index": 1}},
        {"prompt": "c", "answer": "3", "split": "test", "data_source": "s", "extra_info": {"index": 2}},
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    dataset = dataset_import(team=acme, name="three", filename="three.jsonl", data=data)
    dataset_import_builtin(team=globex, task="add", n_train=4, n_test=2, name="theirs")
    run = run_create(team=acme, dataset=dataset, name="r", config=dict(CONFIG))
    run_claim(run_id=run.id, worker="test:1")
    step_ingest(run_id=run.id, record=step_record(0, ["s:0"]))

    listed = datasets_of_team(acme)
    assert [(d.name, d.train_prompts, d.test_prompts, d.run_count) for d in listed] == [("three", 2, 1, 1)]
    preview = dataset_preview(dataset)
    assert (preview["total"], preview["train"], preview["test"], preview["run_count"]) == (3, 2, 1, 1)
    assert preview["difficulties"] == [("easy", 1), ("hard", 1)]
    rows = {r["prompt"].key: r for r in preview["rows"]}
    assert [r["prompt"].key for r in preview["rows"]] == ["s:0", "s:1", "s:2"]  # file order
    assert rows["s:0"]["learned_runs"] == 1 and 0.0 <= rows["s:0"]["learned_pass_rate"] <= 1.0
    assert rows["s:1"]["learned_pass_rate"] is None and rows["s:1"]["learned_runs"] == 0
    assert dataset_preview(dataset, limit=1)["rows"][0]["prompt"].key == "s:0"
