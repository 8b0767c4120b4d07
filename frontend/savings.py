"""Savings a person can read: the run page's savings tiles and the runs list's headline.

Every figure is a percentage that says, in words, what it is measured against ("47.0% fewer
rollouts than dynamic sampling"), carries its formula with the run's own numbers (shown one
click away on the page), and, when negative, one line saying why, with ratios computed from the
run's totals. One tile per method family the run holds (docs/savings.md):

- every run: rollouts against uniform GRPO (B x N a step);
- filters (DAPO, GRESO, HIVE, the LZE pruner): rollouts against dynamic sampling;
- LZE backward selection: backward tokens against GRPO without zero-advantage groups;
- HORA and RL-ZVP: at equal rollouts (uniform GRPO's budget): the effective share they buy.

Plain functions over ``RunTotals`` and a run's config, tested on their own
(tests/frontend/test_savings.py). The formulas are the accounting's (workers.selection.accounting),
their words the control plane's (controlplane.runs.selectors.SAVINGS) and the yardsticks'
(workers.selection.accounting.YARDSTICKS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.runs.selectors import SAVINGS
from workers.selection.accounting import YARDSTICKS, RunTotals
from workers.selection.accounting import saving as saving_of
from workers.selection.params import SelectionConfigError
from workers.selection.pipeline import AUDIT_MIN_GROUPS, AUDIT_SHARE, Pipeline
from workers.selection.registry import REGISTRY

# The formulas in words: the savings' are the API's help texts (controlplane.runs.selectors.SAVINGS).
FORMULAS = {
    **{name: formula for name, (_, formula) in SAVINGS.items()},
    "effective_share_of_generated": ("rollouts with a non-zero advantage in the update / rollouts generated, summed "
                                     "over the steps"),
}


@dataclass(frozen=True)
class Family:
    """A method family's tile: the figure it shows and how the page names it."""

    yardstick: str  # a key of YARDSTICKS
    metric: str  # the RunTotals property shown
    element: str  # the id of the tile's value (the live updates rewrite it and its siblings)
    series: str  # the step_series column whose newest value is the figure (the savings chart)
    title: str  # the tile's heading; {methods} is the family's methods, in words
    short: str  # the yardstick in a few words, after "than"
    unit: str  # what is counted ("rollouts", "backward tokens")


FAMILIES: dict[str, Family] = {
    "uniform": Family("uniform", "rollout_savings", "tile-savings", "rollout_savings_total",
                      "Rollouts vs uniform GRPO", "uniform GRPO", "rollouts"),
    "dynamic_sampling": Family("dynamic_sampling", "rollout_savings_vs_dynamic_sampling", "tile-savings-ds",
                               "rollout_savings_vs_dynamic_sampling_total", "Filters ({methods}) vs dynamic sampling",
                               "dynamic sampling", "rollouts"),
    "backward_mixed": Family("backward_mixed", "backward_savings_vs_mixed", "tile-savings-backward",
                             "backward_savings_vs_mixed_total", "{methods}: backward tokens",
                             "GRPO without zero-advantage groups", "backward tokens"),
    # Methods that spend uniform GRPO's budget claim no saving: the tile shows what they buy.
    "uniform_budget": Family("uniform_budget", "effective_share_of_generated", "tile-effective",
                             "effective_share_of_generated_total", "{methods} at equal rollouts",
                             "uniform GRPO's rollout budget", "rollouts"),
}

# A method acting in two families is named by its part in each (LZE prunes, and selects the update).
PART_NAMES = {("lze", "dynamic_sampling"): "LZE pruner", ("lze", "backward_mixed"): "LZE backward selection"}

_RUN_DEFAULTS = {"batch_size": 32, "group_size": 8, "audit_share": AUDIT_SHARE, "eval_every": 10}


def setting(config: Mapping[str, Any], name: str) -> Any:
    """A run setting from its stored config, else the default a run gets (workers.engines.config)."""
    value = config.get(name) if isinstance(config, Mapping) else None
    return _RUN_DEFAULTS[name] if value is None else value


