"""Chart data: the series every dashboard chart draws, computed apart from drawing.

Each function takes plain rows (dicts or tuples read by ``frontend.selectors``) and returns
a JSON-ready dict of columns. No Django, no Plotly here: the tests check the series, and
the JS modules in ``static/frontend/`` only draw them.

Conventions:
- One name per metric, as the trainer and the database call it (``rollouts_generated``,
  ``rollout_savings``, ``effective_share_of_generated``, ...). Running totals carry a
  ``_total`` suffix, as ``Evaluation.rollouts_generated_total`` does, and their legend says
  "(cumulative)" (``LEGENDS``: one legend per column, sent to the page).
- A missing or non-finite measurement is an explicit ``None`` (JSON ``null``, a gap in
  the chart), never left out: every column of a series has one entry per x value.
- Device time is seconds per step and hours in totals, as in the API.
- Names have one home each, read here and sent to the page: methods, their order, labels
  and panels from the selection registry; buckets from ``workers.selection.ledger.Bucket``;
  phases from ``workers.selection.accounting.PHASES``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workers.engines.verl.report import STEP_PHASES as VERL_STEP_PHASES
from workers.selection.accounting import (
    PHASES,
    RunTotals,
    backward_savings_vs_mixed,
    effective_share_of_generated,
    rollout_savings,
    rollout_savings_vs_dynamic_sampling,
)
from workers.selection.decisions import REASONS, Action
from workers.selection.ledger import Bucket
from workers.selection.panels import Panel, Series
from workers.selection.registry import REGISTRY

# The phases each engine reports (the pipeline's four; verl adds its checkpoint and the rest
# of its step timer).
ENGINE_PHASES = {"verl": VERL_STEP_PHASES}
BUCKETS = Bucket.NAMES
# The colour of each bucket, in Bucket.NAMES order (strict: a new bucket needs its colour).
BUCKET_COLORS = dict(zip(BUCKETS, ("#9ca3af", "#16a34a", "#f59e0b", "#dc2626", "#6b7280", "#a8a29e"), strict=True))
PHASE_COLORS = ("#a855f7", "#2563eb", "#f59e0b", "#10b981", "#64748b", "#cbd5e1")  # by position in a run's phases

# The legend of each step_series column, in words. A running total says "(cumulative)";
# a per-step figure says "per step" or "this step" where the chart mixes both.
LEGENDS = {
    "rollouts_generated": "rollouts generated this step",
    "rollouts_uniform": "rollouts uniform GRPO would generate this step",
    "rollouts_generated_total": "rollouts generated (cumulative)",
    "rollouts_uniform_total": "rollouts uniform GRPO would generate (cumulative)",
    "rollout_savings": "rollout savings vs uniform GRPO this step",
    "rollout_savings_total": "rollout savings vs uniform GRPO (cumulative)",
    "rollout_savings_vs_dynamic_sampling_total": "rollout savings vs dynamic sampling (cumulative)",
    "backward_savings_vs_mixed_total": "backward savings vs GRPO without zero-advantage groups (cumulative)",
    "effective_share_of_generated": "effective share of generated rollouts this step",
    "effective_share_of_generated_total": "effective share of generated rollouts (cumulative)",
    "all_correct_share": "all-correct groups (share this step)",
    "all_wrong_share": "all-wrong groups (share this step)",
    "reward_mean": "mean reward this step",
    "device_hours_total": "device-hours (cumulative)",
    "uniform_device_hours_total": "device-hours uniform GRPO would use (cumulative)",
}


def words(name: str) -> str:
    """A snake_case name as words ("too_easy" -> "too easy"), for legends of names that have no label."""
    return name.replace("_", " ")


def number(value: Any) -> float | None:
    """A finite float, or None for None, NaN, infinity and the strings "NaN"/"Infinity"."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def method_labels(names: Iterable[str] | None = None) -> list[dict[str, str]]:
    """[{name, label}] of the methods named (every registered one without ``names``), in the
    selection registry's order, with its labels."""
    chosen = set(REGISTRY if names is None else names)
    return [{"name": name, "label": cls.label} for name, cls in REGISTRY.items() if name in chosen]


# -- method panels, as each method declares them (workers/selection/panels.py) ---------------------------


