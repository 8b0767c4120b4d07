"""The compare page's shaping functions (frontend/compare_charts.py), on plain rows: the
metric catalog, one metric against the step with gaps, the accuracy chart's cumulative x
axes, the FLOPs estimate and the config diff. No database, no browser."""

from __future__ import annotations

import math

import pytest
from django.db import models

from controlplane.telemetry.models import StepSummary
from frontend import charts
from frontend import compare_charts as cc
from workers.record import TRAIN_FIELDS
from workers.selection.accounting import StepAccounting


def step(n: int, **fields) -> dict:
    """A step summary row as the compare selectors read it."""
    row = {"step": n, "rollouts_generated": 8, "rollouts_uniform": 16, "device_seconds": 1800.0,
           "flops_estimate": 100.0, "tokens_generated": 10, "prompt_tokens_generated": 0, "forward_tokens_extra": 0,
           "backward_tokens": 0, "backward_prompt_tokens": 0}
    return {**row, **fields}


# -- the catalog ------------------------------------------------------------------------------------------


def test_every_numeric_field_of_a_step_summary_is_a_metric_named_in_words():
    numeric = {f.name for f in StepSummary._meta.concrete_fields
               if isinstance(f, (models.IntegerField, models.FloatField)) and f.name not in ("id", "step")}
    names = {m.name for m in cc.metric_catalog()}
    assert numeric - names == set()
    # the optimizer's figures too, but those the summary already holds as columns
    assert {f"train.{f}" for f in TRAIN_FIELDS if f not in ("reward_mean", "loss", "device_seconds_total")} <= names
    for metric in cc.metric_catalog(["generate"], ["hive/stage1_kept", "some_method/odd_thing"]):
        assert "_" not in metric.label and metric.unit in {"count", "share", "tokens", "seconds", "device-hours",
                                                           "FLOPs", "value"}, metric
    assert len(names) == len(cc.metric_catalog()), "one metric per name"


def test_the_catalog_names_metrics_as_the_run_page_does():
    catalog = {m.name: m for m in cc.metric_catalog(["generate", "update"], ["hive/stage1_kept", "x/y_z"])}
    for name in ("rollouts_generated", "reward_mean", "effective_share_of_generated", "device_hours_total"):
        assert catalog[name].label == charts.LEGENDS[name]
    assert catalog["metrics.hive/stage1_kept"].label == "HIVE: kept by stage 1"  # the method panel's legend
    assert catalog["metrics.x/y_z"].label == "x: y z"
    assert catalog["seconds.update"].label == "seconds in the update phase this step"
    groups = [g["group"] for g in cc.grouped(list(catalog.values()))]
    assert groups[-2:] == [cc.PHASES_GROUP, cc.METHODS_GROUP] and len(groups) == len(set(groups))


# -- one metric against the step -------------------------------------------------------------------------


def test_a_missing_step_breaks_the_line_and_a_missing_value_is_a_gap():
    rows = [step(0, reward_mean=0.1, metrics={"hive/stage1_kept": 3}), step(1, reward_mean=None, metrics={}),
            step(4, reward_mean=0.4, metrics={"hive/stage1_kept": 5.0}), step(5, reward_mean=float("nan"))]
    out = cc.metric_overlay(rows, "reward_mean")
    assert out["step"] == [0, 1, 2, 4, 5]  # one break point at the first missing step (2), not one per step
    assert out["value"] == [0.1, None, None, 0.4, None] and out["recorded"] == 2
    kept = cc.metric_overlay(rows, "metrics.hive/stage1_kept")
    assert kept["value"] == [3.0, None, None, 5.0, None]
    assert cc.metric_overlay([], "reward_mean") == {"step": [], "value": [], "recorded": 0}


def test_running_totals_sum_the_steps_recorded():
    rows = [step(0), step(1, rollouts_generated=24), step(3, device_seconds=3600.0)]
    assert cc.metric_overlay(rows, "rollouts_generated_total")["value"] == [8, 32, None, 40]
    assert cc.metric_overlay(rows, "device_hours_total")["value"] == [0.5, 1.0, None, 2.0]
    assert cc.metric_overlay(rows, "rollout_savings_total")["value"] == [0.5, 1 - 32 / 32, None, 1 - 40 / 48]
    assert cc.metric_overlay(rows, "flops_total")["value"] == [100.0, 200.0, None, 300.0]


