"""The savings a person reads (frontend/savings.py): percentages that say against what, the
formula with the run's numbers, one tile per method family, one line why a saving is negative,
and what an empty tile will show, for every family combination. No database: totals and configs
are built here."""

from __future__ import annotations

import itertools
import re

import pytest

from frontend import savings
from workers.selection.accounting import YARDSTICKS, RunTotals
from workers.selection.params import SelectionConfigError
from workers.selection.pipeline import Pipeline

# One config per family combination: (selectors, the families they bring beyond uniform GRPO)
METHODS = {
    "grpo": ({"grpo": {}}, set()),
    "dapo": ({"dapo": {}}, {"dynamic_sampling"}),
    "greso": ({"greso": {}}, {"dynamic_sampling"}),
    "hive": ({"hive": {}}, {"dynamic_sampling"}),
    "lze_backward": ({"lze": {"prune": False}}, {"backward_mixed"}),
    "lze_both": ({"lze": {"prune": True, "backward": True}}, {"dynamic_sampling", "backward_mixed"}),
    "hora": ({"hora": {"n0": 2}}, {"uniform_budget"}),
    "rlzvp": ({"rlzvp": {}}, {"uniform_budget"}),
}


def config(*names: str, **settings) -> dict:
    selectors = {}
    for name in names:
        selectors.update(METHODS[name][0])
    return {"batch_size": 4, "group_size": 4, "selectors": selectors, **settings}


def totals(**figures) -> RunTotals:
    base = {"steps": 3, "rollouts_generated": 120, "rollouts_uniform": 48, "rollouts_effective": 60,
            "rollouts_trained": 48, "rollouts_generated_with_estimate": 120, "rollouts_dynamic_sampling": 255.0,
            "backward_tokens": 400, "backward_tokens_mixed": 640}
    return RunTotals(**{**base, **figures})


NO_STEPS = RunTotals()



def accepted(names: tuple[str, ...]) -> bool:
    try:
        Pipeline(config(*names)["selectors"], batch_size=4, group_size=4)
    except SelectionConfigError:
        return False
    return True


# Every composition of up to three of these the pipeline accepts (LZE twice is the same method).
COMBOS = [c for n in range(1, 4) for c in itertools.combinations(METHODS, n)
          if sum(x.startswith("lze") for x in c) <= 1 and accepted(c)]


def test_families_follow_the_methods_and_name_lze_by_its_part():
    assert savings.families(config("grpo")) == {"uniform": []}
    assert savings.families(config("hive", "hora", "lze_both")) == {
        "uniform": [], "dynamic_sampling": ["HIVE", "LZE pruner"], "backward_mixed": ["LZE backward selection"],
        "uniform_budget": ["HORA"]}
    assert savings.families(config("hora", "rlzvp", "hive")) == {
        "uniform": [], "dynamic_sampling": ["HIVE"], "uniform_budget": ["HORA", "RL-ZVP"]}
    # a config a later release refuses is still readable: uniform GRPO only
    assert savings.families({"selectors": {"no-such-method": {}}}) == {"uniform": []}
    assert savings.families({}) == {"uniform": []}


