"""Compute accounting (docs/algorithms.md §7), computed here once for every engine.

Names are the metric names used everywhere downstream: database columns, API fields and
chart legends. Every rate names its denominator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

PHASES = ("select", "generate", "reward", "update")


# -- the savings formulas, once ---------------------------------------------------------------
# Each saving is 1 - what the run spent / its yardstick: the share of the yardstick never
# spent. One empty-case convention for all: None when the yardstick is missing or zero (no
# step yet, no estimate of the mixed rate yet, no mixed group yet), never 0.0: a run that saved
# nothing and a run with nothing to compare against read differently. A step's figures
# (StepAccounting), the run's cumulative ones (RunAccounting, the control plane's run totals),
# the dashboard and the benchmark all call these.
def saving(spent: float | None, yardstick: float | None) -> float | None:
    """1 - spent / yardstick; None when the yardstick is missing or zero (or not a number)."""
    if not yardstick or math.isnan(yardstick):
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


@dataclass(frozen=True)
class StepAccounting:
    step: int
    rollouts_generated: int  # every sampled response: probes, extras, dropped surplus, replays
    tokens_generated: int  # their response tokens
    rollouts_effective: int  # rollouts whose advantage is non-zero somewhere
    rollouts_trained: int  # rollouts whose tokens entered the update
    rollouts_uniform: int  # counterfactual of uniform GRPO for this optimizer step: B x N
    groups_generated: int
    groups_all_correct: int
    groups_all_wrong: int
    groups_trained: int
    forward_tokens_extra: int  # prompt tokens through the policy for selection (HIVE stage 2)
    backward_tokens: int  # response tokens in the update
    parameters: int
    seconds: dict[str, float] = field(default_factory=dict)
    prompt_tokens_generated: int = 0  # prompt tokens prefilled for the generated rollouts
    backward_prompt_tokens: int = 0  # prompt tokens through the update's forward and backward passes
    # The yardsticks of docs/savings.md. Dynamic sampling (DAPO) rolls out uniform draws
    # until it holds the step's informative (mixed) groups; uniform draws estimate its rate.
    groups_uniform: int = 0  # groups of uniformly drawn prompts (all groups when nothing filters)
    groups_uniform_mixed: int = 0  # of those, groups with mixed outcomes
    mixed_rate_uniform: float = math.nan  # windowed estimate of the mixed share of uniform draws
    groups_mixed_collected: int = 0  # mixed groups collected for the update
    # groups_mixed_collected x N / mixed_rate_uniform, less the small-window overshoot
    # (Pipeline.rollouts_dynamic_sampling)
    rollouts_dynamic_sampling: float = math.nan
    backward_tokens_mixed: int = 0  # response tokens of those groups: GRPO without zero-advantage rows

    @property
    def rollout_savings(self) -> float | None:
        """1 - generated / uniform (negative when a method generated more than uniform GRPO)."""
        return rollout_savings(self.rollouts_generated, self.rollouts_uniform)

    @property
    def effective_share_of_generated(self) -> float | None:
        return effective_share_of_generated(self.rollouts_effective, self.rollouts_generated)

    @property
    def zero_variance_share_of_groups(self) -> float | None:
        zv = self.groups_all_correct + self.groups_all_wrong
        return zv / self.groups_generated if self.groups_generated else None

    @property
    def rollout_savings_vs_dynamic_sampling(self) -> float | None:
        """1 - generated / rollouts_dynamic_sampling: the filters' claim (None without an estimate)."""
        return rollout_savings_vs_dynamic_sampling(self.rollouts_generated, self.rollouts_dynamic_sampling)

    @property
    def backward_savings_vs_mixed(self) -> float | None:
        """1 - backward_tokens / backward_tokens_mixed: LZE's claim against a GRPO that already
        leaves zero-advantage groups out of the update (None when no group was mixed)."""
        return backward_savings_vs_mixed(self.backward_tokens, self.backward_tokens_mixed)

    @property
    def flops_estimate(self) -> float:
        """2P per generated or forward-only token, 6P per trained token, prompt tokens included."""
        p = self.parameters
        forward = self.tokens_generated + self.prompt_tokens_generated + self.forward_tokens_extra
        return 2.0 * p * forward + 6.0 * p * (self.backward_tokens + self.backward_prompt_tokens)

    @property
    def flops_uniform_estimate(self) -> float:
        """Uniform GRPO's FLOPs for this step: B x N rollouts generated and trained, at this
        step's mean response and prompt lengths."""
        if not self.rollouts_generated:
            return 0.0
        per_rollout = (self.tokens_generated + self.prompt_tokens_generated) / self.rollouts_generated
        return 8.0 * self.parameters * self.rollouts_uniform * per_rollout

    @property
    def device_seconds(self) -> float:
        """Measured seconds of all phases: what budgets are charged, never an estimate."""
        return float(sum(self.seconds.values()))

    def to_record(self) -> dict[str, object]:
        record = asdict(self)
        record.update(
            rollout_savings=self.rollout_savings,
            rollout_savings_vs_dynamic_sampling=self.rollout_savings_vs_dynamic_sampling,
            backward_savings_vs_mixed=self.backward_savings_vs_mixed,
            effective_share_of_generated=self.effective_share_of_generated,
            zero_variance_share_of_groups=self.zero_variance_share_of_groups,
            flops_estimate=self.flops_estimate,
            flops_uniform_estimate=self.flops_uniform_estimate,
            device_seconds=self.device_seconds,
        )
        return record