def series_column(series: Series) -> str:
    """The ``metrics`` column of step_series a metric series draws: the metric as the selector
    logs it, or the share ``metric / per`` (computed here) when the series names a denominator."""
    return f"{series.metric} / {series.per}" if series.per else series.metric


def decision_column(method: str, reason: str) -> str:
    """The column of the actions endpoint (``method.action``) that counts a decision reason per step."""
    if reason not in REASONS:
        raise ValueError(f"a panel of {method} counts the unknown decision reason {reason!r}: name one of "
                         "workers.selection.decisions.REASONS")
    return f"{method}.{REASONS[reason][0].value}"


def method_metrics(methods: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Every metric column the panels of ``methods`` draw: {column: (metric, per)}, ``per``
    empty for a metric drawn as logged. Methods not in the registry draw nothing."""
    out: dict[str, tuple[str, str]] = {}
    for name in methods:
        for panel in getattr(REGISTRY.get(name), "panels", ()):
            for s in panel.series:
                if s.metric:
                    out[series_column(s)] = (s.metric, s.per)
    return out


def panel_config(method: str, panel: Panel) -> dict[str, Any]:
    """One panel as the run page lays it out (element id, caption, width) and run.js draws it:
    each series with its legend, the column it reads (step metrics or decision counts), its
    style and axis; units give the axes' formats."""
    return {
        "id": f"chart-{method}-{panel.key}", "method": method, "key": panel.key, "title": panel.title,
        "view": panel.view, "wide": panel.wide, "unit": panel.unit, "right_unit": panel.right_unit,
        "series": [{"label": s.label, "source": "decision" if s.decision else "metric",
                    "column": decision_column(method, s.decision) if s.decision else series_column(s),
                    "style": s.style, "axis": s.axis} for s in panel.series],
    }


def method_panels(methods: Iterable[str]) -> list[dict[str, Any]]:
    """The run page's method sections: each of ``methods`` that declares panels, in the
    registry's order, with its label and its panels (``panel_config``)."""
    return [{**m, "panels": [panel_config(m["name"], p) for p in REGISTRY[m["name"]].panels]}
            for m in method_labels(methods) if REGISTRY[m["name"]].panels]


def page_names(engine: str) -> dict[str, Any]:
    """What the run page's JS draws by name, from the names' homes: the buckets (label and
    colour, in Bucket order), the engine's phases (label and colour) and the legend of
    every step_series column."""
    return {
        "buckets": [{"name": b, "label": words(b), "color": BUCKET_COLORS[b]} for b in BUCKETS],
        "phases": [{"name": p, "label": words(p), "color": PHASE_COLORS[i % len(PHASE_COLORS)]}
                   for i, p in enumerate(phases_of(engine))],
        "legends": LEGENDS,
    }


# -- empty charts: what each will show, and when ------------------------------------------------------------


def evaluation_note(eval_every: int) -> str:
    """When held-out accuracy first shows, for a run evaluating every ``eval_every`` steps (0: at the end)."""
    if eval_every <= 0:
        return "Held-out accuracy appears after the evaluation at the end of the run"
    return f"Held-out accuracy appears after the first evaluation, every {eval_every:,} step{'s' * (eval_every != 1)}"


def chart_notes(config: Mapping[str, Any], panels: Sequence[Mapping[str, Any]] = ()) -> dict[str, str]:
    """What each chart of the run page will show and when, by element id: drawn in place of an
    empty chart (plots.js ``emptyNotes``). ``panels`` are the method panels (``method_panels``)."""
    after = "after the first step"
    eval_every = config.get("eval_every") if isinstance(config, Mapping) else None
    evaluation = evaluation_note(10 if eval_every is None else int(eval_every))
    notes = {
        "chart-rollouts": f"Rollouts generated, beside what uniform GRPO would generate, appear {after}",
        "chart-savings": f"Savings against each yardstick appear {after} (against dynamic sampling once "
                         "32 uniformly drawn groups estimate it)",
        "chart-shares": f"Shares of effective rollouts and of all-correct and all-wrong groups appear {after}",
        "chart-acc-rollouts": evaluation,
        "chart-acc-hours": evaluation,
        "chart-reward": f"Mean reward per step appears {after}",
        "chart-seconds": f"Seconds per phase appear {after}",
        "chart-edge": "Prompts appear here once a step has rolled them out",
        "chart-heatmap": f"Pass rates by prompt and step appear {after}",
        "chart-actions": "Decisions per step appear after the first step in which a method selects, skips, "
                         "allocates or shapes",
    }
    for panel in (p for method in panels for p in method.get("panels", ())):
        notes[panel["id"]] = f"{panel['title']}: appears {after}"
    return notes


# -- rollout savings ----------------------------------------------------------------------------


# The base of a run's first page of steps: nothing spent yet.
NO_STEPS = RunTotals()


def phases_of(engine: str) -> tuple[str, ...]:
    return ENGINE_PHASES.get(engine, PHASES)


def step_series(rows: Sequence[Mapping[str, Any]], base: RunTotals = NO_STEPS,
                methods: Sequence[str] = (), phases: Sequence[str] = PHASES) -> dict[str, Any]:
    """Per-step and running figures of the "Rollout savings" charts and the method panels.

    ``rows`` are step summaries in step order (after the cursor); ``base`` holds the totals
    of the steps before them, so a page continues the running sums of the previous one.
    """
    out: dict[str, Any] = {name: [] for name in (
        "step", "rollouts_generated", "rollouts_uniform", "rollouts_generated_total", "rollouts_uniform_total",
        "rollout_savings", "rollout_savings_total", "effective_share_of_generated",
        "effective_share_of_generated_total", "rollout_savings_vs_dynamic_sampling_total",
        "backward_savings_vs_mixed_total", "all_correct_share",
        "all_wrong_share", "reward_mean", "device_hours_total", "uniform_device_hours_total")}
    out["seconds"] = {phase: [] for phase in phases}
    metric_columns = method_metrics(methods)
    out["metrics"] = {column: [] for column in metric_columns}
    generated, uniform, effective = base.rollouts_generated, base.rollouts_uniform, base.rollouts_effective
    device, uniform_device = base.device_seconds, base.uniform_device_seconds
    estimated, dynamic = base.rollouts_generated_with_estimate, base.rollouts_dynamic_sampling
    backward, backward_mixed = base.backward_tokens, base.backward_tokens_mixed
    for row in rows:
        dynamic_step = number(row.get("rollouts_dynamic_sampling"))
        if dynamic_step is not None and dynamic_step > 0:  # a step without an estimate counts for neither side
            estimated += int(row["rollouts_generated"])
            dynamic += dynamic_step
        backward += int(row.get("backward_tokens") or 0)
        backward_mixed += int(row.get("backward_tokens_mixed") or 0)
        generated += int(row["rollouts_generated"])
        uniform += int(row["rollouts_uniform"])
        effective += int(row.get("rollouts_effective") or 0)
        device += number(row.get("device_seconds")) or 0.0
        uniform_device += number(row.get("uniform_device_seconds")) or 0.0
        groups = int(row.get("groups_generated") or 0)
        out["step"].append(int(row["step"]))
        out["rollouts_generated"].append(int(row["rollouts_generated"]))
        out["rollouts_uniform"].append(int(row["rollouts_uniform"]))
        out["rollouts_generated_total"].append(generated)
        out["rollouts_uniform_total"].append(uniform)
        out["rollout_savings"].append(number(row.get("rollout_savings")))
        out["rollout_savings_total"].append(rollout_savings(generated, uniform))
        out["rollout_savings_vs_dynamic_sampling_total"].append(rollout_savings_vs_dynamic_sampling(estimated, dynamic))
        out["backward_savings_vs_mixed_total"].append(backward_savings_vs_mixed(backward, backward_mixed))
        out["effective_share_of_generated"].append(number(row.get("effective_share_of_generated")))
        out["effective_share_of_generated_total"].append(effective_share_of_generated(effective, generated))
        out["all_correct_share"].append(ratio(row.get("groups_all_correct"), groups))
        out["all_wrong_share"].append(ratio(row.get("groups_all_wrong"), groups))
        out["reward_mean"].append(number(row.get("reward_mean")))
        out["device_hours_total"].append(device / 3600.0)
        out["uniform_device_hours_total"].append(uniform_device / 3600.0)
        seconds = row.get("seconds") or {}
        for phase in phases:
            out["seconds"][phase].append(number(seconds.get(phase)))
        metrics = row.get("metrics") or {}
        for column, (metric, per) in metric_columns.items():
            value = number(metrics.get(metric))
            out["metrics"][column].append(ratio(value, number(row.get(per))) if per else value)
    return out


# -- shares as the dashboard writes them (the savings tiles: frontend/savings.py) -----------------------


def percent(value: float | None, digits: int = 1) -> str:
    """A share as the dashboard writes it ("33.3%", "–" for none), as plots.js's pct does."""
    value = number(value)
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def accuracy_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Held-out Pass@1 and Pass@k against steps, rollouts generated and device-hours."""
    return {
        "step": [int(r["step"]) for r in rows],
        "rollouts_generated_total": [int(r["rollouts_generated_total"]) for r in rows],
        "device_hours_total": [(number(r["device_seconds_total"]) or 0.0) / 3600.0 for r in rows],
        "pass_at_1": [number(r["pass_at_1"]) for r in rows],
        "pass_at_k": [number(r["pass_at_k"]) for r in rows],
        "k": [int(r["k"]) for r in rows],
    }


def action_counts(rows: Iterable[tuple[int, str, str, int]]) -> dict[str, Any]:
    """Decisions per step by "method.action" from (step, method, action, count) rows.

    Every series has one entry per step of the page (0 where that step had none).
    """
    rows = list(rows)
    steps = sorted({int(r[0]) for r in rows})
    index = {step: i for i, step in enumerate(steps)}
    series: dict[str, list[int]] = {}
    for step, method, action, count in rows:
        column = series.setdefault(f"{method}.{action}", [0] * len(steps))
        column[index[int(step)]] += int(count)
    return {"step": steps, "counts": dict(sorted(series.items()))}


# -- method panels ----------------------------------------------------------------------------------


def hora_allocation(rows: Iterable[tuple[int, int, int, float]], max_successes: int | None = None) -> dict[str, Any]:
    """HORA's allocation by probe successes, per step, from (step, successes, prompts, extra_sum).

    ``mean_extra[s][i]`` is the mean number of extra rollouts given at step ``step[i]`` to
    prompts with ``successes[s]`` probe hits (None where no prompt had that many); ``prompts``
    counts them. Rows of one (step, successes) pair are summed. The successes axis runs
    0..``max_successes`` (the probe size n0) so that pages line up, or to the largest seen.
    """
    cells: dict[tuple[int, int], list[float]] = {}
    for step, successes, prompts, extra in rows:
        cell = cells.setdefault((int(step), int(successes)), [0, 0.0])
        cell[0] += int(prompts)
        cell[1] += float(extra)
    steps = sorted({s for s, _ in cells})
    top = max((h for _, h in cells), default=-1)
    hits = list(range(max(top, -1 if max_successes is None else max_successes) + 1))
    mean_extra = [[None if (s, h) not in cells else cells[(s, h)][1] / cells[(s, h)][0] for s in steps]
                  for h in hits]
    prompts = [[int(cells[(s, h)][0]) if (s, h) in cells else 0 for s in steps] for h in hits]
    return {"step": steps, "successes": hits, "mean_extra": mean_extra, "prompts": prompts}


def energy_histogram(values: Iterable[tuple[float | None, bool]], bins: int = 20) -> dict[str, Any]:
    """LZE energy distribution of one step's groups, selected (trained) against not.

    ``values`` are (energy, trained); missing energies (groups LZE did not score) are counted
    in ``missing``. Bin edges span the observed range (a single value gets a unit-wide bin).
    """
    pairs = [(number(e), bool(t)) for e, t in values]
    scored = [(e, t) for e, t in pairs if e is not None]
    missing = len(pairs) - len(scored)
    if not scored:
        return {"edges": [], "selected": [], "not_selected": [], "missing": missing}
    low = min(e for e, _ in scored)
    high = max(e for e, _ in scored)
    if high == low:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / bins
    edges = [low + i * width for i in range(bins + 1)]
    selected, not_selected = [0] * bins, [0] * bins
    for e, trained in scored:
        i = min(int((e - low) / width), bins - 1)
        (selected if trained else not_selected)[i] += 1
    return {"edges": edges, "selected": selected, "not_selected": not_selected, "missing": missing}


# -- learning edge ---------------------------------------------------------------------------------


def edge_map(points: Iterable[tuple[str, float | None, float | None, str]], total: int | None = None) -> dict[str, Any]:
    """Prompts over pass rate (x) and response entropy (y), one trace per bucket.

    ``points`` are (prompt_key, pass_rate, response_entropy, bucket). A point without a pass
    rate cannot be placed and is only counted; a missing entropy is drawn at y = None (Plotly
    leaves it out) and counted in ``no_entropy``.
    """
    traces = {b: {"x": [], "y": [], "key": []} for b in BUCKETS}
    counts = dict.fromkeys(BUCKETS, 0)
    shown = no_entropy = 0
    for key, pass_rate, entropy, bucket in points:
        bucket = bucket if bucket in traces else BUCKETS[Bucket.UNSEEN]
        counts[bucket] += 1
        x, y = number(pass_rate), number(entropy)
        if x is None:
            continue
        no_entropy += y is None
        traces[bucket]["x"].append(x)
        traces[bucket]["y"].append(y)
        traces[bucket]["key"].append(key)
        shown += 1
    return {"buckets": traces, "counts": counts, "shown": shown, "no_entropy": no_entropy,
            "total": sum(counts.values()) if total is None else total}


@dataclass(frozen=True)
class HeatmapLayout:
    """How steps fold into the heat map's columns: one column a step up to ``max_columns``,
    else bins of ``steps_per_column`` fixed by the planned steps, so columns never move as the
    run grows. (Its rows are prompts, ranked: ``heatmap_prompts``.)"""

    steps_planned: int
    max_columns: int = 200

    @property
    def steps_per_column(self) -> int:
        return max(1, math.ceil(self.steps_planned / self.max_columns))

    def complete_until(self, last_step: int, finished: bool) -> int:
        """The last step whose column is complete: a column is sent only once it is full
        (or the run has ended), so a poll never has to redraw a column it sent."""
        w = self.steps_per_column
        if finished or w == 1:
            return last_step
        return (last_step + 1) // w * w - 1


# -- the heat map by prompt: the prompts that matter, the rest one click away ------------------------------

HEATMAP_ORDERS = {
    "active": "most active (most observations)",
    "changed": "most changed (largest pass-rate change from first to last observation)",
}
HEATMAP_ROWS = 50  # prompts a heat map page shows


def heatmap_prompts(stats: Iterable[tuple[str, int, float | None, float | None]], *, order: str = "active",
                    offset: int = 0, limit: int = HEATMAP_ROWS, search: str = "") -> dict[str, Any]:
    """The heat map's rows: one page of prompts, ranked, from (key, observations, first pass
    rate, last pass rate) per prompt observed (in the window the caller read).

    - ``active``: most observations first;
    - ``changed``: largest |last - first| pass rate first; a prompt observed once (or with
      fewer than two pass rates) has no change and comes after every prompt that has one.
    Ties: more observations first, then the key in alphabetical order, so a page never
    reshuffles between two reads of the same data. ``search`` keeps the keys that contain it
    (case-insensitive) before paging. Returns the page's keys, each one's observations and
    change (last - first, None when there is none), and ``total``: the prompts that match.
    """
    if order not in HEATMAP_ORDERS:
        raise ValueError(f"order must be one of {', '.join(HEATMAP_ORDERS)}, got {order!r}")
    needle = search.casefold()
    rows = []
    for key, n, first, last in stats:
        if needle and needle not in key.casefold():
            continue
        first, last = number(first), number(last)
        change = last - first if int(n) >= 2 and first is not None and last is not None else None
        rows.append((key, int(n), change))
    if order == "active":
        rows.sort(key=lambda r: (-r[1], r[0]))
    else:
        rows.sort(key=lambda r: (r[2] is None, -abs(r[2]) if r[2] is not None else 0.0, -r[1], r[0]))
    offset, limit = max(0, offset), max(1, limit)
    page = rows[offset:offset + limit]
    return {"order": order, "order_label": HEATMAP_ORDERS[order], "offset": offset, "limit": limit,
            "total": len(rows), "rows": [r[0] for r in page], "row_observations": [r[1] for r in page],
            "row_change": [r[2] for r in page]}


def prompt_heatmap(cells: Iterable[tuple[str, int, float | None, int]], keys: Sequence[str],
                   steps_per_column: int, first_step: int, last_step: int) -> dict[str, Any]:
    """Pass rate by prompt (rows: ``keys`` in that order) and step column from (key, column,
    mean pass rate, observations), column = step // steps_per_column. Every column from the
    one of ``first_step`` to the one of ``last_step`` is there (none when last < first), so
    the cells keep their width; None (a gap) where a prompt was not observed in a column."""
    index = {key: i for i, key in enumerate(keys)}
    grid: dict[tuple[int, int], tuple[float | None, int]] = {}
    for key, column, mean, count in cells:
        if key in index:
            grid[(index[key], int(column))] = (number(mean), int(count))
    w = max(1, int(steps_per_column))
    columns = list(range(max(first_step, 0) // w, last_step // w + 1)) if last_step >= max(first_step, 0) else []
    z = [[grid[(r, c)][0] if (r, c) in grid else None for c in columns] for r in range(len(keys))]
    n = [[grid[(r, c)][1] if (r, c) in grid else 0 for c in columns] for r in range(len(keys))]
    return {"step": [c * w for c in columns], "steps_per_column": w, "z": z, "observations": n}


# -- the prompt page --------------------------------------------------------------------------------


def prompt_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One prompt's observations over steps: pass rate, entropies, group size, bucket."""
    return {
        "step": [int(r["step"]) for r in rows],
        "pass_rate": [number(r["pass_rate"]) for r in rows],
        "response_entropy": [number(r.get("response_entropy")) for r in rows],
        "prompt_entropy": [number(r.get("prompt_entropy")) for r in rows],
        "group_size": [int(r["group_size"]) for r in rows],
        "bucket": [r["bucket"] for r in rows],
    }


