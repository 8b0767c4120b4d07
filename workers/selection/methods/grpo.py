"""GRPO (docs/algorithms.md §0): group-relative advantages, the baseline and the default
advantage when a run names no advantage method."""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from workers.selection import grpo
from workers.selection.decisions import Layer
from workers.selection.outcomes import TrainingBatch
from workers.selection.params import GrpoParams
from workers.selection.selector import Advantages, Floats, Selector, StepView


class Grpo(Selector[GrpoParams]):
    name = "grpo"
    label = "GRPO"
    help = "Group-relative advantages; the baseline every other method is measured against."
    layers = frozenset({Layer.ADVANTAGE})
    Params = GrpoParams

    def yardsticks(self) -> frozenset[str]:
        return frozenset()  # the baseline itself

    def token_advantages(self, step: StepView, batch: TrainingBatch, token_entropy: Floats | None,
                         response_mask: npt.NDArray[Any]) -> Advantages:
        p = self.params
        advantages = grpo.group_advantages(batch.rewards, batch.group_index, p.norm_by_std, p.eps)
        return Advantages(values=grpo.broadcast_to_tokens(advantages, response_mask))
