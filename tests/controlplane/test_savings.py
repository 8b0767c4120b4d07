"""One home for the savings formulas and one for the run totals: every reader (API, run page,
runs list, compare page, charts) gets the same figures, with one empty-case convention."""

from __future__ import annotations

import pytest

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.selectors import run_totals, runs_totals
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import step_ingest
from tests.controlplane.api.helpers import step_record
from workers.selection import accounting as savings
from workers.selection.accounting import RunTotals

CONFIG = {"batch_size": 8, "group_size": 4, "steps": 100}


@pytest.mark.parametrize("quantity", [savings.rollout_savings, savings.rollout_savings_vs_dynamic_sampling,
                                      savings.backward_savings_vs_mixed])
def test_each_saving_is_one_minus_spent_over_its_yardstick_and_none_without_one(quantity):
    assert quantity(600, 800) == pytest.approx(0.25)
    assert quantity(800, 800) == 0.0  # nothing saved is a figure
    assert quantity(0, 0) is None and quantity(5, None) is None  # nothing to compare against is not
    assert quantity(None, 10) == 1.0


def test_the_effective_share_is_none_before_any_rollout():
    assert savings.effective_share_of_generated(3, 4) == 0.75
    assert savings.effective_share_of_generated(0, 0) is None


def test_empty_totals_have_no_savings_and_no_share():
    empty = RunTotals()
    assert (empty.rollout_savings, empty.rollout_savings_vs_dynamic_sampling, empty.backward_savings_vs_mixed,
            empty.effective_share_of_generated) == (None, None, None, None)


@pytest.mark.django_db
def test_run_totals_sum_every_step_or_the_steps_through_one_and_agree_for_many_runs(acme, enqueued):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    keys = list(dataset.prompts.filter(split="train").values_list("key", flat=True)[:4])
    run = run_create(team=acme, dataset=dataset, name="r", config=CONFIG)
    idle = run_create(team=acme, dataset=dataset, name="idle", config=CONFIG)
    run_claim(run_id=run.id, worker="test")
    ds = {"rollouts_dynamic_sampling": 10.0, "backward_tokens": 30, "backward_tokens_mixed": 40}
    step_ingest(run_id=run.id, record=step_record(0, keys[:2], skipped=keys[2:], extra_summary=ds))
    step_ingest(run_id=run.id, record=step_record(1, keys, device_seconds=3.0))  # no dynamic-sampling estimate

    totals = run_totals(run)
    assert (totals.steps, totals.rollouts_generated, totals.rollouts_uniform) == (2, 4 + 8, 8 + 8)
    assert totals.rollout_savings == pytest.approx(1 - 12 / 16)
    assert totals.rollout_savings_vs_dynamic_sampling == pytest.approx(1 - 4 / 10)  # step 0 only
    assert totals.backward_savings_vs_mixed == pytest.approx(1 - 30 / 40)
    assert totals.device_seconds == pytest.approx(5.0)
    first = run_totals(run, through_step=0)
    assert (first.steps, first.rollouts_generated, first.rollout_savings) == (1, 4, pytest.approx(0.5))
    assert run_totals(run, through_step=-1) == RunTotals()
    assert runs_totals([run, idle]) == {run.id: totals, idle.id: RunTotals()}
    assert run_totals(idle).rollout_savings is None


@pytest.mark.django_db
def test_a_stored_config_a_later_release_refuses_still_reads_against_uniform_grpo(acme, enqueued):
    from controlplane.runs.models import Run
    from controlplane.runs.selectors import run_yardsticks

    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    run = run_create(team=acme, dataset=dataset, name="old", config={**CONFIG, "selectors": {"hive": {}}})
    assert run_yardsticks(run) == ["uniform", "dynamic_sampling"]
    Run.objects.filter(pk=run.pk).update(config={**run.config, "selectors": {"greso": {}, "hive": {}}})
    run.refresh_from_db()
    assert run_yardsticks(run) == ["uniform"]