@pytest.mark.parametrize("names", COMBOS, ids=["+".join(c) for c in COMBOS])
@pytest.mark.parametrize("case", ["positive", "negative", "no_steps", "zero_yardsticks"])
def test_every_family_combination_reads_as_percentages_against_words(names, case):
    cfg = config(*names)
    present = savings.families(cfg)
    assert set(present) == {"uniform"}.union(*(METHODS[n][1] for n in names))
    figures = {
        "positive": totals(rollouts_generated=40, rollouts_generated_with_estimate=40, backward_tokens=300),
        "negative": totals(rollouts_generated=300, rollouts_generated_with_estimate=300, backward_tokens=900),
        "no_steps": NO_STEPS,
        "zero_yardsticks": totals(rollouts_uniform=0, rollouts_dynamic_sampling=0.0, backward_tokens_mixed=0,
                                  rollouts_generated=0, rollouts_generated_with_estimate=0),
    }[case]
    out = savings.savings_tiles(figures, cfg)
    tiles = out["tiles"]
    assert [t["yardstick"] for t in tiles] == list(present) and tiles[0]["yardstick"] == "uniform"
    assert (out["effective"] is None) == ("uniform_budget" in present)
    for tile in tiles:
        assert tile["against"] and "_" not in tile["label"] and "{" not in tile["label"]
        if tile["value"] is None:
            assert tile["shown"] == "–" and tile["sentence"] is None and tile["why"] is None
            assert tile["empty"] and ("appears" in tile["empty"] or "not yet" in tile["empty"]
                                      or "no figure" in tile["empty"])
            continue
        assert re.fullmatch(r"-?\d+\.\d%", tile["shown"]), tile["shown"]
        assert tile["empty"] is None and tile["worked"].endswith(f"= {tile['shown']}")
        if tile["saving"]:
            short = savings.FAMILIES[tile["yardstick"]].short
            assert tile["sentence"].endswith(f"than {short}") or tile["sentence"].startswith("as many")
            assert (tile["why"] is not None) == (tile["value"] < 0), tile
        else:
            assert "carried a learning signal" in tile["sentence"] and "effective" in tile["counts"]
    head = out["headline"]
    assert head["yardstick"] in present and head["percent"] == (
        "–" if head["value"] is None else savings.percent(head["value"]))
    assert (head["sentence"] is None) == (head["value"] is None) == (head["empty"] is not None)


def test_filters_say_how_much_fewer_than_dynamic_sampling_and_why_uniform_grpo_looks_worse():
    # 120 rollouts for uniform GRPO's 48, dynamic sampling's 255: a loss against uniform GRPO,
    # a saving against what the filters replace.
    out = savings.savings_tiles(totals(), config("greso"))
    uniform, ds = out["tiles"]
    assert ds["label"] == "Filters (GRESO) vs dynamic sampling"
    assert ds["shown"] == "52.9%" and ds["sentence"] == "52.9% fewer rollouts than dynamic sampling"
    assert ds["worked"] == "1 - 120 / 255 = 52.9%" and ds["why"] is None
    assert ds["against"] == YARDSTICKS["dynamic_sampling"]
    assert ds["formula"].startswith("1 - rollouts generated / rollouts dynamic sampling would generate")
    assert uniform["shown"] == "-150.0%" and uniform["sentence"] == "150.0% more rollouts than uniform GRPO"
    assert uniform["why"] == ("refilled to 4 mixed groups a step: 2.5x the rollouts of uniform GRPO, "
                              "0.47x those of dynamic sampling")
    # the headline is the filters' claim
    assert out["headline"]["percent"] == "52.9%" and out["headline"]["against"] == "dynamic sampling"
    assert out["headline"]["why"] is None


def test_a_filter_run_without_an_estimate_says_when_the_figure_comes_and_heads_with_uniform_grpo():
    figures = totals(rollouts_generated_with_estimate=0, rollouts_dynamic_sampling=0.0)
    out = savings.savings_tiles(figures, config("hive"))
    uniform, ds = out["tiles"]
    assert ds["shown"] == "–" and "32 uniformly drawn groups" in ds["empty"] and "5% audit draws" in ds["empty"]
    assert uniform["why"] == ("refilled to 4 mixed groups a step: 2.5x the rollouts of uniform GRPO, "
                              "no estimate of dynamic sampling's rollouts yet")
    head = out["headline"]
    assert head["yardstick"] == "uniform" and head["percent"] == "-150.0%"
    assert head["sentence"] == "150.0% more rollouts than uniform GRPO" and head["why"].startswith("refilled to 4")
    # audit share 0: the figure never comes, and the tile says so
    none = savings.savings_tiles(figures, config("hive", audit_share=0))["tiles"][1]
    assert none["empty"].startswith("no figure: this run's audit share is 0")


def test_negative_against_dynamic_sampling_and_backward_say_why_with_ratios():
    figures = totals(rollouts_generated=300, rollouts_generated_with_estimate=300, rollouts_dynamic_sampling=200.0,
                     backward_tokens=800, backward_tokens_mixed=640)
    tiles = {t["yardstick"]: t for t in savings.savings_tiles(figures, config("lze_both", "hora"))["tiles"]}
    assert tiles["dynamic_sampling"]["sentence"] == "50.0% more rollouts than dynamic sampling"
    assert tiles["dynamic_sampling"]["why"].startswith(
        "1.5x the rollouts dynamic sampling would need for the same mixed groups (300 generated for 200)")
    backward = tiles["backward_mixed"]
    assert backward["label"] == "LZE backward selection: backward tokens"
    assert backward["sentence"] == "25.0% more backward tokens than GRPO without zero-advantage groups"
    assert backward["why"] == ("1.2x the backward tokens of GRPO without zero-advantage groups (800 for 640): "
                               "groups without a mixed outcome entered the update")


