"""The chart-data functions, each on its own: the series the dashboard draws."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from frontend import charts
from frontend.charts import HeatmapLayout
from workers.selection.accounting import PHASES, RunTotals
from workers.selection.ledger import Bucket
from workers.selection.panels import Panel, Series
from workers.selection.registry import REGISTRY
from workers.selection.selector import Selector


def step_row(step: int, **overrides) -> dict:
    row = {"step": step, "rollouts_generated": 6, "rollouts_uniform": 8, "rollouts_effective": 3, "rollouts_trained": 4,
           "groups_generated": 4, "groups_all_correct": 1, "groups_all_wrong": 2, "rollout_savings": 0.25,
           "effective_share_of_generated": 0.5, "device_seconds": 1800.0, "uniform_device_seconds": 3600.0,
           "reward_mean": 0.5, "seconds": {"generate": 1.0, "reward": 0.5, "select": 0.1, "update": 2.0},
           "metrics": {}}
    row.update(overrides)
    return row


# -- number and ratio ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [(1, 1.0), ("2.5", 2.5), (None, None), (math.nan, None),
                                           (math.inf, None), ("NaN", None), ("Infinity", None), ("x", None)])
def test_number_turns_every_missing_or_non_finite_value_into_none(raw, expected):
    assert charts.number(raw) == expected


def test_ratio_is_none_without_a_denominator():
    assert charts.ratio(1, 4) == 0.25
    assert charts.ratio(1, 0) is None and charts.ratio(None, 4) is None


def test_method_labels_follow_the_registry_in_its_order_and_leave_out_unknown_names():
    assert [m["name"] for m in charts.method_labels(["lze", "hive", "grpo", "nope"])] == ["grpo", "hive", "lze"]
    assert charts.method_labels(["rlzvp"]) == [{"name": "rlzvp", "label": "RL-ZVP"}]
    assert [m["name"] for m in charts.method_labels()] == list(REGISTRY)  # no names: every method


# -- method panels, from what each method declares ----------------------------------------------------


class Toy(Selector):
    """A method the frontend has never heard of, registered with panels of every kind."""

    name = "toy"
    label = "Toy method"
    help = "for the tests"
    layers = frozenset()
    panels = (
        Panel("mix", "Toy kept and dropped", (
            Series("kept", metric="toy/kept", style="bar"),
            Series("kept share of trained rollouts", metric="toy/kept", per="rollouts_trained", axis="right"),
            Series("replayed", decision="lze.replayed", style="bar"))),
        Panel("alloc", "Toy allocation", view="hora_allocation", wide=True),
    )


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", Toy)
    return Toy


def test_a_newly_registered_method_gets_its_panels_and_metrics_with_no_frontend_edit(toy):
    sections = charts.method_panels(["toy", "grpo"])
    assert [m["name"] for m in sections] == ["toy"]  # a method without panels has no section
    assert sections[0]["label"] == "Toy method"
    mix, alloc = sections[0]["panels"]
    assert mix["id"] == "chart-toy-mix" and mix["title"] == "Toy kept and dropped" and mix["view"] == "steps"
    assert [(s["label"], s["source"], s["column"], s["style"], s["axis"]) for s in mix["series"]] == [
        ("kept", "metric", "toy/kept", "bar", "left"),
        ("kept share of trained rollouts", "metric", "toy/kept / rollouts_trained", "line", "right"),
        ("replayed", "decision", "toy.replayed", "bar", "left"),  # the actions endpoint's method.action
    ]
    assert alloc["id"] == "chart-toy-alloc" and alloc["wide"] is True and alloc["view"] == "hora_allocation"
    s = charts.step_series([step_row(0, metrics={"toy/kept": 3.0}), step_row(1, metrics={})], methods=["toy"])
    assert s["metrics"] == {"toy/kept": [3.0, None], "toy/kept / rollouts_trained": [0.75, None]}


def test_a_panel_series_counting_an_unknown_decision_reason_fails_naming_it(monkeypatch):
    class Bad(Toy):
        name = "bad"
        panels = (Panel("p", "P", (Series("x", decision="bad.nothing"),)),)

    monkeypatch.setitem(REGISTRY, "bad", Bad)
    with pytest.raises(ValueError, match="unknown decision reason 'bad.nothing'"):
        charts.method_panels(["bad"])


def test_every_panel_denominator_is_a_step_column_the_series_endpoint_reads():
    from frontend.selectors import STEP_FIELDS

    pers = {s.per for cls in REGISTRY.values() for p in cls.panels for s in p.series if s.per}
    assert pers and pers <= set(STEP_FIELDS)


def test_every_registered_methods_panels_render_and_ask_only_for_metrics_they_draw():
    for name, cls in REGISTRY.items():
        drawn = {s.metric for p in cls.panels for s in p.series if s.metric}
        assert {metric for metric, _ in charts.method_metrics([name]).values()} == drawn, name
        panels = [p for m in charts.method_panels([name]) for p in m["panels"]]
        assert [p["id"] for p in panels] == [f"chart-{name}-{p.key}" for p in cls.panels], name


def test_the_page_names_come_from_their_homes():
    names = charts.page_names("verl")
    assert [b["name"] for b in names["buckets"]] == list(Bucket.NAMES)
    assert [b["label"] for b in names["buckets"]][:2] == ["unseen", "too easy"]
    assert all(b["color"].startswith("#") for b in names["buckets"])
    assert [p["name"] for p in names["phases"]] == [*PHASES, "checkpoint", "other"]
    assert len({p["color"] for p in names["phases"]}) == len(names["phases"])
    assert [p["name"] for p in charts.page_names("local")["phases"]] == list(PHASES)


def test_every_series_column_has_a_legend_in_words_and_running_totals_say_cumulative():
    s = charts.step_series([step_row(0)])
    columns = [c for c in s if c not in ("step", "seconds", "metrics")]
    assert sorted(columns) == sorted(charts.LEGENDS)
    for column, legend in charts.LEGENDS.items():
        assert "_" not in legend and "/" not in legend, legend
        assert column.endswith("_total") == legend.endswith("(cumulative)"), (column, legend)


# -- step_series -------------------------------------------------------------------------------------


def test_step_series_sums_rollouts_and_savings_against_uniform_grpo():
    s = charts.step_series([step_row(0), step_row(1, rollouts_generated=2, rollouts_effective=2)])
    assert s["step"] == [0, 1]
    assert s["rollouts_generated_total"] == [6, 8]
    assert s["rollouts_uniform_total"] == [8, 16]
    assert s["rollout_savings_total"] == [pytest.approx(0.25), pytest.approx(0.5)]
    assert s["effective_share_of_generated_total"] == [pytest.approx(0.5), pytest.approx(5 / 8)]
    assert s["device_hours_total"] == [0.5, 1.0]
    assert s["uniform_device_hours_total"] == [1.0, 2.0]


def test_step_series_continues_the_running_totals_from_the_cursor_base():
    base = RunTotals(rollouts_generated=10, rollouts_uniform=20, rollouts_effective=5, device_seconds=3600.0,
                  uniform_device_seconds=7200.0)
    s = charts.step_series([step_row(5)], base)
    assert s["rollouts_generated_total"] == [16] and s["rollouts_uniform_total"] == [28]
    assert s["rollout_savings_total"] == [pytest.approx(1 - 16 / 28)]
    assert s["device_hours_total"] == [1.5] and s["uniform_device_hours_total"] == [3.0]


def test_step_series_gives_group_shares_reward_and_seconds_per_phase():
    s = charts.step_series([step_row(0)])
    assert s["all_correct_share"] == [0.25] and s["all_wrong_share"] == [0.5]
    assert s["effective_share_of_generated"] == [0.5] and s["rollout_savings"] == [0.25]
    assert s["reward_mean"] == [0.5]
    assert s["seconds"] == {"select": [0.1], "generate": [1.0], "reward": [0.5], "update": [2.0]}


def test_a_verl_run_also_charts_its_checkpoint_and_unaccounted_seconds():
    row = step_row(0, seconds={"select": 0.1, "generate": 1.0, "reward": 0.5, "update": 2.0, "checkpoint": 4.0,
                               "other": 0.25})
    s = charts.step_series([row], phases=charts.phases_of("verl"))
    assert s["seconds"]["checkpoint"] == [4.0] and s["seconds"]["other"] == [0.25]
    assert list(charts.step_series([row], phases=charts.phases_of("local"))["seconds"]) == list(PHASES)


def test_step_series_sends_missing_measurements_as_explicit_nulls():
    row = step_row(0, reward_mean=None, groups_generated=0, seconds={"generate": float("nan")}, rollout_savings=None)
    s = charts.step_series([row], methods=["hive"])
    assert s["reward_mean"] == [None] and s["all_correct_share"] == [None] and s["rollout_savings"] == [None]
    assert s["seconds"]["generate"] == [None] and s["seconds"]["update"] == [None]
    assert s["metrics"]["hive/stage2_kept"] == [None]
    assert "NaN" not in json.dumps(s, allow_nan=True)


def test_step_series_carries_the_metrics_of_the_active_methods_only():
    metrics = {"hive/stage1_kept": 10, "hive/entropy_threshold": 0.7, "rlzvp/shaped_rollouts": 2.0,
               "lze/pruned_pool": 3.0, "greso/p_easy": 0.4}
    s = charts.step_series([step_row(0, metrics=metrics)], methods=["hive", "rlzvp"])
    assert s["metrics"]["hive/stage1_kept"] == [10.0] and s["metrics"]["hive/entropy_threshold"] == [0.7]
    assert s["metrics"]["rlzvp/shaped_rollouts / rollouts_trained"] == [0.5]  # 2 shaped of 4 trained
    assert "lze/pruned_pool" not in s["metrics"] and "greso/p_easy" not in s["metrics"]


def test_step_series_of_no_rows_has_every_column_empty():
    s = charts.step_series([], methods=["lze"])
    assert s["step"] == [] and s["rollouts_generated_total"] == [] and s["metrics"]["lze/selected_share"] == []


def test_step_series_measures_each_saving_against_its_own_yardstick_cumulatively():
    rows = [step_row(0, rollouts_dynamic_sampling=12.0, backward_tokens=20, backward_tokens_mixed=25),
            step_row(1, rollouts_dynamic_sampling=None, backward_tokens=30, backward_tokens_mixed=30),
            step_row(2, rollouts_dynamic_sampling=18.0, backward_tokens=10, backward_tokens_mixed=20)]
    s = charts.step_series(rows)
    # a step without an estimate counts for neither side: 6 of 12, then 12 of 30
    assert s["rollout_savings_vs_dynamic_sampling_total"] == [pytest.approx(0.5), pytest.approx(0.5),
                                                              pytest.approx(1 - 12 / 30)]
    assert s["backward_savings_vs_mixed_total"] == [pytest.approx(0.2), pytest.approx(1 - 50 / 55),
                                                    pytest.approx(1 - 60 / 75)]
    base = RunTotals(rollouts_generated_with_estimate=6, rollouts_dynamic_sampling=12.0, backward_tokens=20,
                  backward_tokens_mixed=25)
    continued = charts.step_series(rows[2:], base)
    assert continued["rollout_savings_vs_dynamic_sampling_total"] == [pytest.approx(1 - 12 / 30)]
    assert continued["backward_savings_vs_mixed_total"] == [pytest.approx(1 - 30 / 45)]
    none_yet = charts.step_series([step_row(0)])  # an engine without the yardsticks
    assert none_yet["rollout_savings_vs_dynamic_sampling_total"] == [None]
    assert none_yet["backward_savings_vs_mixed_total"] == [None]


# -- the yardstick tiles (shaped by frontend/savings.py) ------------------------------------------------------


def test_yardstick_tiles_say_in_words_what_each_saving_is_measured_against():
    from controlplane.runs.selectors import SAVINGS
    from frontend import savings
    from workers.selection.accounting import YARDSTICKS, RunTotals

    totals = RunTotals(steps=2, rollouts_generated=36, rollouts_uniform=48, rollouts_effective=18,
                       rollouts_generated_with_estimate=36, rollouts_dynamic_sampling=32.0)
    config = {"batch_size": 4, "group_size": 4, "selectors": {"lze": {"prune": True}}}
    tiles = savings.savings_tiles(totals, config)["tiles"]
    assert [t["element"] for t in tiles] == ["tile-savings", "tile-savings-ds", "tile-savings-backward"]
    assert [t["shown"] for t in tiles] == ["25.0%", "-12.5%", "–"]
    assert [t["against"] for t in tiles] == [YARDSTICKS[n] for n in ("uniform", "dynamic_sampling", "backward_mixed")]
    assert [t["formula"] for t in tiles] == [SAVINGS[n][1] for n in ("rollout_savings",
                                                                      "rollout_savings_vs_dynamic_sampling",
                                                                      "backward_savings_vs_mixed")]
    assert [t["sentence"] for t in tiles] == ["25.0% fewer rollouts than uniform GRPO",
                                              "12.5% more rollouts than dynamic sampling", None]
    assert charts.LEGENDS[tiles[1]["series"]] == "rollout savings vs dynamic sampling (cumulative)"
    assert charts.LEGENDS[tiles[0]["series"]] == "rollout savings vs uniform GRPO (cumulative)"
    assert all(t["saving"] for t in tiles)


def test_the_uniform_budget_tile_shows_the_effective_share_and_claims_no_saving():
    from frontend import savings
    from workers.selection.accounting import YARDSTICKS, RunTotals

    totals = RunTotals(steps=1, rollouts_generated=48, rollouts_uniform=48, rollouts_effective=30)
    tiles = savings.savings_tiles(totals, {"batch_size": 4, "group_size": 4, "selectors": {"hora": {"n0": 2}}})
    budget = tiles["tiles"][1]
    assert budget["element"] == "tile-effective" and budget["shown"] == "62.5%" and budget["saving"] is False
    assert budget["against"] == "no saving claimed: " + YARDSTICKS["uniform_budget"].removeprefix("none: ")
    assert budget["formula"] == savings.FORMULAS["effective_share_of_generated"]
    assert set(savings.FAMILIES) == set(YARDSTICKS)


# -- cost to reach a baseline's Pass@1 --------------------------------------------------------------------


def evaluation(step: int, pass_at_1: float, rollouts: int, seconds: float) -> dict:
    return {"step": step, "k": 4, "pass_at_1": pass_at_1, "pass_at_k": 0.9, "rollouts_generated_total": rollouts,
            "device_seconds_total": seconds}


def test_cost_to_reach_is_what_was_spent_before_the_first_evaluation_at_or_above_the_target():
    rows = [evaluation(0, 0.1, 0, 0.0), evaluation(5, 0.5, 40, 4.0), evaluation(10, 0.6, 80, 8.0)]
    assert charts.cost_to_reach(rows, 0.5) == {"reached": True, "step": 5, "rollouts_generated_total": 40,
                                               "device_seconds_total": 4.0}
    assert charts.cost_to_reach(rows, 0.7)["reached"] is False
    assert charts.cost_to_reach(rows, None)["rollouts_generated_total"] is None


def test_reach_row_sets_the_baselines_final_pass_at_1_as_the_target():
    baseline = [evaluation(0, 0.1, 0, 0.0), evaluation(5, 0.45, 100, 10.0), evaluation(10, 0.4, 200, 20.0)]
    run = [evaluation(0, 0.1, 0, 0.0), evaluation(5, 0.42, 50, 6.0), evaluation(10, 0.7, 90, 9.0)]
    row = charts.reach_row(run, baseline)
    assert row["target_pass_at_1"] == 0.4 and row["target_step"] == 10  # final, not best
    assert row["cost"]["step"] == 5 and row["cost"]["rollouts_generated_total"] == 50
    assert row["baseline_cost"]["step"] == 5 and row["baseline_cost"]["rollouts_generated_total"] == 100
    assert row["rollouts_share"] == 0.5 and row["device_seconds_share"] == 0.6
    assert charts.reach_row(run, [])["target_pass_at_1"] is None
    assert charts.reach_row([], baseline)["cost"]["reached"] is False and charts.reach_row([], baseline)[
        "rollouts_share"] is None


# -- accuracy_series, action_counts ----------------------------------------------------------------------


def test_accuracy_series_puts_pass_at_k_against_rollouts_and_device_hours():
    rows = [{"step": 0, "k": 8, "pass_at_1": 0.1, "pass_at_k": 0.3, "rollouts_generated_total": 0,
             "device_seconds_total": 0.0},
            {"step": 10, "k": 8, "pass_at_1": 0.4, "pass_at_k": float("nan"), "rollouts_generated_total": 640,
             "device_seconds_total": 7200.0}]
    s = charts.accuracy_series(rows)
    assert s == {"step": [0, 10], "rollouts_generated_total": [0, 640], "device_hours_total": [0.0, 2.0],
                 "pass_at_1": [0.1, 0.4], "pass_at_k": [0.3, None], "k": [8, 8]}


def test_action_counts_fill_every_step_of_the_page_with_zeros_where_nothing_happened():
    rows = [(3, "hive", "kept", 5), (3, "hive", "skipped", 2), (4, "hive", "kept", 4), (4, "lze", "replayed", 1)]
    s = charts.action_counts(rows)
    assert s["step"] == [3, 4]
    assert s["counts"] == {"hive.kept": [5, 4], "hive.skipped": [2, 0], "lze.replayed": [0, 1]}
    assert charts.action_counts([]) == {"step": [], "counts": {}}


# -- method panels --------------------------------------------------------------------------------------


def test_hora_allocation_gives_mean_extra_rollouts_by_probe_successes_per_step():
    rows = [(0, 0, 2, 12.0), (0, 2, 1, 0.0), (1, 1, 4, 8.0), (1, 1, 1, 2.0)]
    s = charts.hora_allocation(rows, max_successes=4)
    assert s["step"] == [0, 1] and s["successes"] == [0, 1, 2, 3, 4]
    assert s["mean_extra"][0] == [6.0, None]
    assert s["mean_extra"][1] == [None, 2.0]  # (8 + 2) / (4 + 1)
    assert s["mean_extra"][2] == [0.0, None]
    assert s["mean_extra"][4] == [None, None]
    assert s["prompts"][1] == [0, 5]


def test_hora_allocation_widens_its_axis_to_the_largest_successes_seen():
    assert charts.hora_allocation([(0, 3, 1, 1.0)])["successes"] == [0, 1, 2, 3]
    assert charts.hora_allocation([], max_successes=2) == {"step": [], "successes": [0, 1, 2],
                                                           "mean_extra": [[], [], []], "prompts": [[], [], []]}


def test_energy_histogram_splits_selected_from_not_selected_groups():
    values = [(0.0, True), (0.5, False), (1.0, True), (1.0, True), (None, False), (float("nan"), True)]
    s = charts.energy_histogram(values, bins=4)
    assert s["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert s["selected"] == [1, 0, 0, 2] and s["not_selected"] == [0, 0, 1, 0]
    assert s["missing"] == 2


def test_energy_histogram_of_one_value_or_none():
    one = charts.energy_histogram([(0.3, True)], bins=2)
    assert one["edges"] == [pytest.approx(-0.2), pytest.approx(0.3), pytest.approx(0.8)]
    assert one["selected"] == [0, 1]
    assert charts.energy_histogram([(None, True)]) == {"edges": [], "selected": [], "not_selected": [], "missing": 1}


# -- learning edge ------------------------------------------------------------------------------------------


def test_edge_map_groups_prompts_by_bucket_over_pass_rate_and_entropy():
    points = [("a", 1.0, 0.2, "too_easy"), ("b", 0.5, 0.9, "edge"), ("c", 0.0, None, "too_hard"),
              ("d", None, None, "pruned"), ("e", 0.25, 0.4, "weird")]
    s = charts.edge_map(points, total=10)
    assert s["buckets"]["edge"] == {"x": [0.5], "y": [0.9], "key": ["b"]}
    assert s["buckets"]["too_hard"] == {"x": [0.0], "y": [None], "key": ["c"]}
    assert s["buckets"]["unseen"]["key"] == ["e"]  # an unknown bucket is drawn as unseen
    assert s["buckets"]["pruned"]["key"] == []  # no pass rate: counted, not placed
    assert s["counts"] == {"unseen": 1, "too_easy": 1, "edge": 1, "too_hard": 1, "pruned": 1, "stale": 0}
    assert s["shown"] == 4 and s["no_entropy"] == 1 and s["total"] == 10
    assert list(s["buckets"]) == list(Bucket.NAMES)  # one trace per bucket, in Bucket order


def test_heatmap_layout_gives_one_column_per_step_up_to_the_limit_then_bins():
    assert HeatmapLayout(steps_planned=100).steps_per_column == 1
    assert HeatmapLayout(steps_planned=1000).steps_per_column == 5


def test_heatmap_layout_sends_a_binned_column_only_once_it_is_complete():
    layout = HeatmapLayout(steps_planned=1000)  # 5 steps a column
    assert layout.complete_until(3, finished=False) == -1
    assert layout.complete_until(4, finished=False) == 4
    assert layout.complete_until(8, finished=False) == 4
    assert layout.complete_until(8, finished=True) == 8
    assert HeatmapLayout(steps_planned=50).complete_until(7, finished=False) == 7


# -- the prompt page ----------------------------------------------------------------------------------------


def test_prompt_series_follows_one_prompt_over_steps():
    rows = [{"step": 1, "pass_rate": 0.0, "response_entropy": 0.9, "prompt_entropy": None, "group_size": 8,
             "bucket": "too_hard"},
            {"step": 4, "pass_rate": 0.5, "response_entropy": float("nan"), "prompt_entropy": 1.2, "group_size": 8,
             "bucket": "edge"}]
    s = charts.prompt_series(rows)
    assert s == {"step": [1, 4], "pass_rate": [0.0, 0.5], "response_entropy": [0.9, None],
                 "prompt_entropy": [None, 1.2], "group_size": [8, 8], "bucket": ["too_hard", "edge"]}


def test_bucket_changes_list_each_move_once_including_pruning_and_restoring():
    observations = [(0, "too_hard"), (1, "too_hard"), (2, "edge"), (3, "too_easy"), (6, "edge")]
    decisions = [(4, "pruned"), (4, "skipped"), (6, "restored")]
    assert charts.bucket_changes(observations, decisions) == [
        {"step": 0, "from": "unseen", "to": "too_hard"},
        {"step": 2, "from": "too_hard", "to": "edge"},
        {"step": 3, "from": "edge", "to": "too_easy"},
        {"step": 4, "from": "too_easy", "to": "pruned"},
        {"step": 6, "from": "pruned", "to": "edge"},
    ]
    assert charts.bucket_changes([]) == []


# -- compare, budget, progress, forecast ------------------------------------------------------------------


def test_savings_row_compares_a_run_with_uniform_grpo():
    row = charts.savings_row({"steps": 10, "rollouts_generated": 600, "rollouts_uniform": 800,
                              "rollouts_effective": 300, "device_seconds": 1800.0, "uniform_device_seconds": 3600.0})
    assert row == {"steps": 10, "rollouts_generated": 600, "rollouts_uniform": 800, "rollout_savings": 0.25,
                   "rollout_savings_vs_dynamic_sampling": None, "backward_savings_vs_mixed": None,
                   "effective_share_of_generated": 0.5, "device_hours": 0.5, "uniform_device_hours": 1.0,
                   "device_hours_saved": 0.5, "device_hours_savings": 0.5}
    # each yardstick from its own sums: dynamic sampling over the steps with an estimate
    filtered = charts.savings_row({"steps": 10, "rollouts_generated": 600, "rollouts_uniform": 800,
                                   "rollouts_effective": 300, "device_seconds": 0.0, "uniform_device_seconds": 0.0,
                                   "rollouts_generated_with_estimate": 500, "rollouts_dynamic_sampling": 1000.0,
                                   "backward_tokens": 300, "backward_tokens_mixed": 400})
    assert filtered["rollout_savings_vs_dynamic_sampling"] == pytest.approx(0.5)
    assert filtered["backward_savings_vs_mixed"] == pytest.approx(0.25)
    empty = charts.savings_row({"steps": 0, "rollouts_generated": 0, "rollouts_uniform": 0, "rollouts_effective": 0,
                                "device_seconds": 0, "uniform_device_seconds": 0})
    assert empty["rollout_savings"] is None and empty["effective_share_of_generated"] is None


UTC = dt.UTC
NOW = dt.datetime(2026, 11, 10, 12, 30, tzinfo=UTC)
HOUR = [dt.datetime(2026, 11, 10, h, tzinfo=UTC) for h in range(24)]


def test_budget_series_accumulates_use_and_draws_limit_and_forecast():
    usage = [(HOUR[3], 1800.0, 3600.0), (HOUR[5], 3600.0, 3600.0)]
    s = charts.budget_series(usage, period_start=dt.date(2026, 11, 1), period_end=dt.date(2026, 12, 1),
                             limit_device_hours=2.0, forecast_device_hours=4.0, now=NOW)
    # a time series: from 0 at the period start, hour by hour, carried flat to now; no timezone suffix
    assert s["time"] == ["2026-11-01", "2026-11-10 03:00:00", "2026-11-10 05:00:00", "2026-11-10 12:30:00"]
    assert s["used_device_hours"] == [0.0, 0.5, 1.5, 1.5] and s["uniform_device_hours"] == [0.0, 1.0, 2.0, 2.0]
    assert s["range"] == ["2026-11-01", "2026-12-01"]
    assert s["limit"] == {"time": ["2026-11-01", "2026-12-01"], "device_hours": [2.0, 2.0]}
    assert s["warning_line"] == {"time": ["2026-11-01", "2026-12-01"], "device_hours": [1.6, 1.6]}  # 80% of it
    assert s["forecast"] == {"time": ["2026-11-10 12:30:00", "2026-12-01"], "device_hours": [1.5, 4.0]}
    assert s["used_share"] == 0.75 and s["level"] == "ok" and s["empty"] is None


@pytest.mark.parametrize("used_seconds, level", [(2.0 * 3600 * 0.79, "ok"), (2.0 * 3600 * 0.8, "warning"),
                                                 (2.0 * 3600, "exhausted"), (3.0 * 3600, "exhausted")])
def test_budget_series_warns_at_80_percent_and_is_exhausted_at_100(used_seconds, level):
    s = charts.budget_series([(HOUR[1], used_seconds, 0.0)], period_start=dt.date(2026, 11, 1),
                             period_end=dt.date(2026, 12, 1), limit_device_hours=2.0, now=NOW)
    assert s["level"] == level


def test_budget_series_without_a_budget_has_no_limit_forecast_or_level():
    s = charts.budget_series([(HOUR[1], 3600.0, 7200.0)], now=NOW)
    assert s["time"] == ["2026-11-10 01:00:00", "2026-11-10 12:30:00"] and s["used_device_hours"] == [1.0, 1.0]
    assert s["limit"] is None and s["warning_line"] is None and s["forecast"] is None
    assert s["used_share"] is None and s["level"] == "none"
    assert s["range"] == ["2026-11-09 12:30:00", "2026-11-10 12:30:00"]  # the last day, as dates


def test_an_empty_budget_chart_still_spans_dates_and_says_what_will_appear():
    # no use and no budget: the axis is the last day up to now, never Plotly's year 2000
    s = charts.budget_series([], now=NOW)
    assert s["time"] == [] and s["range"] == ["2026-11-09 12:30:00", "2026-11-10 12:30:00"]
    assert s["empty"].startswith("No device time used yet")
    # a period, nothing used: the period is the axis, its line flat at 0 up to now
    s = charts.budget_series([], period_start=dt.date(2026, 11, 1), period_end=dt.date(2026, 12, 1),
                             limit_device_hours=1.0, now=NOW)
    assert s["time"] == ["2026-11-01", "2026-11-10 12:30:00"] and s["used_device_hours"] == [0.0, 0.0]
    assert s["range"] == ["2026-11-01", "2026-12-01"] and s["empty"].startswith("No device time used this period")
    # use older than a day, without a period: the axis reaches back to it
    old = charts.budget_series([(NOW - dt.timedelta(days=3), 60.0, 60.0)], now=NOW)
    assert old["range"][0] == "2026-11-07 12:30:00"
    # a period that has ended: not carried past its end
    past = charts.budget_series([(dt.datetime(2026, 10, 20, 1, tzinfo=UTC), 60.0, 60.0)],
                                period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1), now=NOW)
    assert past["time"][-1] == "2026-10-20 01:00:00"


def test_every_run_chart_says_what_it_will_show_and_when():
    panels = charts.method_panels(["hive", "hora", "lze"])
    notes = charts.chart_notes({"eval_every": 10}, panels)
    assert notes["chart-acc-rollouts"] == "Held-out accuracy appears after the first evaluation, every 10 steps"
    assert {p["id"] for m in panels for p in m["panels"]} < set(notes)
    assert notes["chart-hive-kept"] == "Prompts kept per stage: appears after the first step"
    assert all("_" not in text and text[0].isupper() for text in notes.values())
    assert charts.chart_notes({})["chart-acc-hours"].endswith("every 10 steps")  # the default
    assert charts.evaluation_note(1).endswith("every 1 step")
    assert charts.evaluation_note(0) == "Held-out accuracy appears after the evaluation at the end of the run"


def test_progress_is_a_share_of_planned_steps_clamped_to_one():
    assert charts.progress(5, 20) == 0.25
    assert charts.progress(30, 20) == 1.0 and charts.progress(3, 0) == 0.0


def test_launch_forecast_says_whether_the_run_fits_the_remaining_budget():
    fits = charts.launch_forecast(0.5, 2.0)
    assert fits["fits"] and fits["share"] == 0.25 and "fits within" in fits["message"]
    over = charts.launch_forecast(3.0, 2.0)
    assert not over["fits"] and over["share"] == 1.5 and "exceeds" in over["message"]
    free = charts.launch_forecast(3.0, None)
    assert free["fits"] and free["share"] is None and "no budget limit" in free["message"]


# -- the warm-up bar's words --------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "shown"), [(0, "0.0 s"), (42.04, "42.0 s"), (119.9, "119.9 s"),
                                                (120, "2.0 min"), (750, "12.5 min"), (7199, "120.0 min"),
                                                (7200, "2.00 h"), (11_700, "3.25 h"), (-1, "0.0 s")])
def test_device_time_reads_in_the_unit_that_fits(seconds, shown):
    assert charts.device_time(seconds) == shown


def test_the_warmup_bar_says_steps_done_of_the_total_and_the_time_booked():
    from controlplane.runs.selectors import WarmupProgress

    bar = charts.warmup_progress(WarmupProgress(step=4900, steps=4900, active=False, device_seconds=270.0))
    assert bar["percent"] == 100.0 and not bar["active"]
    assert bar["label"] == "supervised warm-up 4,900 / 4,900 steps"
    assert bar["booked"] == "4.5 min of device time booked for the warm-up"
    assert charts.warmup_progress(WarmupProgress(step=0, steps=12_345, active=True, device_seconds=0.0))[
        "label"] == "supervised warm-up 0 / 12,345 steps"
    assert charts.warmup_progress(None) is None and charts.waiting_for(None) is None
