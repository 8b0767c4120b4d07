"""The savings formulas, once: each saving is 1 - what the run spent / its yardstick, the
share of the yardstick never spent (docs/algorithms.md §7; the yardsticks are
``workers.selection.accounting.YARDSTICKS``).

One empty-case convention for all: None when the yardstick is missing or zero (no step yet, no
estimate of the mixed rate yet, no mixed group yet), never 0.0 — a run that saved nothing and
a run with nothing to compare against read differently. Pure functions over the cumulative
figures; the run totals (``runs.selectors.RunTotals``), the API, and the dashboard's charts,
tiles, runs list and compare table all call these.
"""

from __future__ import annotations


def saving(spent: float | None, yardstick: float | None) -> float | None:
    """1 - spent / yardstick; None when the yardstick is missing or zero."""
    if not yardstick:
        return None
    return 1.0 - float(spent or 0) / float(yardstick)


def rollout_savings(rollouts_generated: float | None, rollouts_uniform: float | None) -> float | None:
    """1 - rollouts generated / rollouts uniform GRPO would generate (B x N a step)."""
    return saving(rollouts_generated, rollouts_uniform)


def rollout_savings_vs_dynamic_sampling(rollouts_generated_with_estimate: float | None,
                                        rollouts_dynamic_sampling: float | None) -> float | None:
    """1 - rollouts generated / rollouts dynamic sampling would generate, both over the steps
    that have an estimate of the mixed rate (a step without one counts for neither side)."""
    return saving(rollouts_generated_with_estimate, rollouts_dynamic_sampling)


def backward_savings_vs_mixed(backward_tokens: float | None, backward_tokens_mixed: float | None) -> float | None:
    """1 - response tokens in the update / response tokens of the mixed groups collected."""
    return saving(backward_tokens, backward_tokens_mixed)


def effective_share_of_generated(rollouts_effective: float | None,
                                 rollouts_generated: float | None) -> float | None:
    """Rollouts that carried a learning signal / rollouts generated; None before any rollout."""
    if not rollouts_generated:
        return None
    return float(rollouts_effective or 0) / float(rollouts_generated)
