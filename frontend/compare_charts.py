"""The compare page's data, shaped apart from reading and drawing (as ``frontend.charts``).

- ``metric_catalog``: every per-step metric a run may be compared on, named in words as the
  run page names it (``charts.LEGENDS``, the method panels' labels), grouped for the page's
  select: the step summary's columns, its seconds by phase, the optimizer's figures, the
  selectors' metrics, and a few running totals.
- ``metric_overlay``: one metric of each run against the step; a step a run did not record
  is a gap, never a line drawn across it.
- ``accuracy_axes``: each run's held-out evaluations against three cumulative x axes
  (rollouts generated, device-hours, FLOPs).
- ``config_diff``: the runs' configs flattened to dotted keys, the keys whose values differ.

FLOPs are the engines' per-step estimate (``StepSummary.flops_estimate``,
``workers.selection.accounting.StepAccounting.flops_estimate``): ``FLOPS_FORMULA`` below, with
P the policy's parameters as the engine counted them. The control plane stores P nowhere;
``parameters_from`` reads it back from a run's FLOPs and token counts, for the page to show.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frontend.charts import LEGENDS, number, ratio, words
from workers.selection.accounting import rollout_savings
from workers.selection.registry import REGISTRY

MAX_RUNS = 8  # one colour each on the charts (compare.js's palette)
DEFAULT_METRIC = "reward_mean"

# 2P per token through the policy forward only, 6P per token through forward and backward.
GENERATE_FLOPS_PER_PARAMETER, UPDATE_FLOPS_PER_PARAMETER = 2.0, 6.0
FORWARD_TOKENS = ("tokens_generated", "prompt_tokens_generated", "forward_tokens_extra")
UPDATE_TOKENS = ("backward_tokens", "backward_prompt_tokens")
FLOPS_FORMULA = ("FLOPs per step ≈ 2 × P × (response tokens generated + prompt tokens prefilled for them + prompt "
                 "tokens read for selection) + 6 × P × (response and prompt tokens in the policy update), with P the "
                 "model's parameters as the engine counted them; the reward is rule-based and costs no model FLOPs")


@dataclass(frozen=True)
class Metric:
    name: str  # the select's value, kept in the URL: a step-summary column, seconds.<phase>, ...
    label: str  # in words, as the run page says it
    group: str  # the select's option group
    unit: str  # "count", "share", "tokens", "seconds", "device-hours", "FLOPs" or "value": the y axis

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "label": self.label, "group": self.group, "unit": self.unit}


ROLLOUTS, SAVINGS, GROUPS, TOKENS, COMPUTE, TRAINING = (
    "Rollouts", "Savings", "Groups", "Tokens", "Compute and time", "Rewards and training")
PHASES_GROUP, METHODS_GROUP = "Seconds per phase", "Method metrics"

# The step summary's numeric fields (and a few running totals), in the select's order.
STEP_METRICS: tuple[Metric, ...] = (
    Metric("rollouts_generated", LEGENDS["rollouts_generated"], ROLLOUTS, "count"),
    Metric("rollouts_uniform", LEGENDS["rollouts_uniform"], ROLLOUTS, "count"),
    Metric("rollouts_effective", "rollouts with a learning signal this step", ROLLOUTS, "count"),
    Metric("rollouts_trained", "rollouts trained on this step", ROLLOUTS, "count"),
    Metric("rollouts_dynamic_sampling", "rollouts dynamic sampling would generate this step (estimate)",
           ROLLOUTS, "count"),
    Metric("rollouts_generated_total", LEGENDS["rollouts_generated_total"], ROLLOUTS, "count"),
    Metric("rollout_savings", LEGENDS["rollout_savings"], SAVINGS, "share"),
    Metric("rollout_savings_total", LEGENDS["rollout_savings_total"], SAVINGS, "share"),
    Metric("rollout_savings_vs_dynamic_sampling", "rollout savings vs dynamic sampling this step", SAVINGS, "share"),
    Metric("backward_savings_vs_mixed", "backward savings vs GRPO without zero-advantage groups this step",
           SAVINGS, "share"),
    Metric("effective_share_of_generated", LEGENDS["effective_share_of_generated"], SAVINGS, "share"),
    Metric("mixed_rate_uniform", "share of uniformly drawn groups with mixed outcomes (estimate)", SAVINGS, "share"),
    Metric("groups_generated", "groups generated this step", GROUPS, "count"),
    Metric("groups_trained", "groups trained on this step", GROUPS, "count"),
    Metric("groups_all_correct", "all-correct groups this step", GROUPS, "count"),
    Metric("groups_all_wrong", "all-wrong groups this step", GROUPS, "count"),
    Metric("all_correct_share", LEGENDS["all_correct_share"], GROUPS, "share"),
    Metric("all_wrong_share", LEGENDS["all_wrong_share"], GROUPS, "share"),
    Metric("groups_uniform", "uniformly drawn groups this step", GROUPS, "count"),
    Metric("groups_uniform_mixed", "uniformly drawn groups with mixed outcomes this step", GROUPS, "count"),
    Metric("groups_mixed_collected", "mixed groups collected for the update this step", GROUPS, "count"),
    Metric("tokens_generated", "response tokens generated this step", TOKENS, "tokens"),
    Metric("prompt_tokens_generated", "prompt tokens prefilled for them this step", TOKENS, "tokens"),
    Metric("forward_tokens_extra", "prompt tokens read for selection this step", TOKENS, "tokens"),
    Metric("backward_tokens", "response tokens in the update this step", TOKENS, "tokens"),
    Metric("backward_prompt_tokens", "prompt tokens in the update this step", TOKENS, "tokens"),
    Metric("backward_tokens_mixed", "response tokens of the mixed groups this step", TOKENS, "tokens"),
    Metric("device_seconds", "device-seconds this step", COMPUTE, "seconds"),
    Metric("uniform_device_seconds", "device-seconds uniform GRPO would use this step", COMPUTE, "seconds"),
    Metric("device_hours_total", LEGENDS["device_hours_total"], COMPUTE, "device-hours"),
    Metric("flops_estimate", "FLOPs this step (estimate)", COMPUTE, "FLOPs"),
    Metric("flops_uniform_estimate", "FLOPs uniform GRPO would use this step (estimate)", COMPUTE, "FLOPs"),
    Metric("flops_total", "FLOPs (cumulative, estimate)", COMPUTE, "FLOPs"),
    Metric("reward_mean", LEGENDS["reward_mean"], TRAINING, "value"),
    Metric("loss", "loss this step", TRAINING, "value"),
    Metric("train.response_length_mean", "mean response length this step (tokens)", TRAINING, "tokens"),
    Metric("train.entropy_mean", "mean policy entropy in the update this step", TRAINING, "value"),
    Metric("train.grad_norm", "gradient norm this step", TRAINING, "value"),
    Metric("train.clip_fraction", "clipped share of the update this step", TRAINING, "share"),
    Metric("train.approx_kl", "approximate KL to the previous policy this step", TRAINING, "value"),
    Metric("epoch", "epoch (passes over the training prompts)", TRAINING, "count"),
)
STEP_METRIC = {m.name: m for m in STEP_METRICS}
# Figures computed here from the columns rather than read from one.
DERIVED = {"rollouts_generated_total", "rollout_savings_total", "device_hours_total", "flops_total",
           "all_correct_share", "all_wrong_share"}
# The JSON columns of a step summary a metric name may reach into: "<column>.<key>".
JSON_COLUMNS = {"seconds": PHASES_GROUP, "metrics": METHODS_GROUP, "train": TRAINING}
KEY_MAX = 100  # longest key of a JSON column a metric may name


def method_metric_labels() -> dict[str, str]:
    """The selectors' metrics as the run page's method panels name them: {metric: "HIVE: kept by stage 1"}."""
    out: dict[str, str] = {}
    for cls in REGISTRY.values():
        for panel in getattr(cls, "panels", ()):
            for s in panel.series:
                if s.metric and not s.per:
                    out.setdefault(s.metric, f"{cls.label}: {s.label}")
    return out


def method_metric_label(key: str, known: Mapping[str, str] | None = None) -> str:
    """A selector metric's label: its panel's, else the key in words ("lze/energy_mean" -> "lze: energy mean")."""
    known = method_metric_labels() if known is None else known
    if key in known:
        return known[key]
    head, _, tail = key.partition("/")
    method = REGISTRY.get(head)
    return f"{method.label if method else words(head)}: {words(tail)}" if tail else words(key)


def metric_catalog(phases: Iterable[str] = (), method_metrics: Iterable[str] = ()) -> list[Metric]:
    """Every metric the chosen runs can be compared on: the step summary's fields, then the
    seconds of each phase in ``phases`` and each selector metric in ``method_metrics`` (those
    the runs' engines and methods report, and those their steps hold)."""
    known = method_metric_labels()
    out = list(STEP_METRICS)
    out += [Metric(f"seconds.{p}", f"seconds in the {words(p)} phase this step", PHASES_GROUP, "seconds")
            for p in dict.fromkeys(phases)]
    out += [Metric(f"metrics.{k}", method_metric_label(k, known), METHODS_GROUP, "value")
            for k in sorted(dict.fromkeys(method_metrics))]
    return out


def grouped(catalog: Sequence[Metric]) -> list[dict[str, Any]]:
    """The catalog as the select's option groups, in order: [{group, metrics: [...]}]."""
    groups: dict[str, list[dict[str, str]]] = {}
    for m in catalog:
        groups.setdefault(m.group, []).append(m.as_dict())
    return [{"group": g, "metrics": ms} for g, ms in groups.items()]


# -- one metric against the step ------------------------------------------------------------------


def step_flops(row: Mapping[str, Any], parameters: float) -> float:
    """``FLOPS_FORMULA`` for one step's token counts and ``parameters`` (P)."""
    forward = sum(int(row.get(t) or 0) for t in FORWARD_TOKENS)
    update = sum(int(row.get(t) or 0) for t in UPDATE_TOKENS)
    return GENERATE_FLOPS_PER_PARAMETER * parameters * forward + UPDATE_FLOPS_PER_PARAMETER * parameters * update


def recorded_flops(row: Mapping[str, Any]) -> float | None:
    """A step's recorded FLOPs estimate; None where the engine gave none (0 FLOPs for a step
    that moved tokens: it counted no parameters), so no total is made up from it."""
    flops = number(row.get("flops_estimate"))
    if flops is None or (flops <= 0 and step_flops(row, 1.0) > 0):
        return None
    return flops


def parameters_from(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """P as the engine counted it, read back from its FLOPs over its steps' tokens
    (``FLOPS_FORMULA`` solved for P); None without a step that has both."""
    flops = per_parameter = 0.0
    for row in rows:
        f = recorded_flops(row)
        if f is not None and f > 0:
            flops += f
            per_parameter += step_flops(row, 1.0)
    return flops / per_parameter if per_parameter > 0 else None


def _value(metric: str, row: Mapping[str, Any]) -> float | None:
    if "." in metric and metric.split(".", 1)[0] in JSON_COLUMNS:
        column, key = metric.split(".", 1)
        return number((row.get(column) or {}).get(key))
    if metric == "all_correct_share":
        return ratio(number(row.get("groups_all_correct")), number(row.get("groups_generated")))
    if metric == "all_wrong_share":
        return ratio(number(row.get("groups_all_wrong")), number(row.get("groups_generated")))
    return number(row.get(metric))


def metric_overlay(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """One run's ``metric`` against the step: {step, value, recorded}. ``rows`` are its step
    summaries in step order. Where steps are missing (a gap in the record) one ``None`` point
    at the first missing step breaks the line; a step without the metric is ``None`` too.
    Running totals sum the steps recorded; the FLOPs total stops (None) at the first step
    without a FLOPs estimate. ``recorded``: how many steps have a value."""
    out: dict[str, Any] = {"step": [], "value": []}
    generated = uniform = 0
    device = flops = 0.0
    flops_known = True
    previous: int | None = None
    for row in rows:
        step = int(row["step"])
        if previous is not None and step > previous + 1:
            out["step"].append(previous + 1)
            out["value"].append(None)
        previous = step
        generated += int(row.get("rollouts_generated") or 0)
        uniform += int(row.get("rollouts_uniform") or 0)
        device += number(row.get("device_seconds")) or 0.0
        step_f = recorded_flops(row)
        flops_known = flops_known and step_f is not None
        flops += step_f or 0.0
        if metric == "rollouts_generated_total":
            value: float | None = generated
        elif metric == "rollout_savings_total":
            value = rollout_savings(generated, uniform)
        elif metric == "device_hours_total":
            value = device / 3600.0
        elif metric == "flops_total":
            value = flops if flops_known else None
        else:
            value = _value(metric, row)
        out["step"].append(step)
        out["value"].append(value)
    out["recorded"] = sum(v is not None for v in out["value"])
    return out


# -- accuracy against three cumulative axes -------------------------------------------------------------

ACCURACY_AXES = {
    "rollouts": "rollouts generated (cumulative, before the evaluation's step)",
    "device_hours": "device-hours (cumulative, before the evaluation's step)",
    "flops": "FLOPs (cumulative estimate, before the evaluation's step)",
}
# The select's words for each (the axis title says the rest).
ACCURACY_AXIS_CHOICES = {"rollouts": "rollouts generated", "device_hours": "device-hours",
                         "flops": "FLOPs (estimate)"}
DEFAULT_AXIS = "rollouts"


def cumulative_flops(steps: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float | None]]:
    """(step, FLOPs through that step) over the recorded steps in step order; None from the
    first step without a FLOPs estimate on."""
    out_steps: list[int] = []
    totals: list[float | None] = []
    total: float | None = 0.0
    for row in steps:
        f = recorded_flops(row)
        total = None if total is None or f is None else total + f
        out_steps.append(int(row["step"]))
        totals.append(total)
    return out_steps, totals


def accuracy_axes(evaluations: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A run's held-out evaluations (rows in step order) with what the run had spent before
    each, on every x axis of the accuracy chart: rollouts generated and device-hours as the
    evaluation recorded them (the totals of the steps before its step), FLOPs summed here
    the same way from ``steps`` (step summaries in step order; None where a step before it
    has no FLOPs estimate)."""
    flops_steps, flops_totals = cumulative_flops(steps)
    out: dict[str, Any] = {"step": [], "pass_at_1": [], "pass_at_k": [], "k": [], "rollouts": [],
                           "device_hours": [], "flops": []}
    for row in evaluations:
        step = int(row["step"])
        before = bisect_left(flops_steps, step)  # recorded steps < step
        out["step"].append(step)
        out["pass_at_1"].append(number(row["pass_at_1"]))
        out["pass_at_k"].append(number(row["pass_at_k"]))
        out["k"].append(int(row["k"]))
        out["rollouts"].append(int(row["rollouts_generated_total"]))
        out["device_hours"].append((number(row["device_seconds_total"]) or 0.0) / 3600.0)
        out["flops"].append(flops_totals[before - 1] if before else 0.0)
    return out


def flops_basis(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a run's FLOPs axis rests on, for the page: P read back from its record, its
    token counts, its FLOPs total, and whether it is partial (prompt tokens not reported,
    steps without an estimate)."""
    forward = sum(int(r.get(t) or 0) for r in steps for t in FORWARD_TOKENS)
    update = sum(int(r.get(t) or 0) for r in steps for t in UPDATE_TOKENS)
    prompt = sum(int(r.get("prompt_tokens_generated") or 0) for r in steps)
    missing = sum(recorded_flops(r) is None for r in steps)
    _, totals = cumulative_flops(steps)
    parameters, flops = parameters_from(steps), totals[-1] if totals else 0.0
    return {"parameters": parameters, "parameters_text": large(parameters), "flops_text": large(flops),
            "forward_tokens": forward, "update_tokens": update,
            "flops_total": flops, "steps": len(steps), "steps_without_flops": missing,
            "no_prompt_tokens": bool(steps) and prompt == 0 and forward > 0}


def large(value: float | None) -> str:
    """A large count as a person reads it: "342,048", "1.23 × 10¹²" past a billion; "–" for none."""
    if value is None:
        return "–"
    if abs(value) < 1e9:
        return f"{round(value):,}"
    exponent = math.floor(math.log10(abs(value)))
    return f"{value / 10 ** exponent:.2f} × 10{str(exponent).translate(SUPERSCRIPTS)}"


SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# -- config diff --------------------------------------------------------------------------------------------

MISSING = object()


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config as {dotted key: value}: nested mappings become dotted keys
    ("selectors.hive.threshold"); an empty mapping and any other value (lists included) is
    a value as it is."""
    if not isinstance(config, Mapping) or (prefix and not config):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def written(value: Any) -> str:
    """A config value as written: text as it is, anything else as JSON writes it (true, null, 0.5, [1, 2])."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _same_key(value: Any) -> Any:
    """What two values compare by: 1 and 1.0 are the same number, true is not 1."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", float(value)) if math.isfinite(value) else ("number", str(value))
    return ("json", json.dumps(value, sort_keys=True))


def config_diff(configs: Sequence[Any]) -> list[dict[str, Any]]:
    """Every dotted key of the runs' configs, in key order: {key, values, differs}. ``values``
    holds each run's value as written, None where that run's config lacks the key; a key
    differs when its values (a missing key counting as one) are not all the same."""
    flat = [flatten_config(c or {}) for c in configs]
    keys = sorted({k for f in flat for k in f})
    rows = []
    for key in keys:
        raw = [f.get(key, MISSING) for f in flat]
        seen = {("missing",) if v is MISSING else _same_key(v) for v in raw}
        rows.append({"key": key, "values": [None if v is MISSING else written(v) for v in raw],
                     "differs": len(seen) > 1})
    return rows