def bucket_changes(observations: Iterable[tuple[int, str]], decisions: Iterable[tuple[int, str]] = ()) -> list[dict]:
    """Where a prompt moved between learning-edge buckets: [{step, from, to}].

    ``observations`` are (step, bucket); ``decisions`` (step, action) add the moves that
    happen without an observation: pruned (into the pruned pool) and restored (back to
    the edge). Same-step events: the observation comes last (it is the step's outcome).
    """
    pruned, edge, unseen = (BUCKETS[i] for i in (Bucket.PRUNED, Bucket.EDGE, Bucket.UNSEEN))
    events = [(int(s), 0, pruned if a == Action.PRUNED else edge) for s, a in decisions
              if a in (Action.PRUNED, Action.RESTORED)]
    events += [(int(s), 1, b) for s, b in observations]
    changes, current = [], unseen
    for step, _, bucket in sorted(events):
        if bucket != current:
            changes.append({"step": step, "from": current, "to": bucket})
            current = bucket
    return changes


# -- compare, budget, run list, launch forecast -------------------------------------------------------------


def final_evaluation(evaluations: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest evaluation (rows in step order) that has a Pass@1."""
    return next((r for r in reversed(evaluations) if number(r["pass_at_1"]) is not None), None)


def cost_to_reach(evaluations: Sequence[Mapping[str, Any]], target: float | None) -> dict[str, Any]:
    """What a run spent before its first evaluation (rows in step order) whose Pass@1 is at
    or above ``target``: that evaluation's step and the running totals it carries.
    ``reached`` is False, and the figures None, when none is or there is no target."""
    if target is not None:
        for row in evaluations:
            value = number(row["pass_at_1"])
            if value is not None and value >= target:
                return {"reached": True, "step": int(row["step"]),
                        "rollouts_generated_total": int(row["rollouts_generated_total"]),
                        "device_seconds_total": number(row["device_seconds_total"]) or 0.0}
    return {"reached": False, "step": None, "rollouts_generated_total": None, "device_seconds_total": None}


def reach_row(evaluations: Sequence[Mapping[str, Any]],
              baseline_evaluations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The cost for a run to reach its baseline's final held-out Pass@1 (the target), beside
    what the baseline itself spent to first reach it; the run's rollouts and device-seconds
    as shares of the baseline's where both reached it."""
    final = final_evaluation(baseline_evaluations)
    target = number(final["pass_at_1"]) if final else None
    cost, baseline = cost_to_reach(evaluations, target), cost_to_reach(baseline_evaluations, target)
    both = cost["reached"] and baseline["reached"]
    return {
        "target_pass_at_1": target, "target_step": int(final["step"]) if final else None,
        "cost": cost, "baseline_cost": baseline,
        "rollouts_share": (ratio(cost["rollouts_generated_total"], baseline["rollouts_generated_total"])
                           if both else None),
        "device_seconds_share": ratio(cost["device_seconds_total"], baseline["device_seconds_total"]) if both else None,
    }


def savings_row(totals: Mapping[str, Any]) -> dict[str, Any]:
    """A run's savings line: rollouts, their savings against each yardstick (None where it has
    no figure), device-hours and the hours saved against uniform GRPO."""
    generated, uniform = int(totals["rollouts_generated"]), int(totals["rollouts_uniform"])
    device_h = (number(totals["device_seconds"]) or 0.0) / 3600.0
    uniform_h = (number(totals["uniform_device_seconds"]) or 0.0) / 3600.0
    return {
        "steps": int(totals["steps"]),
        "rollouts_generated": generated,
        "rollouts_uniform": uniform,
        "rollout_savings": rollout_savings(generated, uniform),
        "rollout_savings_vs_dynamic_sampling": rollout_savings_vs_dynamic_sampling(
            int(totals.get("rollouts_generated_with_estimate") or 0),
            number(totals.get("rollouts_dynamic_sampling")) or 0.0),
        "backward_savings_vs_mixed": backward_savings_vs_mixed(int(totals.get("backward_tokens") or 0),
                                            int(totals.get("backward_tokens_mixed") or 0)),
        "effective_share_of_generated": effective_share_of_generated(totals.get("rollouts_effective"), generated),
        "device_hours": device_h,
        "uniform_device_hours": uniform_h,
        "device_hours_saved": uniform_h - device_h,
        # the same as a share of what uniform GRPO would use (None before it has a figure)
        "device_hours_savings": 1.0 - device_h / uniform_h if uniform_h > 0 else None,
    }


def with_percentages(row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The row with NAME_pct beside each named share, as the dashboard writes it ("33.3%", "–")."""
    return {**row, **{f"{name}_pct": percent(row.get(name)) for name in names}}


def when(value: dt.date | dt.datetime) -> str:
    """A time as Plotly's date axis reads it ("2026-11-28 05:00:00", a date as "2026-11-28"): no
    timezone suffix, which Plotly does not parse (times are the server's, UTC)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value.strftime("%Y-%m-%d")


def _moment(value: dt.date | dt.datetime) -> dt.datetime:
    """A date as its midnight (UTC), a naive time as UTC: comparable with aware times."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


WARNING_SHARE = 0.8  # the budget warns at 80% of its limit (controlplane.budgets)


def budget_series(usage: Iterable[tuple[dt.datetime, float, float]], *, period_start: dt.date | None = None,
                  period_end: dt.date | None = None, limit_device_hours: float | None = None,
                  forecast_device_hours: float | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """The budget page's period chart, a time series: the team's use, cumulative, hour by hour
    over the period (from 0 at its start, carried to now), beside what uniform GRPO would have
    used; the limit and its 80% warning line over the period; the forecast from now to the
    period's end. ``usage`` are (hour, device_seconds, uniform_device_seconds) in time order.

    ``range`` is the x axis's span, always dates: the period, or without one the last day up to
    now (and back to the first use), so an empty chart still reads as dates, never as the year
    2000. ``empty`` says what will appear while nothing was used.
    """
    now = now or dt.datetime.now(dt.UTC)
    out: dict[str, Any] = {"time": [], "used_device_hours": [], "uniform_device_hours": []}
    if period_start is not None:
        out["time"].append(when(period_start))
        out["used_device_hours"].append(0.0)
        out["uniform_device_hours"].append(0.0)
    used = uniform = 0.0
    first = last = None
    for hour, seconds, uniform_seconds in usage:
        used += (number(seconds) or 0.0) / 3600.0
        uniform += (number(uniform_seconds) or 0.0) / 3600.0
        first = first or hour
        last = hour
        out["time"].append(when(hour))
        out["used_device_hours"].append(used)
        out["uniform_device_hours"].append(uniform)
    end = _moment(period_end) if period_end is not None else None
    if out["time"] and (last is None or _moment(last) < now) and (end is None or now < end):
        out["time"].append(when(now))  # flat to now: nothing used since the last hour
        out["used_device_hours"].append(used)
        out["uniform_device_hours"].append(uniform)
    if period_start is not None and period_end is not None:
        out["range"] = [when(period_start), when(period_end)]
    else:
        start = min(_moment(first), now - dt.timedelta(days=1)) if first is not None else now - dt.timedelta(days=1)
        out["range"] = [when(start), when(now)]
    has_period = period_start is not None and period_end is not None
    out["limit"] = None if limit_device_hours is None or not has_period else {
        "time": [when(period_start), when(period_end)], "device_hours": [limit_device_hours, limit_device_hours]}
    out["warning_line"] = None if out["limit"] is None else {
        "time": out["limit"]["time"], "device_hours": [WARNING_SHARE * limit_device_hours] * 2}
    out["forecast"] = None if forecast_device_hours is None or period_end is None else {
        "time": [when(now), when(period_end)], "device_hours": [used, forecast_device_hours]}
    share = ratio(used, limit_device_hours)
    out["used_share"] = share
    out["level"] = ("none" if share is None else "exhausted" if share >= 1
                    else "warning" if share >= WARNING_SHARE else "ok")
    out["empty"] = None if first is not None else (
        "No device time used this period yet: use appears here hour by hour as the team's runs train"
        if has_period else "No device time used yet: use appears here hour by hour as the team's runs train")
    return out


def progress(steps_completed: int, steps_planned: int) -> float:
    """Share of planned steps done, in [0, 1] (0 for a run that plans none)."""
    return 0.0 if steps_planned <= 0 else min(max(steps_completed / steps_planned, 0.0), 1.0)


def launch_forecast(forecast_device_hours: float, remaining_device_hours: float | None) -> dict[str, Any]:
    """The New run page's cost line: the forecast against what the team has left.

    ``remaining_device_hours`` is None without a budget (anything fits).
    """
    fits = remaining_device_hours is None or forecast_device_hours <= remaining_device_hours
    if remaining_device_hours is None:
        message = f"forecast {forecast_device_hours:.4f} device-hours; the team has no budget limit this period"
    else:
        verb = "fits within" if fits else "exceeds"
        message = (f"forecast {forecast_device_hours:.4f} device-hours {verb} the "
                   f"{remaining_device_hours:.4f} the team has left this period")
    return {"forecast_device_hours": forecast_device_hours, "remaining_device_hours": remaining_device_hours,
            "share": ratio(forecast_device_hours, remaining_device_hours), "fits": fits, "message": message}


def device_time(seconds: float) -> str:
    """Device time in the unit that reads best: "42.0 s", "12.5 min", "3.25 h"."""
    seconds = max(float(seconds), 0.0)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def warmup_progress(progress: Any) -> dict[str, Any] | None:
    """The warm-up bar of the run page and the runs list, from a
    ``controlplane.runs.selectors.WarmupProgress`` (None: no warm-up reported): the share done,
    "supervised warm-up 1,200 / 4,900 steps" and the device time booked for it so far."""
    if progress is None:
        return None
    share = min(max(progress.step / progress.steps, 0.0), 1.0) if progress.steps else 0.0
    return {
        "active": bool(progress.active), "step": progress.step, "steps": progress.steps,
        "percent": round(share * 100, 1), "device_seconds": progress.device_seconds,
        "label": f"supervised warm-up {progress.step:,} / {progress.steps:,} steps",
        "short": f"warming up: {progress.step:,}/{progress.steps:,} warm-up steps",
        "booked": f"{device_time(progress.device_seconds)} of device time booked for the warm-up",
    }


def waiting_for(waiting: Any) -> dict[str, Any] | None:
    """Why a queued run waits, for the run page and the runs list, from a
    ``controlplane.runs.selectors.WaitingFor`` (None: the run is not queued)."""
    if waiting is None:
        return None
    return {"kind": waiting.kind, "message": waiting.message, "training": waiting.training,
            "queued_ahead": waiting.queued_ahead}