def families(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """The families of the run's methods, {yardstick: the methods in it, in words}, uniform GRPO
    first and then in YARDSTICKS order (as Pipeline.yardsticks); uniform GRPO's list is empty."""
    selectors = (config.get("selectors") if isinstance(config, Mapping) else None) or {}
    try:
        pipeline = Pipeline(selectors, batch_size=max(int(setting(config, "batch_size")), 1),
                            group_size=max(int(setting(config, "group_size")), 2))
    except (SelectionConfigError, TypeError, ValueError):  # stored before a release refused it: still readable
        return {"uniform": []}
    members: dict[str, list[str]] = {}
    order = list(REGISTRY)  # the registry's order, as the method chips show them
    for name, selector in sorted(pipeline.selectors.items(), key=lambda item: order.index(item[0])
                                 if item[0] in order else len(order)):
        label = getattr(REGISTRY.get(name), "label", name)
        for yardstick in selector.yardsticks():
            members.setdefault(yardstick, []).append(PART_NAMES.get((name, yardstick), label))
    return {"uniform": [], **{y: members[y] for y in YARDSTICKS if y != "uniform" and y in members}}


# -- numbers in words ------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def percent(value: float | None, digits: int = 1) -> str:
    """A share as the dashboard writes it ("33.3%", "-534.4%"; "–" for none), as plots.js's pct."""
    value = _finite(value)
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def times(value: float) -> str:
    """A ratio as "2.3x", "0.47x", "12x": two significant figures, never an exponent."""
    if value >= 10:
        return f"{value:,.0f}x"
    if value >= 1:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def count(value: float) -> str:
    return f"{value:,.0f}"


def ratio(spent: float | None, yardstick: float | None) -> float | None:
    """spent / yardstick; None when the yardstick is missing or zero."""
    spent, yardstick = _finite(spent), _finite(yardstick)
    if spent is None or not yardstick:
        return None
    return spent / yardstick


def saving_sentence(value: float | None, unit: str, short: str) -> str | None:
    """ "47.0% fewer rollouts than dynamic sampling", "534.4% more ...", "as many ... as ..."."""
    value = _finite(value)
    if value is None:
        return None
    if abs(value) < 0.0005:  # rounds to 0.0%
        return f"as many {unit} as {short}"
    return f"{percent(abs(value))} {'fewer' if value > 0 else 'more'} {unit} than {short}"


# -- what each tile says ----------------------------------------------------------------------------------


def _worked(spent: float, yardstick: float, value: float | None) -> str | None:
    """The formula with the run's numbers: "1 - 1,234 / 2,345 = 47.4%"."""
    if value is None:
        return None
    return f"1 - {count(spent)} / {count(yardstick)} = {percent(value)}"


def _filters_ratios(totals: RunTotals) -> str:
    """ "2.3x the rollouts of uniform GRPO, 0.47x those of dynamic sampling" (whichever exist)."""
    parts = []
    to_uniform = ratio(totals.rollouts_generated, totals.rollouts_uniform)
    if to_uniform is not None:
        parts.append(f"{times(to_uniform)} the rollouts of uniform GRPO")
    to_dynamic = ratio(totals.rollouts_generated_with_estimate, totals.rollouts_dynamic_sampling)
    if to_dynamic is not None:
        parts.append(f"{times(to_dynamic)} those of dynamic sampling")
    else:
        parts.append("no estimate of dynamic sampling's rollouts yet")
    return ", ".join(parts)


def why_negative(yardstick: str, totals: RunTotals, config: Mapping[str, Any],
                 members: Mapping[str, list[str]] | None = None) -> str | None:
    """One line saying why the family's saving is negative (None when it is not, or has no figure)."""
    members = families(config) if members is None else members
    family = FAMILIES[yardstick]
    value = _finite(getattr(totals, family.metric))
    if value is None or value >= 0 or yardstick == "uniform_budget":
        return None
    batch = int(setting(config, "batch_size"))
    if yardstick == "uniform":
        if "dynamic_sampling" in members:
            return f"refilled to {batch} mixed groups a step: {_filters_ratios(totals)}"
        to_uniform = ratio(totals.rollouts_generated, totals.rollouts_uniform) or 0.0
        return (f"{times(to_uniform)} the rollouts of uniform GRPO ({count(totals.rollouts_generated)} generated for "
                f"{count(totals.rollouts_uniform)}): probes, extra rollouts and replays count as generated")
    if yardstick == "dynamic_sampling":
        to_dynamic = ratio(totals.rollouts_generated_with_estimate, totals.rollouts_dynamic_sampling) or 0.0
        return (f"{times(to_dynamic)} the rollouts dynamic sampling would need for the same mixed groups "
                f"({count(totals.rollouts_generated_with_estimate)} generated for "
                f"{count(totals.rollouts_dynamic_sampling)}): the filters kept prompts less often mixed than "
                "uniform draws (the audit draws count as generated)")
    to_mixed = ratio(totals.backward_tokens, totals.backward_tokens_mixed) or 0.0
    return (f"{times(to_mixed)} the backward tokens of GRPO without zero-advantage groups "
            f"({count(totals.backward_tokens)} for {count(totals.backward_tokens_mixed)}): groups without a mixed "
            "outcome entered the update")


def what_counts_as_effective(members: Mapping[str, list[str]]) -> str:
    """What the effective share counts, for this run's methods."""
    base = "a rollout counts as effective when its advantage in the update is non-zero: the rollouts of mixed groups"
    if any(m == "RL-ZVP" for m in members.get("uniform_budget", [])):
        base += ", and those of the all-correct and all-wrong groups RL-ZVP shapes"
    else:
        base += "; all-correct and all-wrong groups have zero advantage and do not count"
    if "dynamic_sampling" in members or "backward_mixed" in members:
        base += "; groups dropped or left out of the update do not count either"
    return base


def _empty(yardstick: str, totals: RunTotals, config: Mapping[str, Any]) -> str:
    """What a tile without a figure will show, and when."""
    if yardstick == "dynamic_sampling":
        share = _finite(setting(config, "audit_share")) or 0.0
        if share <= 0:
            return ("no figure: this run's audit share is 0, so no uniform draws estimate dynamic sampling's "
                    "rollouts")
        when = "after the first steps" if not totals.steps else "not yet"
        return (f"{when}: appears once the filters' {share:.0%} audit draws hold {AUDIT_MIN_GROUPS} uniformly drawn "
                "groups, which estimate dynamic sampling's rollouts")
    if not totals.steps:
        return {"uniform": "appears after the first step: the share of uniform GRPO's rollouts not generated",
                "backward_mixed": ("appears after the first step: the share of backward tokens saved against GRPO "
                                   "without zero-advantage groups"),
                "uniform_budget": ("appears after the first step: the share of generated rollouts that carried a "
                                   "learning signal")}[yardstick]
    if yardstick == "backward_mixed":
        return "not yet: no mixed group has been collected, so there is nothing to compare the backward tokens with"
    return "not yet: no rollout generated"


def family_tile(yardstick: str, totals: RunTotals, config: Mapping[str, Any],
                members: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """One family's tile: heading, value (a percentage), the sentence in words, what it is measured
    against, the formula with the run's numbers, and why it is negative or when it will appear."""
    members = families(config) if members is None else members
    family = FAMILIES[yardstick]
    value = _finite(getattr(totals, family.metric))
    names = ", ".join(members.get(yardstick, [])) or "these methods"
    claims = yardstick != "uniform_budget"
    if yardstick == "uniform":
        worked = _worked(totals.rollouts_generated, totals.rollouts_uniform, value)
    elif yardstick == "dynamic_sampling":
        worked = _worked(totals.rollouts_generated_with_estimate, totals.rollouts_dynamic_sampling, value)
    elif yardstick == "backward_mixed":
        worked = _worked(totals.backward_tokens, totals.backward_tokens_mixed, value)
    else:
        worked = (None if value is None else
                  f"{count(totals.rollouts_effective)} / {count(totals.rollouts_generated)} = {percent(value)}")
    if claims:
        sentence = saving_sentence(value, family.unit, family.short)
    else:
        spent = ratio(totals.rollouts_generated, totals.rollouts_uniform)
        sentence = None if value is None else (
            f"{percent(value)} of generated rollouts carried a learning signal"
            + (f", at {percent(spent, 0)} of uniform GRPO's rollouts" if spent is not None else ""))
    return {
        "yardstick": yardstick, "label": family.title.format(methods=names), "methods": members.get(yardstick, []),
        "element": family.element, "series": family.series, "saving": claims,
        "value": value, "shown": percent(value), "sentence": sentence,
        "empty": None if value is not None else _empty(yardstick, totals, config),
        "against": YARDSTICKS[yardstick] if claims else (
            "no saving claimed: " + YARDSTICKS[yardstick].removeprefix("none: ")),
        "formula": FORMULAS[family.metric], "worked": worked,
        "counts": what_counts_as_effective(members) if not claims else None,
        "why": why_negative(yardstick, totals, config, members),
    }


def effective_tile(totals: RunTotals, config: Mapping[str, Any],
                   members: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The effective share of generated rollouts, with what counts as effective."""
    members = families(config) if members is None else members
    value = _finite(totals.effective_share_of_generated)
    return {
        "element": "tile-effective", "value": value, "shown": percent(value),
        "sentence": None if value is None else f"{percent(value)} of generated rollouts carried a learning signal",
        "empty": None if value is not None else _empty("uniform_budget", totals, config),
        "formula": FORMULAS["effective_share_of_generated"], "counts": what_counts_as_effective(members),
        "worked": None if value is None else (
            f"{count(totals.rollouts_effective)} / {count(totals.rollouts_generated)} = {percent(value)}"),
    }


def device_tile(totals: RunTotals) -> dict[str, Any]:
    """Device-hours used, and as a percentage against what uniform GRPO would use for the same steps
    (the control plane's estimate: each step's rollouts priced at uniform GRPO's B x N)."""
    value = _finite(saving_of(totals.device_seconds, totals.uniform_device_seconds))
    hours = abs(totals.uniform_device_hours - totals.device_hours)
    sentence = saving_sentence(value, "device-hours", "uniform GRPO would use")
    return {
        "element": "tile-hours", "value": value, "shown": f"{totals.device_hours:.4f}",
        "sentence": None if sentence is None else f"{sentence} ({hours:.4f} h)",
        "empty": None if value is not None else (
            "appears after the first step: device-hours against what uniform GRPO would use"
            if not totals.steps else "no estimate yet of uniform GRPO's device time"),
        "formula": "1 - device-seconds used / device-seconds uniform GRPO would use for the same steps",
        "worked": None if value is None else (
            f"1 - {totals.device_seconds:,.1f} / {totals.uniform_device_seconds:,.1f} = {percent(value)}"),
    }


def savings_tiles(totals: RunTotals, config: Mapping[str, Any]) -> dict[str, Any]:
    """The run page's savings: one tile per family present (uniform GRPO first), the effective
    share's own tile when no equal-budget family shows it, and the run's headline."""
    members = families(config)
    tiles = [family_tile(y, totals, config, members) for y in members]
    return {"tiles": tiles,
            "effective": None if "uniform_budget" in members else effective_tile(totals, config, members),
            "device": device_tile(totals), "headline": headline(totals, config, members)}


# The figure that speaks for a run, by family: what its filters claim first, then LZE's
# backward saving, then rollouts against uniform GRPO (every run has that one).
HEADLINE_ORDER = ("dynamic_sampling", "backward_mixed", "uniform")


def headline(totals: RunTotals, config: Mapping[str, Any],
             members: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """A run's headline saving, for the runs list: {value, percent, yardstick (in words),
    sentence, why, empty}. The family the run's methods claim, when it has a figure; rollouts
    against uniform GRPO otherwise. ``why`` is one line when the figure is negative."""
    members = families(config) if members is None else members
    present = [y for y in HEADLINE_ORDER if y in members]
    chosen = next((y for y in present if _finite(getattr(totals, FAMILIES[y].metric)) is not None), "uniform")
    tile = family_tile(chosen, totals, config, members)
    return {"yardstick": chosen, "value": tile["value"], "percent": tile["shown"],
            "against": FAMILIES[chosen].short, "sentence": tile["sentence"], "why": tile["why"],
            "empty": tile["empty"], "formula": tile["formula"], "worked": tile["worked"]}


def run_headline(totals: RunTotals, config: Mapping[str, Any]) -> dict[str, Any]:
    """The runs list's savings cell for a run: ``headline`` of its totals
    (controlplane.runs.selectors.runs_totals) and its stored config."""
    return headline(totals, config)