def test_the_flops_total_stops_at_a_step_without_an_estimate():
    # step 1 moved tokens but its engine counted no parameters (0 FLOPs): unknown, not 0
    rows = [step(0), step(1, flops_estimate=0.0), step(2)]
    assert cc.metric_overlay(rows, "flops_total")["value"] == [100.0, None, None]
    # a step that moved no token spent no FLOPs: 0 is right there
    idle = [step(0), step(1, flops_estimate=0.0, tokens_generated=0), step(2)]
    assert cc.metric_overlay(idle, "flops_total")["value"] == [100.0, 100.0, 200.0]


def test_group_shares_and_json_columns():
    rows = [step(0, groups_generated=4, groups_all_correct=1, groups_all_wrong=2, seconds={"generate": 1.5},
                 train={"grad_norm": 0.7}),
            step(1, groups_generated=0, groups_all_correct=0, groups_all_wrong=0, seconds={}, train=None)]
    assert cc.metric_overlay(rows, "all_correct_share")["value"] == [0.25, None]
    assert cc.metric_overlay(rows, "all_wrong_share")["value"] == [0.5, None]
    assert cc.metric_overlay(rows, "seconds.generate")["value"] == [1.5, None]
    assert cc.metric_overlay(rows, "train.grad_norm")["value"] == [0.7, None]


# -- FLOPs ------------------------------------------------------------------------------------------------


def test_the_flops_formula_against_a_hand_computed_number():
    row = {"tokens_generated": 50, "prompt_tokens_generated": 30, "forward_tokens_extra": 20,
           "backward_tokens": 40, "backward_prompt_tokens": 10}
    # 2 x 1000 x (50 + 30 + 20) + 6 x 1000 x (40 + 10) = 200,000 + 300,000
    assert cc.step_flops(row, 1000) == 500_000.0
    # the engines' own estimate (what a step summary records) is the same formula
    engine = StepAccounting(step=0, rollouts_generated=4, tokens_generated=50, rollouts_effective=4,
                            rollouts_trained=4, rollouts_uniform=4, groups_generated=1, groups_all_correct=0,
                            groups_all_wrong=0, groups_trained=1, forward_tokens_extra=20, backward_tokens=40,
                            parameters=1000, prompt_tokens_generated=30, backward_prompt_tokens=10)
    assert engine.flops_estimate == 500_000.0
    # P read back from the record: the FLOPs over the tokens, summed over the steps
    rows = [{**row, "flops_estimate": 500_000.0}, {**row, "backward_tokens": 0, "flops_estimate": 2_060_000.0 * 1.0}]
    assert cc.parameters_from(rows[:1]) == 1000.0
    assert cc.parameters_from(rows) == pytest.approx((500_000 + 2_060_000) / (500 + 260))
    assert cc.parameters_from([{**row, "flops_estimate": 0.0}]) is None  # no estimate: no P either
    basis = cc.flops_basis([step(0, flops_estimate=2_000.0, tokens_generated=10, backward_tokens=10)])
    assert basis["parameters"] == 2_000 / (2 * 10 + 6 * 10) and basis["no_prompt_tokens"] is True
    assert basis["flops_total"] == 2_000.0 and basis["steps_without_flops"] == 0


def test_large_numbers_read_as_words_not_exponents():
    assert cc.large(342_048.4) == "342,048" and cc.large(None) == "–"
    assert cc.large(1.234e12) == "1.23 × 10¹²" and cc.large(5e9) == "5.00 × 10⁹"


# -- the accuracy chart's x axes ------------------------------------------------------------------------


def evaluation(n: int, rollouts: int, seconds: float, k: int = 4) -> dict:
    return {"step": n, "k": k, "pass_at_1": 0.1 * (n + 1), "pass_at_k": 0.2 * (n + 1),
            "rollouts_generated_total": rollouts, "device_seconds_total": seconds}