def test_a_run_without_filters_says_what_its_extra_rollouts_are():
    tile = savings.savings_tiles(totals(rollouts_generated=60), config("hora"))["tiles"][0]
    assert tile["sentence"] == "25.0% more rollouts than uniform GRPO"
    assert tile["why"] == ("1.2x the rollouts of uniform GRPO (60 generated for 48): probes, extra rollouts and "
                           "replays count as generated")


def test_equal_budget_methods_show_the_effective_share_and_what_counts():
    out = savings.savings_tiles(totals(rollouts_generated=48, rollouts_effective=30), config("hora", "rlzvp"))
    uniform, budget = out["tiles"]
    assert uniform["sentence"] == "as many rollouts as uniform GRPO" and uniform["why"] is None
    assert budget["label"] == "HORA, RL-ZVP at equal rollouts" and budget["saving"] is False
    assert budget["shown"] == "62.5%" and budget["element"] == "tile-effective"
    assert budget["sentence"] == ("62.5% of generated rollouts carried a learning signal, at 100% of uniform "
                                  "GRPO's rollouts")
    assert "RL-ZVP shapes" in budget["counts"] and budget["against"].startswith("no saving claimed")
    assert budget["worked"] == "30 / 48 = 62.5%" and out["effective"] is None
    # without RL-ZVP, the effective tile says zero-variance groups do not count
    effective = savings.savings_tiles(totals(), config("grpo"))["effective"]
    assert effective["shown"] == "50.0%" and "do not count" in effective["counts"]
    assert "RL-ZVP" not in effective["counts"]


def test_a_run_with_no_steps_says_what_will_appear():
    out = savings.savings_tiles(NO_STEPS, config("hive", "lze_backward", "hora"))
    for tile in out["tiles"]:
        assert tile["shown"] == "–" and tile["why"] is None and tile["worked"] is None
        assert "appears" in tile["empty"], tile
    assert out["headline"]["percent"] == "–" and out["headline"]["empty"].startswith("appears after the first step")


def test_numbers_in_words():
    assert savings.percent(-5.344) == "-534.4%" and savings.percent(None) == "–"
    assert savings.percent(float("nan")) == "–"
    assert [savings.times(x) for x in (0.4705, 2.34, 12.4, 1234.0)] == ["0.47x", "2.3x", "12x", "1,234x"]
    assert savings.ratio(1, 0) is None and savings.ratio(None, 4) is None and savings.ratio(2, 4) == 0.5
    assert savings.saving_sentence(-5.344, "rollouts", "uniform GRPO") == "534.4% more rollouts than uniform GRPO"
    assert savings.saving_sentence(0.0001, "rollouts", "x") == "as many rollouts as x"
    head = savings.run_headline(totals(), config("grpo"))
    assert head == savings.headline(totals(), config("grpo")) and head["against"] == "uniform GRPO"


def test_device_hours_read_as_a_percentage_against_uniform_grpo():
    more = savings.device_tile(totals(device_seconds=7200.0, uniform_device_seconds=3600.0))
    assert more["shown"] == "2.0000" and more["value"] == -1.0
    assert more["sentence"] == "100.0% more device-hours than uniform GRPO would use (1.0000 h)"
    assert more["worked"] == "1 - 7,200.0 / 3,600.0 = -100.0%"
    fewer = savings.device_tile(totals(device_seconds=900.0, uniform_device_seconds=3600.0))
    assert fewer["sentence"] == "75.0% fewer device-hours than uniform GRPO would use (0.7500 h)"
    unknown = savings.device_tile(totals(device_seconds=900.0, uniform_device_seconds=0.0))
    assert unknown["sentence"] is None and unknown["empty"] == "no estimate yet of uniform GRPO's device time"
    assert savings.device_tile(NO_STEPS)["empty"].startswith("appears after the first step")
    assert savings.savings_tiles(NO_STEPS, config("grpo"))["device"]["shown"] == "0.0000"
