"""Compute accounting (SELECTORS.md section 7), computed here once for every engine.

Names are the metric names used everywhere downstream: database columns, API fields and
chart legends. Every rate names its denominator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PHASES = ("select", "generate", "reward", "update")


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

    @property
    def rollout_savings(self) -> float:
        """1 - generated / uniform (negative when a method generated more than uniform GRPO)."""
        return 1.0 - self.rollouts_generated / self.rollouts_uniform if self.rollouts_uniform else 0.0

    @property
    def effective_share_of_generated(self) -> float:
        return self.rollouts_effective / self.rollouts_generated if self.rollouts_generated else 0.0

    @property
    def zero_variance_share_of_groups(self) -> float:
        zv = self.groups_all_correct + self.groups_all_wrong
        return zv / self.groups_generated if self.groups_generated else 0.0

    @property
    def flops_estimate(self) -> float:
        """2P per generated or forward-only token, 6P per trained token."""
        p = self.parameters
        return 2.0 * p * (self.tokens_generated + self.forward_tokens_extra) + 6.0 * p * self.backward_tokens

    @property
    def flops_uniform_estimate(self) -> float:
        """Uniform GRPO's FLOPs for this step at this step's mean response length."""
        if not self.rollouts_generated:
            return 0.0
        tokens = self.rollouts_uniform * self.tokens_generated / self.rollouts_generated
        return 8.0 * self.parameters * tokens

    @property
    def device_seconds(self) -> float:
        """Measured seconds of all phases: what budgets are charged, never an estimate."""
        return float(sum(self.seconds.values()))

    def to_record(self) -> dict[str, object]:
        record = asdict(self)
        record.update(
            rollout_savings=self.rollout_savings,
            effective_share_of_generated=self.effective_share_of_generated,
            zero_variance_share_of_groups=self.zero_variance_share_of_groups,
            flops_estimate=self.flops_estimate,
            flops_uniform_estimate=self.flops_uniform_estimate,
            device_seconds=self.device_seconds,
        )
        return record


@dataclass
class RunAccounting:
    """Cumulative accounting over a run. A replayed step replaces its earlier record."""

    steps: dict[int, StepAccounting] = field(default_factory=dict)

    def add(self, step: StepAccounting) -> None:
        self.steps[step.step] = step

    def total(self, name: str) -> float:
        return float(sum(getattr(s, name) for s in self.steps.values()))

    @property
    def rollout_savings(self) -> float:
        uniform = self.total("rollouts_uniform")
        return 1.0 - self.total("rollouts_generated") / uniform if uniform else 0.0

    @property
    def effective_share_of_generated(self) -> float:
        generated = self.total("rollouts_generated")
        return self.total("rollouts_effective") / generated if generated else 0.0