def test_each_evaluation_is_placed_by_what_the_run_spent_before_its_step():
    steps = [step(0, flops_estimate=10.0), step(1, flops_estimate=20.0), step(2, flops_estimate=30.0),
             step(3, flops_estimate=40.0)]
    out = cc.accuracy_axes([evaluation(0, 0, 0.0), evaluation(2, 16, 3600.0), evaluation(4, 32, 9000.0)], steps)
    assert out["step"] == [0, 2, 4] and out["k"] == [4, 4, 4]
    assert out["rollouts"] == [0, 16, 32]  # as the evaluation recorded it
    assert out["device_hours"] == [0.0, 1.0, 2.5]
    assert out["flops"] == [0.0, 30.0, 100.0]  # steps 0-1, then 0-3
    assert out["pass_at_1"] == [0.1, pytest.approx(0.3), 0.5]
    # steps missing before an evaluation count as not spent, as the evaluation's own totals do
    assert cc.accuracy_axes([evaluation(3, 8, 0.0)], [step(0, flops_estimate=10.0)])["flops"] == [10.0]
    # a step without an estimate before it: that evaluation and those after have no FLOPs figure
    gap = [step(0, flops_estimate=10.0), step(1, flops_estimate=0.0), step(2, flops_estimate=30.0)]
    assert cc.accuracy_axes([evaluation(1, 0, 0), evaluation(2, 0, 0), evaluation(3, 0, 0)], gap)["flops"] == [
        10.0, None, None]


def test_every_axis_says_what_it_counts_in_words():
    assert set(cc.ACCURACY_AXES) == set(cc.ACCURACY_AXIS_CHOICES) == {"rollouts", "device_hours", "flops"}
    for words in cc.ACCURACY_AXES.values():
        assert "cumulative" in words and "_" not in words


# -- config diff --------------------------------------------------------------------------------------------


def test_config_diff_flattens_nested_keys_and_keeps_only_what_differs():
    a = {"steps": 20, "lr": 0.0002, "selectors": {"hive": {"threshold": 0.5}, "lze": {}}, "levels": [1, 2]}
    b = {"steps": 20.0, "lr": 0.0002, "selectors": {"hive": {"threshold": 0.6}}, "levels": [1, 2], "dr_grpo": True}
    c = {"steps": 20, "lr": 0.0002, "selectors": {"hive": {"threshold": 0.5, "lam": 1}}, "levels": [2, 1],
         "dr_grpo": 1}
    rows = {r["key"]: r for r in cc.config_diff([a, b, c])}
    assert list(rows) == sorted(rows)
    assert rows["selectors.hive.threshold"] == {"key": "selectors.hive.threshold", "values": ["0.5", "0.6", "0.5"],
                                                "differs": True}
    assert rows["selectors.hive.lam"]["values"] == [None, None, "1"] and rows["selectors.hive.lam"]["differs"]
    assert rows["selectors.lze"]["values"] == ["{}", None, None]  # a method without parameters is still a setting
    assert rows["steps"]["differs"] is False  # 20 and 20.0 are one number ...
    assert rows["dr_grpo"]["values"] == [None, "true", "1"] and rows["dr_grpo"]["differs"]  # ... true is not 1
    assert rows["levels"]["values"] == ["[1, 2]", "[1, 2]", "[2, 1]"] and rows["levels"]["differs"]
    assert rows["lr"]["differs"] is False and rows["lr"]["values"] == ["0.0002"] * 3
    assert [r["key"] for r in cc.config_diff([a, a]) if r["differs"]] == []


def test_config_values_show_as_written():
    rows = {r["key"]: r["values"] for r in cc.config_diff([{"model": "tiny", "x": None, "f": 1e-06,
                                                            "nan": math.inf}, {}])}
    assert rows == {"model": ["tiny", None], "x": ["null", None], "f": ["1e-06", None], "nan": ["Infinity", None]}
    assert cc.flatten_config({}) == {} and cc.flatten_config(None) == {}
