"""RL-ZVP (docs/algorithms.md §5): zero-variance groups get an entropy-shaped advantage
instead of none; mixed groups keep GRPO's."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from workers.selection import rlzvp
from workers.selection.decisions import Action, Layer
from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.outcomes import TrainingBatch
from workers.selection.panels import Panel, Series
from workers.selection.params import MethodParams, described
from workers.selection.selector import Advantages, Conflict, Floats, Selector, StepView


@dataclass(frozen=True)
class RlzvpParams(MethodParams):
    method: ClassVar[str] = "rlzvp"
    alpha: float = described("advantage scale for zero-variance groups (paper best: 0.1)", 0.1, bounds=(0, 10))
    norm_by_std: bool = described("GRPO part: divide by the group std", True)
    eps: float = described("GRPO part: added to the group std", 1e-6, bounds=(1e-12, 1))

    def check(self) -> None:
        self._require(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        self._require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


class Rlzvp(Selector[RlzvpParams]):
    name = "rlzvp"
    label = "RL-ZVP"
    help = "Gives zero-variance groups an entropy-shaped advantage instead of none."
    layers = frozenset({Layer.ADVANTAGE})
    Params = RlzvpParams
    reasons = MappingProxyType({
        "rlzvp.all_correct": (
            Action.SHAPED,
            ("shaped by RL-ZVP: all {group_size:.0f} rollouts correct, advantage alpha x token entropy "
             "(mean {mean_advantage:.4f})"),
        ),
        "rlzvp.all_wrong": (
            Action.SHAPED,
            ("shaped by RL-ZVP: all {group_size:.0f} rollouts wrong, advantage -alpha x (max entropy - token "
             "entropy) (mean {mean_advantage:.4f})"),
        ),
    })
    uses_zero_variance = True
    conflicts = (
        Conflict("grpo", "grpo and rlzvp both set the advantage; RL-ZVP already uses GRPO for "
                         "mixed groups: drop grpo"),
        Conflict("dapo", "dapo drops the zero-variance groups that rlzvp draws its signal from: "
                         "choose one of them"),
    )
    panels = (Panel("shaped", "Share of trained rollouts shaped", (
        Series("shaped share of trained rollouts", metric="rlzvp/shaped_rollouts", per="rollouts_trained"),),
        unit="share"),)

    def token_advantages(self, step: StepView, batch: TrainingBatch, token_entropy: Floats | None,
                         response_mask: npt.NDArray[Any]) -> Advantages:
        p = self.params
        if token_entropy is None:
            raise ValueError("RL-ZVP needs the per-token entropies of the loss forward pass")
        rewards, group_index = batch.rewards, batch.group_index
        advantages = rlzvp.token_advantages(rewards, group_index, token_entropy, response_mask,
                                            p.alpha, p.norm_by_std, p.eps)
        shaped = rlzvp.shaped_rollouts(rewards, group_index)
        mask = np.asarray(response_mask, dtype=bool)
        decisions = []
        for g in np.unique(group_index[shaped]):
            rows = group_index == g
            outcome = batch.groups[int(g)]
            all_correct = bool(rewards[rows][0] >= SUCCESS_THRESHOLD)
            decisions.append(self.decision(
                step.step, outcome.key, Layer.ADVANTAGE, "rlzvp.all_correct" if all_correct else "rlzvp.all_wrong", {
                    "group_size": int(rows.sum()),
                    "mean_advantage": float(advantages[rows][mask[rows]].mean()) if mask[rows].any() else 0.0,
                }))
        return Advantages(values=advantages, decisions=tuple(decisions),
                          added={"rlzvp/shaped_rollouts": float(shaped.sum())})