@dataclass(frozen=True)
class RunTotals:
    """Cumulative accounting of a run over its steps (docs/algorithms.md §7): what the control
    plane's run totals read from the database (controlplane.runs.selectors.run_totals) and
    the dashboard's running sums start from. The savings and shares come from the formulas
    above: None where there is nothing to divide by."""

    steps: int = 0
    rollouts_generated: int = 0
    rollouts_uniform: int = 0
    rollouts_effective: int = 0
    rollouts_trained: int = 0
    device_seconds: float = 0.0
    uniform_device_seconds: float = 0.0
    # The dynamic-sampling yardstick, over the steps that have its estimate only: a step
    # without one (no mixed group seen yet) would count its rollouts against nothing.
    rollouts_generated_with_estimate: int = 0
    rollouts_dynamic_sampling: float = 0.0
    backward_tokens: int = 0
    backward_tokens_mixed: int = 0

    @property
    def rollout_savings(self) -> float | None:
        """1 - generated / uniform: the share of uniform GRPO's rollouts never generated;
        None before the first step."""
        return rollout_savings(self.rollouts_generated, self.rollouts_uniform)

    @property
    def rollout_savings_vs_dynamic_sampling(self) -> float | None:
        """1 - generated / what dynamic sampling would generate, over the steps with an
        estimate; None when no step has one."""
        return rollout_savings_vs_dynamic_sampling(self.rollouts_generated_with_estimate,
                                                           self.rollouts_dynamic_sampling)

    @property
    def backward_savings_vs_mixed(self) -> float | None:
        """1 - backward tokens / backward tokens of the mixed groups; None when none was mixed."""
        return backward_savings_vs_mixed(self.backward_tokens, self.backward_tokens_mixed)

    @property
    def effective_share_of_generated(self) -> float | None:
        return effective_share_of_generated(self.rollouts_effective, self.rollouts_generated)

    @property
    def device_hours(self) -> float:
        return self.device_seconds / 3600.0

    @property
    def uniform_device_hours(self) -> float:
        return self.uniform_device_seconds / 3600.0

    @property
    def device_hours_saved(self) -> float:
        return (self.uniform_device_seconds - self.device_seconds) / 3600.0

    @classmethod
    def of(cls, steps: Iterable[StepAccounting]) -> RunTotals:
        """The totals of these steps (each step once: a replayed step replaces its record
        before it is summed). Device-seconds uniform GRPO would use are the control plane's
        estimate; 0 here."""
        steps = list(steps)
        with_estimate = [s for s in steps if s.rollouts_dynamic_sampling > 0]
        return cls(
            steps=len(steps),
            rollouts_generated=sum(s.rollouts_generated for s in steps),
            rollouts_uniform=sum(s.rollouts_uniform for s in steps),
            rollouts_effective=sum(s.rollouts_effective for s in steps),
            rollouts_trained=sum(s.rollouts_trained for s in steps),
            device_seconds=sum(s.device_seconds for s in steps),
            rollouts_generated_with_estimate=sum(s.rollouts_generated for s in with_estimate),
            rollouts_dynamic_sampling=sum(s.rollouts_dynamic_sampling for s in with_estimate),
            backward_tokens=sum(s.backward_tokens for s in steps),
            backward_tokens_mixed=sum(s.backward_tokens_mixed for s in steps),
        )


# What a saving is measured against (docs/savings.md), in words: the API's run detail and the
# run page's tiles read them here. Which apply to a run: each method's, by the layers it acts
# at (Selector.yardsticks), gathered by Pipeline.yardsticks.
YARDSTICKS: dict[str, str] = {
    "uniform": "uniform GRPO: B x N rollouts per step, every group in the update",
    "dynamic_sampling": ("dynamic sampling (DAPO): uniform draws rolled out until the step holds the same "
                         "informative (mixed) groups, at the mixed rate measured on uniform draws"),
    "backward_mixed": "GRPO that leaves zero-advantage (all-correct or all-wrong) groups out of the update",
    "uniform_budget": ("none: the method spends uniform GRPO's rollout budget and is judged by what it buys "
                       "(effective rollouts, Pass@k) at that budget"),
}
